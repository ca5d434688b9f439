"""``python -m stamp_ros.run_node [--ros-args ...]`` starts the stamp_ros node.

The entry point for running the node from a source checkout or a pip environment without
``ros2 run``; the node itself (``main`` included) is :mod:`stamp_ros.ros.node`.
"""

import sys

from stamp_ros.ros.node import main

if __name__ == "__main__":
    sys.exit(main())
