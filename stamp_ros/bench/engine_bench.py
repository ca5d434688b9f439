"""The engine benchmark: build random checkpoints, time every case, assemble the report.

What one request costs is measured the way the node pays it: ``convert`` (sensor_msgs/Image ->
numpy), the engine stages (preprocess, vision, prefill, decode, mask, postprocess = upsampling
and mask statistics) and ``publish`` (building the Segmentation message with full-resolution
masks plus the union mask image); see :mod:`stamp_ros.bench.requests` for how. The report's keys
are documented in bench/README.md and checked by test/test_bench.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
from pathlib import Path
from time import perf_counter

from stamp_ros.bench.goals import goals
from stamp_ros.bench.inputs import ANSWERS, bench_frames, load_shape
from stamp_ros.bench.machine import cpu_model, device_name, versions
from stamp_ros.bench.node_messages import NodeMessages
from stamp_ros.bench.requests import bench_case
from stamp_ros.bench.soak import soak
from stamp_ros.engine.defaults import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

DEFAULT_SIZE = "640x480"


def run_engine_bench(args: argparse.Namespace) -> dict:
    """Every ``--segs`` case on its own random checkpoint, a soak on the first; the report."""
    import torch

    from stamp_ros.engine.segmenter import StampSegmenter
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    torch.set_grad_enabled(False)
    shape_spec = args.shape or ("tiny" if args.quick else "mid")
    repeats = args.repeats or (1 if args.quick else 3)
    frames = args.frames or (2 if args.quick else 3)
    size = args.size or DEFAULT_SIZE
    shape = load_shape(shape_spec)
    segs = [int(s) for s in args.segs.split(",") if s]
    unknown = [n for n in segs if n not in ANSWERS]
    if unknown:
        raise SystemExit(f"--segs supports {sorted(ANSWERS)}, got {unknown}")
    ros = NodeMessages()
    msgs = [ros.message(f) for f in bench_frames(args.image, size, 4)]
    image_hw = bench_frames(args.image, size, 1)[0].shape[:2]
    options = {
        "min_pixels": args.min_pixels or DEFAULT_MIN_PIXELS,
        "max_pixels": args.max_pixels or DEFAULT_MAX_PIXELS,
        "decode_mode": args.decode_mode,
    }
    cases: dict[str, dict] = {}
    soak_report = None
    device = None
    t_start = perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for k, n in enumerate(segs):
            t0 = perf_counter()
            ckpt = make_test_checkpoint(
                Path(tmp) / f"seg{n}",
                answer=ANSWERS[n],
                shape=shape,
                calibrate=not args.no_calibrate,
                save_dtype=torch.bfloat16 if args.checkpoint_dtype == "bf16" else torch.float32,
            )
            build_s = perf_counter() - t0
            seg = StampSegmenter.from_pretrained(
                str(ckpt), device=args.device, dtype=args.dtype, attn_implementation=args.attn,
                **options,
            )
            device = seg.device
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = perf_counter()
            seg.warmup()
            warm_ms = (perf_counter() - t0) * 1000.0
            case = bench_case(seg, ros, msgs, repeats, frames)
            case["checkpoint_build_s"] = round(build_s, 1)
            case["warmup_ms"] = round(warm_ms, 1)
            if device.type == "cuda":
                case["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if k == 0:  # memory growth once, on the first (one-seg) model
                n_soak = args.soak
                if n_soak is None:
                    n_soak = 2 if args.quick else (1000 if device.type == "cuda" else 5)
                if n_soak > 0:
                    soak_report = soak(seg, ros, msgs, n_soak, args.soak_max_s)
            cases[f"{n}_seg"] = case
            del seg
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report = {
        "shape": shape_spec,
        "model_shape": {
            "hidden_size": shape.hidden_size,
            "num_hidden_layers": shape.num_hidden_layers,
            "vision_depth": shape.vision_depth,
            "vision_embed_dim": shape.vision_embed_dim,
            "vocab_size": shape.vocab_size,
        },
        "device": str(device),
        "device_type": device.type,
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "attn": args.attn,
        "decode_mode": args.decode_mode,
        "versions": versions(),
        "image_size": [int(image_hw[1]), int(image_hw[0])],
        "min_pixels": options["min_pixels"],
        "max_pixels": options["max_pixels"],
        "repeats": repeats,
        "quick": bool(args.quick),
        "ros_messages": ros.available,
        "ros_messages_missing_reason": ros.reason or None,
        "cases": cases,
        "soak": soak_report,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(perf_counter() - t_start, 1),
    }
    report["goals"] = goals(report)
    return report
