"""Other side of the interface round-trip test: publishes, serves and acts with stamp_ros types.

It builds its answers from the request alone, so the test can check every field that crossed
the process boundary.
"""

from __future__ import annotations

import array
import sys
import time

import numpy as np
import rclpy
from rclpy.action import ActionServer
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from stamp_ros.action import Segment as SegmentAction
from stamp_ros.msg import Instance, Segmentation
from stamp_ros.srv import Segment


def make_mask(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic pattern the receiver can regenerate and compare byte for byte."""
    yy, xx = np.mgrid[0:height, 0:width]
    return (((xx // (7 + seed)) + (yy // (5 + seed))) % 2 * 255).astype(np.uint8)


def make_instance(header, width: int, height: int, seed: int) -> Instance:
    inst = Instance()
    img = Image()
    img.header = header
    img.width, img.height, img.encoding, img.step = width, height, "mono8", width
    data = array.array("B")
    data.frombytes(make_mask(width, height, seed).tobytes())
    img.data = data
    inst.mask = img
    inst.grid_height, inst.grid_width = 3, 4
    inst.grid = array.array("B", [(i + seed) % 2 for i in range(12)]).tobytes()
    inst.grid_logits = array.array("f", [float(i - seed) for i in range(12)])
    inst.x_min, inst.y_min, inst.x_max, inst.y_max = seed, seed + 1, width - 1, height - 1
    inst.area = width * height // 2
    inst.score = 0.25 * (seed + 1)
    inst.has_3d = seed == 1
    inst.frame_id_3d = "camera_optical" if inst.has_3d else ""
    inst.centroid.x, inst.centroid.y, inst.centroid.z = 0.1, -0.2, 1.5 + seed
    inst.size.x, inst.size.y, inst.size.z = 0.05, 0.06, 0.07
    inst.num_points = 1000 + seed
    return inst


def make_result(query: str, header, width: int, height: int, n_instances: int) -> Segmentation:
    res = Segmentation()
    res.header = header
    res.request_id = f"echo-{query}"
    res.query = query
    res.answer = f"Sure, here is {query}."
    res.success = True
    res.instances = [make_instance(header, width, height, s) for s in range(n_instances)]
    res.grid_height, res.grid_width, res.model = 3, 4, "peer"
    res.preprocess_ms, res.generate_ms, res.mask_ms = 1.5, 2.5, 3.5
    res.postprocess_ms, res.total_ms, res.wait_ms = 4.5, 12.0, 0.5
    return res


def main() -> int:
    rclpy.init(args=sys.argv)
    node = rclpy.create_node("interface_peer")
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Segmentation, "result", qos)

    def publish() -> None:
        header = Image().header
        header.frame_id = "camera_optical"
        header.stamp.sec, header.stamp.nanosec = 1234, 5678
        pub.publish(make_result("two", header, 1920, 1080, 2))

    node.create_timer(0.5, publish)

    def serve(request, response):
        img = request.image
        response.result = make_result(request.query, img.header, img.width, img.height, 1)
        return response

    node.create_service(Segment, "segment", serve)

    def execute(goal_handle):
        goal = goal_handle.request
        for stage in ("preprocess", "generate", "mask"):
            fb = SegmentAction.Feedback()
            fb.stage, fb.partial_answer, fb.elapsed_ms = stage, goal.query[:3], 1.0
            goal_handle.publish_feedback(fb)
            time.sleep(0.05)
        goal_handle.succeed()
        result = SegmentAction.Result()
        img = goal.image
        result.result = make_result(goal.query, img.header, img.width, img.height, 1)
        return result

    ActionServer(node, SegmentAction, "segment", execute)
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    print("peer ready", flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
