"""``stamp-ros bench --node-overhead``: the node's CPU work per camera frame, model excluded.

The node's callbacks must stay far below a camera's frame period while the GPU is busy, so
these are the numbers to watch: converting incoming frames, and building the outgoing result,
mask and overlay messages. The report has median/p90 milliseconds per stage and the per-frame
totals of what one answered frame costs the node (goal: <= 10 ms median without the overlay,
which is only rendered while something subscribes to ``~/overlay``).

``--check-fields`` (the default) sets ROS_PYTHON_CHECK_FIELDS=1 before sensor_msgs is
imported, which makes message construction cost what it costs on Humble.
"""

from __future__ import annotations

import argparse
import array
import os
import platform
import sys
from collections.abc import Callable
from time import perf_counter

from stamp_ros.bench.inputs import parse_size
from stamp_ros.bench.machine import cpu_model

DEFAULT_SIZE = "1920x1080"
DEFAULT_RUNS = 50
GOAL_MEDIAN_MS = 10.0


def run_node_overhead(args: argparse.Namespace) -> dict:
    """Time each stage ``--repeats`` times on a synthetic frame of ``--size``; the report."""
    if "sensor_msgs.msg" in sys.modules:
        print("stamp-ros bench: sensor_msgs was imported before --check-fields could apply",
              file=sys.stderr)
    # Must happen before the first sensor_msgs import (it is read once, at import time).
    os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1" if args.check_fields else "0"
    try:
        from sensor_msgs.msg import CompressedImage
        from std_msgs.msg import Header

        from stamp_ros.pipeline.results import segmentation_msg
    except ImportError as exc:
        raise SystemExit(
            f"--node-overhead needs the ROS 2 messages (run scripts/setup): {exc}"
        ) from exc
    import cv2
    import numpy as np

    from stamp_ros.engine.masks import grid_score, mask_area, mask_bbox
    from stamp_ros.engine.result import SegInstance, StampResult
    from stamp_ros.msgs.compressed import compressed_msg_to_rgb
    from stamp_ros.msgs.convert import image_msg_to_rgb
    from stamp_ros.render.overlay import render_overlay, union_mask
    from stamp_ros.ros.kit import mono8_to_image_msg, rclpy_kit, rgb_to_image_msg

    runs = args.repeats or (5 if args.quick else DEFAULT_RUNS)
    w, h = parse_size(args.size or DEFAULT_SIZE)
    # A camera-like frame: smooth gradients with sensor noise, so JPEG size is realistic.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=2)
    rgb = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)

    header = Header(frame_id="camera_color_optical_frame")
    rgb_msg = rgb_to_image_msg(rgb, header)
    bgr_msg = rgb_to_image_msg(rgb, header, encoding="bgr8")
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode the benchmark frame as JPEG")
    jpeg_msg = CompressedImage(header=header, format="rgb8; jpeg compressed bgr8")
    data = array.array("B")
    data.frombytes(jpeg.tobytes())
    jpeg_msg.data = data

    masks = []
    for cy, cx, r in [(400, 600, 180), (650, 1300, 250), (300, 1500, 120)]:
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (cx * w // 1920, cy * h // 1080), r * min(h, w) // 1080, 1, -1)
        masks.append(m)
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
                                convert_ms=1.0, kit=rclpy_kit())

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
        for _ in range(runs):
            t0 = perf_counter()
            fn()
            times.append((perf_counter() - t0) * 1000.0)
        arr = np.array(times)
        results[name] = {
            "median_ms": round(float(np.median(arr)), 3),
            "p90_ms": round(float(np.percentile(arr, 90)), 3),
        }

    def total(names: list[str]) -> dict:
        return {
            "stages": names,
            "median_ms": round(sum(results[n]["median_ms"] for n in names), 3),
            "p90_ms": round(sum(results[n]["p90_ms"] for n in names), 3),
        }

    # One answered raw frame: convert it, build the result and the union mask (1 instance).
    answered = ["segmentation_msg_1_instance", "union_mask_msg_1_instance"]
    totals = {
        "rgb8_frame": total(["rgb8_image_to_numpy", *answered]),
        "bgr8_frame": total(["bgr8_image_to_rgb", *answered]),
        "bgr8_frame_with_overlay": total(["bgr8_image_to_rgb", *answered, "overlay_image_build"]),
    }
    worst = totals["bgr8_frame"]["median_ms"]
    return {
        "frame": f"{w}x{h}",
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "runs": runs,
        "ros_python_check_fields": args.check_fields,
        "jpeg_bytes": int(jpeg.size),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "results": results,
        "totals": totals,
        "goal_median_ms": GOAL_MEDIAN_MS,
        "goal_met": worst <= GOAL_MEDIAN_MS,
    }
