"""A camera-driver stand-in for the robustness tests: streams big Image frames at a fixed rate.

Runs in its own process so that serialising 6 MB frames at 30 Hz does not compete with the test
client for the GIL. The messages are built once (two different frames, so consecutive frames
differ) and only restamped: ``header.stamp`` is this process's ROS clock ``now()``, i.e. system
time, the same clock the test client reads with ``node.get_clock().now()`` on this host.

Usage: stream_peer.py --rate 30 --width 1920 --height 1080 --duration 60 [--gap START:LENGTH]...
[--topic image] [--reliability reliable|best_effort] [--stats FILE]. It waits for a
subscriber, prints "streaming", publishes on a fixed schedule (ticks it cannot keep are
skipped, never bursted), pauses during the gaps (seconds after the start), and finally writes
its counts as JSON to --stats and prints "done".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from stamp_ros.ros.kit import rgb_to_image_msg


def build_frames(width: int, height: int, count: int = 2) -> list[Image]:
    frames = []
    for i in range(count):
        rgb = np.full((height, width, 3), 40 + 60 * i, dtype=np.uint8)
        y0, x0 = height // 4 + i * height // 8, width // 4 + i * width // 8
        rgb[y0: y0 + height // 4, x0: x0 + width // 4] = (250, 30, 30)
        msg = rgb_to_image_msg(rgb)
        msg.header.frame_id = "camera_optical"
        frames.append(msg)
    return frames


def to_jpeg(frame: Image) -> CompressedImage:
    """The same picture as a JPEG CompressedImage (as image_transport's compressed plugin)."""
    import array

    import cv2

    rgb = np.frombuffer(bytes(frame.data), np.uint8).reshape(frame.height, frame.width, 3)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage()
    msg.header.frame_id = frame.header.frame_id
    msg.format = "rgb8; jpeg compressed bgr8"
    msg.data = array.array("B", jpeg.tobytes())
    return msg


def parse_gap(text: str) -> tuple[float, float]:
    start, length = text.split(":")
    return float(start), float(length)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", default="image")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--gap", type=parse_gap, action="append", default=[])
    parser.add_argument("--depth", type=int, default=1, help="publisher history depth")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"),
                        default="reliable", help="publisher QoS reliability")
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--wait-subscriber", type=float, default=60.0)
    parser.add_argument("--compressed", action="store_true",
                        help="publish sensor_msgs/CompressedImage (JPEG) instead of Image")
    args, ros_args = parser.parse_known_args(argv)

    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("stream_peer")
    qos = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.RELIABLE
                     if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)
    msg_type = CompressedImage if args.compressed else Image
    pub = node.create_publisher(msg_type, args.topic, qos)
    frames = build_frames(args.width, args.height)
    if args.compressed:
        frames = [to_jpeg(f) for f in frames]
    clock = node.get_clock()

    deadline = time.monotonic() + args.wait_subscriber
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            print("no subscriber", flush=True)
            return 2
        time.sleep(0.05)
    print("streaming", flush=True)

    period = 1.0 / args.rate
    sent = skipped = 0
    publish_s: list[float] = []
    t0 = time.monotonic()
    tick = 0
    try:
        while True:
            now = time.monotonic()
            elapsed = now - t0
            if elapsed >= args.duration:
                break
            due = t0 + tick * period
            if now < due:
                time.sleep(due - now)
                continue
            behind = int((now - due) / period)
            if behind:  # a publish took longer than a period: drop the missed ticks
                skipped += behind
                tick += behind
            tick += 1
            if any(start <= elapsed < start + length for start, length in args.gap):
                continue
            msg = frames[sent % len(frames)]
            msg.header.stamp = clock.now().to_msg()
            t_pub = time.monotonic()
            pub.publish(msg)
            publish_s.append(time.monotonic() - t_pub)
            sent += 1
    except KeyboardInterrupt:
        pass
    span = time.monotonic() - t0
    gap_s = sum(min(length, max(0.0, span - start)) for start, length in args.gap)
    stats = {
        "sent": sent,
        "skipped_ticks": skipped,
        "span_s": span,
        "streaming_s": span - gap_s,
        "rate_hz": sent / max(1e-6, span - gap_s),
        "publish_ms_p50": 1000 * float(np.median(publish_s)) if publish_s else 0.0,
        "publish_ms_max": 1000 * max(publish_s) if publish_s else 0.0,
        "frame_bytes": len(frames[0].data),
    }
    if args.stats:
        args.stats.write_text(json.dumps(stats))
    print("done " + json.dumps(stats), flush=True)
    # Fast DDS can hang while tearing down (seen with LARGE_DATA's TCP transport): the counts
    # are out, so a shutdown that takes too long ends the process the hard way.
    watchdog = threading.Timer(3.0, os._exit, args=(0,))
    watchdog.daemon = True
    watchdog.start()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
