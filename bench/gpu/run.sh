#!/usr/bin/env bash
# STAMP-2B (random weights) GPU benchmark: ONE prepared script for a machine with one NVIDIA
# GPU and no internet. Writes the bench JSON to $OUT (set by the device tool; ./out/gpu
# otherwise) and prints it. Budget: about 8 minutes on an H100 (checkpoint build ~2-3 min,
# bench ~4-5 min, every step under a timeout).
#
#   bash bench/gpu/run.sh                 # on the GPU machine, from the repo root or anywhere
#   DEVICE=cpu bash bench/gpu/run.sh      # CPU smoke test of this script (tiny shape, --quick)
#
# Packages. The engine supports transformers >=5.13,<6 (stamp_ros/engine/compat.py, the same
# range as setup.py and requirements/python.txt); the device image ships torch (CUDA) and a
# transformers in that range. Nothing can be fetched there, so another version is carried as a
# wheel: on the workstation,
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.24.0
# keep .whl/ out of git (.git/info/exclude) and name it in the device tool's `carry`. Any
# *.whl found in $WHEELS, ./.whl or bench/gpu/wheelhouse is installed into a private target
# directory (no index, no deps) and put first on PYTHONPATH. A full venv can be used instead:
# PYTHON=/path/to/venv/bin/python (a CPU-only venv from the workstation will not see the GPU).
#
# Environment knobs: DEVICE (cuda), SHAPE (path; default stamp-2b.json found in shared/),
# SOAK (1000), SOAK_MAX_S (150), DECODE_MODE (cuda_graph), REPEATS (5), FRAMES (10),
# BENCH_TIMEOUT (420 s), EAGER_BASELINE (1: also time the eager decode loop, 1 seg, no soak).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/out/gpu}"
mkdir -p "$OUT"
DEVICE="${DEVICE:-cuda}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
log() { echo "[run.sh] $*" >&2; }

# ---------------------------------------------------------------- packages
SITE=/tmp/stamp-site
WHEELDIR="${WHEELS:-}"
if [ -z "$WHEELDIR" ]; then
  for d in .whl bench/gpu/wheelhouse; do
    if compgen -G "$d/*.whl" >/dev/null; then WHEELDIR="$d"; break; fi
  done
fi
if [ -n "$WHEELDIR" ]; then
  log "installing wheels from $WHEELDIR"
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$WHEELDIR"/*.whl || { log "wheel install failed"; exit 2; }
  export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - <<'PY' || { log "environment check failed (see above)"; exit 2; }
import sys
import torch, transformers
from packaging.specifiers import SpecifierSet
from stamp_ros.engine.compat import TRANSFORMERS_SUPPORTED
print(f"python {sys.version.split()[0]} torch {torch.__version__} cuda {torch.version.cuda} "
      f"transformers {transformers.__version__} gpu={torch.cuda.is_available()}", file=sys.stderr)
if transformers.__version__ not in SpecifierSet(TRANSFORMERS_SUPPORTED):
    sys.exit(f"transformers {transformers.__version__} is not in the supported range "
             f"{TRANSFORMERS_SUPPORTED}: carry a wheel (see run.sh)")
PY

# ---------------------------------------------------------------- model shape
if [ "$DEVICE" = "cpu" ]; then
  SHAPE="${SHAPE:-tiny}"
else
  if [ -z "${SHAPE:-}" ]; then
    for c in shared/model-shapes/stamp-2b.json ../shared/model-shapes/stamp-2b.json \
             /work/shared/model-shapes/stamp-2b.json; do
      if [ -f "$c" ]; then SHAPE="$c"; break; fi
    done
  fi
  if [ -z "${SHAPE:-}" ] || [ ! -f "$SHAPE" ]; then
    log "stamp-2b.json not found (looked in shared/ and ../shared/); set SHAPE=path"
    exit 2
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader >&2
fi
log "shape: $SHAPE, device: $DEVICE"

# ---------------------------------------------------------------- bench
WORK=/tmp/stamp-bench
mkdir -p "$WORK"
if [ "$DEVICE" = "cpu" ]; then
  ARGS=(--quick --shape "$SHAPE" --device cpu --size "${SIZE:-64x48}" --segs 1,3
        --soak "${SOAK:-2}")
  RESULT="$OUT/cpu-smoke.json"
else
  ARGS=(--shape "$SHAPE" --device "$DEVICE" --size 640x480 --segs 1,3
        --soak "${SOAK:-1000}" --soak-max-s "${SOAK_MAX_S:-150}"
        --repeats "${REPEATS:-5}" --frames "${FRAMES:-10}"
        --decode-mode "${DECODE_MODE:-cuda_graph}" --checkpoint-dtype bf16 --no-calibrate)
  RESULT="$OUT/gpu-stamp-2b.json"
fi
log "stamp-ros bench ${ARGS[*]}"
timeout "${BENCH_TIMEOUT:-420}" "$PY" -m stamp_ros.cli bench "${ARGS[@]}" --work-dir "$WORK" \
  --out "$RESULT" > /dev/null 2> "$OUT/bench.log"
rc=$?
tail -n 20 "$OUT/bench.log" >&2
if [ $rc -ne 0 ] || [ ! -s "$RESULT" ]; then
  log "bench failed or timed out (rc=$rc); log in $OUT/bench.log"
  exit 1
fi

# The eager decode loop as a baseline for the CUDA-graph one (same machine, same call).
if [ "$DEVICE" != "cpu" ] && [ "${EAGER_BASELINE:-1}" = "1" ]; then
  timeout "${EAGER_TIMEOUT:-150}" "$PY" -m stamp_ros.cli bench --shape "$SHAPE" \
    --device "$DEVICE" --size 640x480 --segs 1 --soak 0 --repeats 3 --frames 3 \
    --decode-mode eager --checkpoint-dtype bf16 --no-calibrate --work-dir "$WORK" \
    --out "$OUT/gpu-stamp-2b-eager.json" > /dev/null 2>> "$OUT/bench.log" \
    || log "eager baseline failed or timed out (main result is still valid)"
fi
cat "$RESULT"
