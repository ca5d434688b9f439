"""``python -m stamp_ros.node [--ros-args ...]`` starts the stamp_ros node."""

import sys

from stamp_ros.ros.node import main

if __name__ == "__main__":
    sys.exit(main())
