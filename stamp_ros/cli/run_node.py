"""Run the stamp_ros node: ``python -m stamp_ros.cli.run_node [--ros-args ...]``.

The entry point behind ``ros2 run stamp_ros stamp_node`` (``lib/stamp_ros/stamp_node``), the
launch file, the demo and the tests. It configures and activates the node, spins it on a
single-threaded executor until SIGINT/SIGTERM, and answers whatever still waits on the way out.
Before anything of ROS starts it loads the shipped Fast DDS profile for large images unless the
user chose another (:func:`stamp_ros.cli.dds_profile.use_large_image_profile`).
"""

from __future__ import annotations

import logging
import sys

import rclpy
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from stamp_ros.cli.dds_profile import use_large_image_profile
from stamp_ros.cli.malloc import return_large_buffers_to_the_os
from stamp_ros.ros.node import StampNode


async def _activate(node: StampNode) -> None:
    await node.load_model()
    node.trigger_activate()


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; 1 when its parameters or configuration are bad."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    return_large_buffers_to_the_os()
    dds = use_large_image_profile()  # before the first participant: Fast DDS reads it then
    rclpy.init(args=sys.argv if args is None else args)
    try:
        node = StampNode()
    except (InvalidParameterValueException, ParameterException) as exc:  # bad --ros-args -p
        logging.getLogger("stamp_ros.cli.run_node").critical(f"bad parameter: {exc}")
        rclpy.try_shutdown()
        return 1
    node.get_logger().info(dds)
    # One executor thread is enough and is faster: no callback waits for the model (service and
    # action callbacks are coroutines that yield until the worker answers), and rclpy's
    # multi-threaded executor costs so much Python time per callback that a 30 Hz 1080p stream
    # reached the node at a fraction of its rate (bench/transport.py).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal("configuration failed (see above); exiting")
            code = 1
        else:
            # The model loads while the executor already serves (frames, calls, parameters,
            # get_state). One that fails to load leaves the node inactive but serving: every
            # request is answered with an error result naming the cause; `activate` retries.
            executor.create_task(_activate, node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
