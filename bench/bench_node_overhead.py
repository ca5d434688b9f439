"""CPU cost of the node's per-frame work outside the model, on a 1920x1080 frame.

The node's callbacks must stay far below a camera's frame period while the GPU is busy, so
these are the numbers to watch: converting incoming frames, and building the outgoing result,
mask and overlay messages. Prints one JSON object (median/p90 milliseconds per stage) and the
per-frame totals of what one answered frame costs the node (goal: <= 10 ms median without the
overlay, which is only rendered while something subscribes to ``~/overlay``).

    python bench/bench_node_overhead.py [--runs 50] [--check-fields | --no-check-fields]
                                        [--out bench/results/cpu-node-overhead.json]

``--check-fields`` (the default) sets ROS_PYTHON_CHECK_FIELDS=1 before sensor_msgs is
imported, which makes message construction cost what it costs on Humble.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--check-fields", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args()


def main() -> None:
    args = _parse()
    # Must happen before the first sensor_msgs import (it is read once, at import time).
    os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1" if args.check_fields else "0"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import array

    import cv2
    import numpy as np
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from stamp_ros.bench import cpu_model
    from stamp_ros.engine.masks import grid_score, mask_area, mask_bbox
    from stamp_ros.engine.result import SegInstance, StampResult
    from stamp_ros.overlay import render_overlay, union_mask
    from stamp_ros.ros.convert import (
        compressed_msg_to_rgb,
        image_msg_to_rgb,
        mono8_to_image_msg,
        rgb_to_image_msg,
    )
    from stamp_ros.ros.results import segmentation_msg

    h, w = args.height, args.width
    # A camera-like frame: smooth gradients with sensor noise, so JPEG size is realistic.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=2)
    rgb = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)

    header = Header(frame_id="camera_color_optical_frame")
    rgb_msg = rgb_to_image_msg(rgb, header)
    bgr_msg = rgb_to_image_msg(rgb, header, encoding="bgr8")
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg_msg = CompressedImage(header=header, format="rgb8; jpeg compressed bgr8")
    data = array.array("B")
    data.frombytes(jpeg.tobytes())
    jpeg_msg.data = data

    masks = []
    for i, (cy, cx, r) in enumerate([(400, 600, 180), (650, 1300, 250), (300, 1500, 120)]):
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (cx * w // 1920, cy * h // 1080), r * min(h, w) // 1080, 1, -1)
        masks.append(m)
        del i
    answer = "The red mug is left of the laptop; the second mug is on the shelf behind it."

    def overlay_msg() -> object:
        return rgb_to_image_msg(render_overlay(rgb, masks, text=answer), header)

    # What the engine hands the node for a one-<|seg|> answer: numpy arrays only.
    gh, gw = 26, 47  # the merged grid of a 1080p frame at the default pixel range
    logits = rng.normal(0, 2, (gh, gw)).astype(np.float32)
    grid = (logits > 0).astype(np.uint8)
    one = masks[1]
    result = StampResult(
        text=answer,
        instances=[SegInstance(grid=grid, logits=logits, mask=one, bbox=mask_bbox(one),
                               area=mask_area(one), score=grid_score(logits, grid))],
        image_size=(w, h),
        grid_size=(gh, gw),
        timings_ms={"preprocess": 1.0, "generate": 50.0, "mask": 10.0, "postprocess": 2.0},
    )

    def result_msg() -> object:
        return segmentation_msg(request_id="q1", query="Please segment the red mug.",
                                header=header, result=result, model="bench", wait_ms=0.0,
                                convert_ms=1.0)

    stages: dict[str, Callable[[], object]] = {
        "rgb8_image_to_numpy": lambda: image_msg_to_rgb(rgb_msg),
        "bgr8_image_to_rgb": lambda: image_msg_to_rgb(bgr_msg),
        "jpeg_compressed_to_rgb": lambda: compressed_msg_to_rgb(jpeg_msg),
        "mono8_mask_image_build": lambda: mono8_to_image_msg(union_mask(masks, rgb.shape), header),
        "render_overlay_only": lambda: render_overlay(rgb, masks, text=answer),
        "overlay_image_build": overlay_msg,
        "segmentation_msg_1_instance": result_msg,
        "union_mask_msg_1_instance": lambda: mono8_to_image_msg(
            union_mask([one], rgb.shape), header
        ),
    }

    results: dict[str, dict[str, float]] = {}
    for name, fn in stages.items():
        fn()  # warm-up: first-call imports and allocator growth are not per-frame costs
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
        arr = np.array(times)
        results[name] = {
            "median_ms": round(float(np.median(arr)), 3),
            "p90_ms": round(float(np.percentile(arr, 90)), 3),
        }

    def total(names: list[str]) -> dict[str, float]:
        return {
            "stages": names,
            "median_ms": round(sum(results[n]["median_ms"] for n in names), 3),
            "p90_ms": round(sum(results[n]["p90_ms"] for n in names), 3),
        }

    # One answered raw frame: convert it, build the result and the union mask (1 instance).
    base = ["segmentation_msg_1_instance", "union_mask_msg_1_instance"]
    totals = {
        "rgb8_frame": total(["rgb8_image_to_numpy", *base]),
        "bgr8_frame": total(["bgr8_image_to_rgb", *base]),
        "bgr8_frame_with_overlay": total(["bgr8_image_to_rgb", *base, "overlay_image_build"]),
    }
    worst = totals["bgr8_frame"]["median_ms"]
    report = {
        "frame": f"{w}x{h}",
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "runs": args.runs,
        "ros_python_check_fields": args.check_fields,
        "jpeg_bytes": int(jpeg.size),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "results": results,
        "totals": totals,
        "goal_median_ms": 10.0,
        "goal_met": worst <= 10.0,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
