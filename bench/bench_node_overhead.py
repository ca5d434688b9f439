"""CPU cost of the node's per-frame work outside the model, on a 1920x1080 frame.

The node's callbacks must stay far below a camera's frame period while the GPU is busy, so
these are the numbers to watch: converting incoming frames, and building the outgoing mask
and overlay messages. Prints one JSON object (median/p90 milliseconds per stage).

    python bench/bench_node_overhead.py [--runs 50] [--check-fields | --no-check-fields]

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

    from stamp_ros.overlay import render_overlay, union_mask
    from stamp_ros.ros.convert import (
        array_to_image_msg,
        compressed_msg_to_rgb,
        image_msg_to_rgb,
        mono8_to_image_msg,
        rgb_to_image_msg,
    )

    h, w = args.height, args.width
    # A camera-like frame: smooth gradients with sensor noise, so JPEG size is realistic.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=2)
    rgb = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)

    header = Header(frame_id="camera_color_optical_frame")
    rgb_msg = array_to_image_msg(rgb, "rgb8", header)
    bgr_msg = array_to_image_msg(np.ascontiguousarray(rgb[..., ::-1]), "bgr8", header)
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

    stages: dict[str, Callable[[], object]] = {
        "rgb8_image_to_numpy": lambda: image_msg_to_rgb(rgb_msg),
        "bgr8_image_to_rgb": lambda: image_msg_to_rgb(bgr_msg),
        "jpeg_compressed_to_rgb": lambda: compressed_msg_to_rgb(jpeg_msg),
        "mono8_mask_image_build": lambda: mono8_to_image_msg(union_mask(masks, rgb.shape), header),
        "render_overlay_only": lambda: render_overlay(rgb, masks, text=answer),
        "overlay_image_build": overlay_msg,
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

    print(json.dumps({
        "frame": f"{w}x{h}",
        "runs": args.runs,
        "ros_python_check_fields": args.check_fields,
        "jpeg_bytes": int(jpeg.size),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "cpu_count": os.cpu_count(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
