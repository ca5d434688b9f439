"""An RGB-D camera driver stand-in for the input-diagnosis tests: colour, depth, camera_info.

Runs in its own process, as a real driver does. Each topic is optional; all share one
reliability and one rate. The colour frame is stamped with this process's clock; the depth image
with the same stamp plus ``--depth-offset-ms`` (a driver whose depth is not aligned in time).

Usage: camera_peer.py [--image-topic image] [--depth-topic depth] [--info-topic camera_info]
[--reliability reliable|best_effort] [--rate 10] [--depth-encoding 16UC1|32FC1]
[--depth-value 1500] [--depth-offset-ms 0] [--duration 600]. Prints "publishing" once its
publishers exist, then publishes until the duration ends or it is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from stamp_ros.ros.kit import rgb_to_image_msg
from stamp_ros.testing.images import array_to_image_msg

WIDTH, HEIGHT = 160, 120


def frame() -> np.ndarray:
    """Textured (the test checkpoint's masks split textured images, not flat ones) with a red
    square, like the node tests' frames."""
    rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb[HEIGHT // 4: HEIGHT // 2, WIDTH // 4: WIDTH // 2] = (250, 30, 30)
    return rgb


def camera_info(frame_id: str) -> CameraInfo:
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = WIDTH, HEIGHT
    info.k = [100.0, 0.0, WIDTH / 2, 0.0, 100.0, HEIGHT / 2, 0.0, 0.0, 1.0]
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-topic", default="image")
    parser.add_argument("--depth-topic", default="")
    parser.add_argument("--info-topic", default="")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1")
    parser.add_argument("--depth-value", type=float, default=1500.0,
                        help="every depth pixel's raw value (16UC1: an integer)")
    parser.add_argument("--depth-offset-ms", type=float, default=0.0)
    parser.add_argument("--frame-id", default="cam")
    parser.add_argument("--duration", type=float, default=600.0)
    args, ros_args = parser.parse_known_args(argv)

    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("camera_peer")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE
                     if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)
    image_pub = node.create_publisher(Image, args.image_topic, qos) if args.image_topic else None
    depth_pub = node.create_publisher(Image, args.depth_topic, qos) if args.depth_topic else None
    info_pub = node.create_publisher(CameraInfo, args.info_topic, qos) if args.info_topic else None

    image = rgb_to_image_msg(frame())
    image.header.frame_id = args.frame_id
    dtype = np.uint16 if args.depth_encoding == "16UC1" else np.float32
    depth = array_to_image_msg(np.full((HEIGHT, WIDTH), args.depth_value, dtype),
                               args.depth_encoding)
    depth.header.frame_id = args.frame_id
    info = camera_info(args.frame_id)
    offset_ns = int(args.depth_offset_ms * 1e6)
    clock = node.get_clock()
    print("publishing", flush=True)
    t0 = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        while time.monotonic() - t0 < args.duration:
            now = clock.now()
            stamp = now.to_msg()
            if image_pub is not None:
                image.header.stamp = stamp
                image_pub.publish(image)
            if info_pub is not None:
                info.header.stamp = stamp
                info_pub.publish(info)
            if depth_pub is not None:
                total = now.nanoseconds + offset_ns
                depth.header.stamp.sec, depth.header.stamp.nanosec = divmod(total, 10**9)
                depth_pub.publish(depth)
            time.sleep(1.0 / args.rate)  # the camera's frame period
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
