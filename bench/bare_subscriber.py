#!/usr/bin/env python3
"""The transport's ceiling for bench/transport.py: a bare rclpy subscriber on ``image``.

It deserialises every frame (as any subscriber that uses the pixels must) and prints the same
``stats:`` line as the node (frames per second, latency p50/p90 = receive time minus header
stamp) every ``--period`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--period", type=float, default=2.0)
    parser.add_argument("--compressed", action="store_true")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    args = parser.parse_args()
    msg_type = CompressedImage if args.compressed else Image
    rclpy.init()
    node = rclpy.create_node("bare_subscriber")
    count, latencies, since = 0, [], time.monotonic()

    def on_frame(raw: bytes) -> None:
        nonlocal count, latencies, since
        stamp = deserialize_message(raw, msg_type).header.stamp
        count += 1
        latencies.append((time.time_ns() - (stamp.sec * 10**9 + stamp.nanosec)) / 1e6)
        now = time.monotonic()
        if now - since >= args.period:
            ordered = sorted(latencies)
            print(f"stats: input_rate_hz={count / (now - since):.1f}, "
                  f"frame_latency_p50_ms={ordered[len(ordered) // 2]:.1f}, "
                  f"frame_latency_p90_ms={ordered[int(len(ordered) * 0.9)]:.1f}", flush=True)
            count, latencies, since = 0, [], now

    node.create_subscription(msg_type, "image", on_frame,
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE
                                        if args.reliability == "reliable"
                                        else ReliabilityPolicy.BEST_EFFORT),
                             raw=True)
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)


if __name__ == "__main__":
    main()
