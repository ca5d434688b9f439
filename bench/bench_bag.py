#!/usr/bin/env python3
"""Frames per second of ``stamp-ros bag`` on this machine: prints ONE JSON object.

For each model shape (``tiny``, the test shape; ``mid``, the CPU-sized shape of
``stamp-ros bench``; or a shape JSON such as ../shared/model-shapes/stamp-2b.json) it builds a
random checkpoint with the bench's scripted one-mask answer (~20 generated tokens), writes an
MCAP bag of ``--frames`` 640x480 rgb8 frames of the horses photo panning at 30 Hz, and runs the
real command in a subprocess (``stamp-ros bag ... --video --json``) as a user would: continuous
mode with the node's default answer reuse (``--reanswer-every 30``: one decoded answer, then
teacher-forced frames) and with ``--reanswer-every 1`` (an answer decoded on every frame),
``--repeats`` times each, reporting the fastest run (the cores are shared; all runs are kept).

Per run: the command's own ``fps`` (results / replay wall time, model loading excluded),
``command_wall_s`` (the whole process, loading included), per-frame milliseconds and the
child's peak RSS (sampled); ``memory`` replays a short and a 4x longer bag with the tiny model,
whose equal peaks show the replay streams instead of loading the bag.

    .venv/bin/python bench/bench_bag.py --out bench/results/cpu-bag.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stamp_ros.bench.inputs import ANSWERS, QUERY, load_shape, parse_size  # noqa: E402
from stamp_ros.bench.machine import cpu_model, versions  # noqa: E402

PHOTO = ROOT.parent / "shared" / "data" / "horses.jpg"
TOPIC = "/camera/color/image_raw"
PERIOD_NS = 1_000_000_000 // 30
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "vision_depth", "vision_embed_dim",
              "vocab_size")
"""The shape fields reported, as ``stamp-ros bench`` reports them."""


def frames(size: str, count: int) -> list[np.ndarray]:
    """``count`` frames of the photo (a camera panning across it), ``size`` WxH."""
    import cv2

    w, h = parse_size(size)
    photo = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    scale = h / photo.shape[0]
    wide = cv2.resize(photo, (max(w, round(photo.shape[1] * scale)), h),
                      interpolation=cv2.INTER_AREA)
    span = wide.shape[1] - w
    return [np.ascontiguousarray(wide[:, (i * 7) % (span + 1):(i * 7) % (span + 1) + w])
            for i in range(count)]


def write_bag(path: Path, images: list[np.ndarray]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from stamp_ros.bag.interfaces import typestore

    ts = typestore()
    types = ts.types
    t0 = 1_700_000_000 * 10**9
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ts)
        for i, rgb in enumerate(images):
            t = t0 + i * PERIOD_NS
            header = types["std_msgs/msg/Header"](
                types["builtin_interfaces/msg/Time"](t // 10**9, t % 10**9), "camera")
            h, w = rgb.shape[:2]
            msg = types["sensor_msgs/msg/Image"](header, h, w, "rgb8", 0, w * 3, rgb.reshape(-1))
            writer.write(conn, t, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def run_bag(bag: Path, ckpt: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """The command in a subprocess; its JSON summary plus wall time and sampled peak RSS."""
    import psutil

    cmd = [sys.executable, "-m", "stamp_ros.cli", "bag", str(bag), "--image-topic", TOPIC,
           "--query", QUERY, "--out", str(out / "bag"), "--video", str(out / "overlay.mp4"),
           "--json", "--quiet", "--model", str(ckpt), "--device", "cpu", *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    child = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    load = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"bag command failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    summary = json.loads(stdout)
    return {
        "fps": summary["fps"],
        "ms_per_frame": round(1000.0 * summary["wall_s"] / max(1, summary["results"]), 1),
        "engine_ms_per_frame": round(1000.0 * summary["engine_s"] / max(1, summary["results"]),
                                     1),
        "results": summary["results"],
        "errors": summary["errors"],
        "video_frames": summary["video_frames"],
        "replay_wall_s": summary["wall_s"],
        "command_wall_s": round(wall, 2),
        "peak_rss_mb": round(peak / 2**20, 1),
        "load_average_1min_after": round(load, 2),
        "answer": summary["last_answer"],
    }


def main() -> int:
    import torch

    from stamp_ros.engine.defaults import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="tiny,mid", help="comma list: tiny, mid, shape JSONs")
    p.add_argument("--frames", default="tiny=90,mid=10",
                   help="frames per shape (SHAPE=N,...; others take the last value)")
    p.add_argument("--size", default="640x480", help="frame size WxH")
    p.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    p.add_argument("--reanswer", default="30,1", help="--reanswer-every values to run")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per configuration; the fastest is reported (shared cores), all "
                   "fps values are kept in fps_runs")
    p.add_argument("--memory-frames", default="60,240",
                   help="tiny-model runs whose peak RSS shows memory is bounded ('' = skip)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--work-dir", help="where checkpoints and bags go (default: temp)")
    args = p.parse_args()

    counts = dict(item.split("=") for item in args.frames.split(","))
    pixels = ["--min-pixels", str(args.min_pixels), "--max-pixels", str(args.max_pixels)]
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "command": "stamp-ros bag (continuous mode, --video, MCAP in and out)",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": versions(),
        "image_size": list(parse_size(args.size)),
        "encoding": "rgb8",
        "bag_rate_hz": 30,
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
        "query": QUERY,
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "cases": {},
    }
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp_dir:
        tmp = Path(tmp_dir)
        for spec in [s for s in args.shapes.split(",") if s]:
            name = Path(spec).stem if spec.endswith(".json") else spec
            shape = load_shape(spec)
            t0 = time.perf_counter()
            ckpt = make_test_checkpoint(tmp / f"ckpt-{name}", answer=ANSWERS[1], shape=shape)
            build_s = time.perf_counter() - t0
            n = int(counts.get(name, list(counts.values())[-1]))
            bag = tmp / f"in-{name}"
            write_bag(bag, frames(args.size, n))
            case: dict[str, Any] = {
                "model_shape": {key: getattr(shape, key) for key in SHAPE_KEYS},
                "frames": n,
                "checkpoint_build_s": round(build_s, 1),
                "runs": {},
            }
            for every in [int(v) for v in args.reanswer.split(",") if v]:
                out = tmp / f"out-{name}-{every}"
                print(f"[bench_bag] {name}: {n} frames, --reanswer-every {every}",
                      file=sys.stderr, flush=True)
                runs = []
                for k in range(max(1, args.repeats)):
                    runs.append(run_bag(bag, ckpt, out / str(k),
                                        [*pixels, "--reanswer-every", str(every)]))
                best = max(runs, key=lambda r: r["fps"])
                best["fps_runs"] = [r["fps"] for r in runs]
                case["runs"][f"reanswer_every_{every}"] = best
            report["cases"][name] = case
        if args.memory_frames:
            ckpt = tmp / "ckpt-tiny"
            if not ckpt.exists():
                ckpt = make_test_checkpoint(ckpt, answer=ANSWERS[1], shape=load_shape("tiny"))
            memory = {}
            for n in [int(v) for v in args.memory_frames.split(",") if v]:
                bag = tmp / f"mem-{n}"
                write_bag(bag, frames(args.size, n))
                print(f"[bench_bag] memory: tiny, {n} frames", file=sys.stderr, flush=True)
                run = run_bag(bag, ckpt, tmp / f"out-mem-{n}", pixels)
                memory[f"{n}_frames"] = {
                    "peak_rss_mb": run["peak_rss_mb"],
                    "bag_mb": round(sum(f.stat().st_size for f in bag.iterdir()) / 2**20, 1),
                    "fps": run["fps"],
                }
            report["memory"] = memory
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    from stamp_ros.bench.command import write_report

    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
