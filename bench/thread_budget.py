#!/usr/bin/env python3
"""What a different torch thread budget changes in a result: logits' last bits, and how often a
grid cell or a mask pixel flips.

The node's inference process runs ``inference_threads`` (default: all cores but one) while
``stamp-ros segment``, ``bag`` and ``eval`` run torch's default (all cores). On some CPUs the
thread count changes the order in which a reduction's partial sums meet, and with it the last
bit of a float. This measures how much that matters, on the two checkpoints the tests and
benchmarks use (the ``tiny`` test shape and the CPU-sized ``mid`` shape, random weights with a
calibrated mask head, so many grid logits sit near the 0 threshold: a worst case for flips).

Per shape, every frame and query is answered at ``--reference`` threads and again at each
budget of ``--budgets``; the JSON counts, against the reference: answers whose text or token
ids differ, logits that differ and the largest difference, grid cells and mask pixels that
flip. Prints ONE JSON object (``--out`` writes it too).

    PYTHONPATH=. .venv/bin/python bench/thread_budget.py \
        --out bench/results/cpu-thread-budget-amd-epyc.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHOTO = ROOT.parent / "shared" / "data" / "horses.jpg"
QUERIES = ("Please segment the white horse in the image.",
           "Where is the brown horse? Please respond with segmentation mask.")


def frames(count: int) -> list[np.ndarray]:
    """The shared photo at a few sizes, then smooth synthetic scenes: ``count`` in all."""
    import cv2

    from stamp_ros.engine.options import read_image
    from stamp_ros.testing.images import sample_image

    out = []
    if PHOTO.exists():
        photo = read_image(str(PHOTO))
        for width in (640, 320, 480, 200):
            h = round(photo.shape[0] * width / photo.shape[1])
            out.append(cv2.resize(photo, (width, h), interpolation=cv2.INTER_AREA))
    seed = 0
    while len(out) < count:
        out.append(sample_image(300 + seed, 240 + 8 * (seed % 5), 320 + 8 * (seed % 7)))
        seed += 1
    return out[:count]


def answer_all(segmenter, images, threads: int) -> list:
    import torch

    torch.set_num_threads(threads)
    return [segmenter.segment(img, q) for img in images for q in QUERIES]


def compare(ref: list, other: list) -> dict:
    out = {"answers": len(ref), "text_differs": 0, "token_ids_differ": 0, "instances": 0,
           "logits": 0, "logits_differing": 0, "max_abs_logit_diff": 0.0,
           "grid_cells": 0, "grid_cells_flipped": 0, "answers_with_a_flipped_cell": 0,
           "mask_pixels": 0, "mask_pixels_flipped": 0}
    for a, b in zip(ref, other, strict=True):
        out["text_differs"] += a.text != b.text
        out["token_ids_differ"] += a.token_ids != b.token_ids
        flipped_here = 0
        for x, y in zip(a.instances, b.instances, strict=False):
            out["instances"] += 1
            out["logits"] += x.logits.size
            out["logits_differing"] += int((x.logits != y.logits).sum())
            out["max_abs_logit_diff"] = max(out["max_abs_logit_diff"],
                                            float(np.abs(x.logits - y.logits).max()))
            out["grid_cells"] += x.grid.size
            flips = int((x.grid != y.grid).sum())
            out["grid_cells_flipped"] += flips
            flipped_here += flips
            out["mask_pixels"] += x.mask.size
            out["mask_pixels_flipped"] += int((x.mask != y.mask).sum())
        out["answers_with_a_flipped_cell"] += flipped_here > 0
    out["grid_flip_rate"] = out["grid_cells_flipped"] / max(1, out["grid_cells"])
    out["logit_differ_rate"] = out["logits_differing"] / max(1, out["logits"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny,mid")
    parser.add_argument("--frames", default="tiny=40,mid=12",
                        help="frames per shape (each answered for two queries)")
    parser.add_argument("--reference", type=int, default=1)
    parser.add_argument("--budgets", default="2,4")
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch

    from stamp_ros.bench.inputs import ANSWERS, load_shape
    from stamp_ros.bench.machine import cpu_model, versions
    from stamp_ros.engine.segmenter import StampSegmenter
    from stamp_ros.inference.pool import available_cores
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    counts = dict(item.split("=") for item in args.frames.split(","))
    budgets = [int(b) for b in args.budgets.split(",")]
    report: dict = {
        "what": "results at other torch thread budgets vs the reference budget, same process",
        "cpu": cpu_model(), "cores": available_cores(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "versions": versions(), "reference_threads": args.reference, "shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            ckpt = make_test_checkpoint(Path(tmp) / shape, shape=load_shape(shape),
                                        answer=ANSWERS[3], seed=11)
            seg = StampSegmenter.from_pretrained(str(ckpt), device="cpu", prefix_cache=0)
            images = frames(int(counts.get(shape, 10)))
            ref = answer_all(seg, images, args.reference)
            report["shapes"][shape] = {
                "frames": len(images), "queries": len(QUERIES),
                "vs_threads": {str(t): compare(ref, answer_all(seg, images, t))
                               for t in budgets}}
            print(f"[thread_budget] {shape}: done", file=sys.stderr)
    from stamp_ros.bench.command import write_report

    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
