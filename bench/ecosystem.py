#!/usr/bin/env python3
"""What the ecosystem outputs cost the node (issue 30): prints ONE JSON object (logs on stderr).

The node builds ``~/detections``, ``~/detections_3d`` and ``~/labels`` (and their ``~/tracks/``
twins) from each finished Segmentation only while someone subscribes, and ``/tf`` with
``publish_tf``. This measures, in-process with the node's own code
(:func:`stamp_ros.ros.ecosystem.publish_detections` on real rclpy publishers), per result and
per tracked frame, at 640x480 and 1920x1080 with 1 and 3 objects (each with 3D):

* ``no_subscribers``: the publishers exist, nobody listens, ``publish_tf`` false: what every
  result pays (the lazy check);
* ``all_subscribed``: a subscriber in another process listens to every output and
  ``publish_tf`` is true: building + serialising + handing each message to DDS;
* ``build_only``: each builder alone (no publisher), to see where the time goes.

A tracked frame is the same call on a ``~/tracks``-shaped message (no patch grid, track ids);
the numbers are reported for both. Whether tracking still runs at camera rate with everything
subscribed is measured on the real node by ``bench/tracking.py --parts node
--subscribe-outputs``.

    PYTHONPATH=. .venv/bin/python bench/ecosystem.py --out bench/results/cpu-ecosystem.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
TOPICS = ("detections", "detections_3d", "labels")

SUBSCRIBER = textwrap.dedent("""
    import sys, rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection2DArray, Detection3DArray
    rclpy.init()
    node = rclpy.create_node("ecosystem_bench_listener")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    counts = {}
    def count(topic):
        return lambda msg: counts.__setitem__(topic, counts.get(topic, 0) + 1)
    for prefix in ("", "tracks/"):
        for name, kind in (("detections", Detection2DArray), ("detections_3d", Detection3DArray),
                           ("labels", Image)):
            topic = f"/ecosystem_bench/{prefix}{name}"
            node.create_subscription(kind, topic, count(topic), qos)
    node.create_subscription(TFMessage, "/tf", count("/tf"), QoSProfile(depth=100))
    print("subscribed", flush=True)
    try:
        rclpy.spin(node)
    except BaseException:
        pass
""")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def scene(size: tuple[int, int], count: int):
    """Full-frame masks (discs spread over the frame, the first two overlapping) and a 3D
    object per mask."""
    import cv2

    from stamp_ros.spatial.geometry import Object3D

    h, w = size
    masks, objects = [], []
    for k, (fx, fy, fr) in enumerate([(0.35, 0.45, 0.18), (0.5, 0.5, 0.2), (0.75, 0.3, 0.12)]
                                     [:count]):
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (int(fx * w), int(fy * h)), int(fr * min(h, w)), 1, -1)
        masks.append(m.astype(bool))
        c = np.array([0.1 * k - 0.1, 0.05, 1.0 + 0.2 * k])
        objects.append(Object3D(centroid=c, box_min=c - 0.05, box_max=c + 0.05,
                                size=np.full(3, 0.1), n_points=500))
    return masks, objects


def result_message(size: tuple[int, int], count: int, tracked: bool):
    """A Segmentation as the node publishes it: ``~/result`` (patch grids, no track ids) or a
    ``~/tracks`` frame (no grids, track ids)."""
    from std_msgs.msg import Header

    from stamp_ros.engine.masks import grid_score, mask_area, mask_bbox
    from stamp_ros.engine.result import SegInstance, StampResult
    from stamp_ros.pipeline.results import segmentation_msg
    from stamp_ros.ros.kit import rclpy_kit

    h, w = size
    masks, objects = scene(size, count)
    rng = np.random.default_rng(0)
    gh, gw = max(1, h // 28), max(1, w // 28)
    instances = []
    for m in masks:
        logits = rng.normal(0, 2, (gh, gw)).astype(np.float32)
        grid = (logits > 0).astype(np.uint8)
        instances.append(SegInstance(grid=grid, logits=logits, mask=m, bbox=mask_bbox(m),
                                     area=mask_area(m), score=grid_score(logits, grid)))
    result = StampResult(text="the mugs " + "<seg> " * count, instances=instances,
                         image_size=(w, h), grid_size=(gh, gw), timings_ms={})
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec = 100
    seg = segmentation_msg(request_id="c1", query="the mugs", header=header, result=result,
                           model="bench", wait_ms=0.0, convert_ms=0.0, objects=objects,
                           frame_id_3d="camera_color_optical_frame", kit=rclpy_kit())
    if tracked:
        for k, inst in enumerate(seg.instances):
            inst.track_id = k + 1
            inst.grid_height = inst.grid_width = 0
            inst.grid, inst.grid_logits = [], []
    return seg, masks


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up: imports, allocator growth
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": round(statistics.median(times), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import rclpy
    from domain_coordinator import domain_id

    from stamp_ros.bench.command import write_report
    from stamp_ros.bench.machine import cpu_model
    from stamp_ros.pipeline.detections import (
        detections_2d,
        detections_3d,
        labels_msg,
        object_transforms,
        tf_message,
    )
    from stamp_ros.ros.ecosystem import DETECTION_TYPES, TF_QOS, publish_detections
    from stamp_ros.ros.kit import rclpy_kit

    load_before = os.getloadavg()
    report: dict = {
        "benchmark": "ecosystem outputs: vision_msgs detections, label image, TF (issue 30)",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores (shared)",
        "platform": platform.platform(), "python": platform.python_version(),
        "repeats": args.repeats, "note": args.note,
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "cases": [],
    }
    with domain_id() as did:
        os.environ.update(ROS_DOMAIN_ID=str(did), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        rclpy.init(domain_id=did)
        node = rclpy.create_node("ecosystem_bench")
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        names = [f"{p}{t}" for p in ("", "tracks/") for t in TOPICS]
        outputs = {name: node.create_publisher(kind, f"/ecosystem_bench/{name}", reliable)
                   for name, kind in zip(names, DETECTION_TYPES, strict=True)}
        outputs["tf"] = node.create_publisher(TFMessage, "/tf", TF_QOS)
        params = {"publish_tf": False, "tf_prefix": "stamp/"}
        kit = rclpy_kit()
        listener = None
        try:
            for listening in (False, True):
                if listening:
                    listener = subprocess.Popen(
                        [sys.executable, "-c", SUBSCRIBER], stdout=subprocess.PIPE, text=True,
                        env=dict(os.environ), start_new_session=True)
                    if listener.stdout.readline().strip() != "subscribed":
                        raise RuntimeError("the subscriber process did not start")
                    deadline = time.monotonic() + 60
                    while any(p.get_subscription_count() < 1 for p in outputs.values()):
                        if time.monotonic() > deadline:
                            raise RuntimeError("the subscriber never matched every output")
                        rclpy.spin_once(node, timeout_sec=0.1)
                    params["publish_tf"] = True
                for size_name, size in SIZES.items():
                    for count in (1, 3):
                        for tracked in (False, True):
                            seg, masks = result_message(size, count, tracked)
                            prefix = "tracks/" if tracked else ""
                            row = {"frame": size_name, "objects": count,
                                   "output": "tracked frame" if tracked else "result",
                                   "subscribers": listening}
                            row["publish_detections"] = timed(
                                lambda s=seg, m=masks, p=prefix, z=size: publish_detections(
                                    outputs, s, z, m, params.__getitem__, prefix=p),
                                args.repeats)
                            if listening:
                                row["build_only"] = {
                                    "detections": timed(lambda s=seg: detections_2d(s, kit),
                                                        args.repeats),
                                    "detections_3d": timed(lambda s=seg: detections_3d(s, kit),
                                                           args.repeats),
                                    "labels": timed(lambda s=seg, m=masks, z=size: labels_msg(
                                        s, kit, z, m), args.repeats),
                                    "labels_decoding_masks": timed(
                                        lambda s=seg, z=size: labels_msg(s, kit, z), args.repeats),
                                    "tf": timed(lambda s=seg: tf_message(
                                        object_transforms(s, kit, "stamp/"), kit), args.repeats),
                                }
                            report["cases"].append(row)
                            log(f"{row['output']} {size_name} x{count} subscribers={listening}: "
                                f"{row['publish_detections']}")
        finally:
            if listener is not None:
                listener.terminate()
                listener.wait(10)
            node.destroy_node()
            rclpy.shutdown()
    report["load_avg_1_5_15_after"] = [round(v, 2) for v in os.getloadavg()]
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
