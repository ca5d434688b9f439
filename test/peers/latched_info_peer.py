"""A static camera's camera_info, latched: published ONCE with TRANSIENT_LOCAL durability (as
simulators and drivers of fixed cameras do), then kept for late subscribers until interrupted.

Runs in its own process. Usage: latched_info_peer.py [--topic camera_info]
[--reliability reliable|best_effort] [--wait-for-subscriber]. With --wait-for-subscriber it
publishes only once a subscription has matched (so that subscriber gets it, whatever its
durability). Prints "published" once the message is out.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo

WIDTH, HEIGHT = 160, 120


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", default="camera_info")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--wait-for-subscriber", action="store_true")
    args, ros_args = parser.parse_known_args(argv)

    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("latched_info_peer")
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE if args.reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(CameraInfo, args.topic, qos)
    info = CameraInfo()
    info.header.frame_id = "cam"
    info.header.stamp = node.get_clock().now().to_msg()
    info.width, info.height = WIDTH, HEIGHT
    info.k = [100.0, 0.0, WIDTH / 2, 0.0, 100.0, HEIGHT / 2, 0.0, 0.0, 1.0]
    while args.wait_for_subscriber and pub.get_subscription_count() < 1:
        time.sleep(0.05)  # polling the graph for the subscriber's match
    pub.publish(info)
    print("published", flush=True)
    with contextlib.suppress(KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        rclpy.spin(node)  # the publisher keeps the message for late subscribers
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
