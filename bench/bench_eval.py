#!/usr/bin/env python3
"""What ``stamp-ros eval`` itself costs per sample, model excluded: prints ONE JSON object.

A COCO-sized sample (a 640x480 JPEG, a two-polygon annotation of ~120 vertices, a prediction
stretched from a 24x32 grid as the engine makes it) goes through every step the runner does
around the engine: reading the image, decoding the ground truth, scoring the first mask and the
union, RLE-encoding the prediction for the record and writing the record. The COCO steps run
pycocotools behind ``stamp_ros.eval.cocomask``'s checks; they are also timed as bare pycocotools
calls (``"pycocotools"``), so the difference is what the checks and the C-order copies cost. All
are a few milliseconds, next to the engine's hundreds of milliseconds to seconds per sample (and
the runner decodes the next sample on a helper thread while the engine runs).
Medians (and p90) over ``--repeats``; compare with the engine's seconds per sample
(``bench/results/cpu-bag.json``, ``stamp-ros bench``) to see the share eval adds.

    PYTHONPATH=. .venv/bin/python bench/bench_eval.py --out bench/results/cpu-eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stamp_ros.bench.machine import cpu_model, versions
from stamp_ros.engine.masks import upsample_nearest
from stamp_ros.eval.cocomask import (
    coco_mask_api,
    decode_rle,
    decode_segmentation_parts,
    encode_rle,
)
from stamp_ros.eval.metrics import score
from stamp_ros.eval.samples import read_rgb

H, W = 480, 640


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float, n: int) -> list[float]:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = r * rng.uniform(0.7, 1.0, n)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).reshape(
        -1).round(2).tolist()


def _timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"p50_ms": round(float(np.median(times)), 4),
            "p90_ms": round(float(np.percentile(times, 90)), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    photo = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "horses.jpg"
    if photo.exists():
        with Image.open(photo) as img:
            image = img.convert("RGB").resize((W, H), Image.BILINEAR)
    else:
        image = Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    path = folder / "sample.jpg"
    image.save(path, quality=90)
    polys = [_polygon(rng, 300, 240, 150, 80), _polygon(rng, 420, 200, 90, 40)]
    truth = np.sum(decode_segmentation_parts(polys, H, W), axis=0).astype(np.uint8)
    rle = encode_rle(truth > 0)
    grid = (rng.random((24, 32)) < 0.3).astype(np.uint8)
    pred = upsample_nearest(grid, (H, W))
    record = {"key": "refcoco/val/r1s1", "grid": score(pred, truth).as_dict(),
              "pred": encode_rle(pred), "timings_ms": {"total": 1.0}}
    out_file = open(folder / "records.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def write_record() -> None:
        out_file.write(json.dumps(record, separators=(",", ":")) + "\n")
        out_file.flush()

    steps = {
        "read_jpeg": lambda: read_rgb(str(path)),
        "truth_polygons": lambda: np.sum(decode_segmentation_parts(polys, H, W), axis=0),
        "truth_rle": lambda: decode_rle(rle),
        "score_first_and_union": lambda: (score(pred, truth), score(pred, truth)),
        "encode_prediction": lambda: encode_rle(pred),
        "write_record": write_record,
    }
    ours = {name: _timed(fn, args.repeats) for name, fn in steps.items()}
    total = round(sum(v["p50_ms"] for v in ours.values()), 3)
    cm = coco_mask_api()
    rle_b = dict(rle, counts=rle["counts"].encode())
    fortran = np.asfortranarray(pred)
    reference = {
        "truth_polygons": _timed(lambda: cm.decode(cm.frPyObjects(polys, H, W)).sum(2),
                                 args.repeats),
        "truth_rle": _timed(lambda: cm.decode(rle_b), args.repeats),
        "encode_prediction": _timed(lambda: cm.encode(fortran), args.repeats),
    }
    out_file.close()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "what": "stamp-ros eval per-sample work around the engine (model excluded)",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions(),
        "load_average": [round(v, 2) for v in load] if load else None,
        "note": "shared machine: other engineers' tests were running",
        "image_size": [W, H],
        "polygon_vertices": sum(len(p) // 2 for p in polys),
        "repeats": args.repeats,
        "steps": ours,
        "total_p50_ms": total,
        "pycocotools": reference,
    }
    from stamp_ros.bench.command import write_report

    write_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
