"""Offline replay of recorded rosbag2 files: ``stamp-ros bag`` (needs ``pip install .[bag]``).

* :mod:`~stamp_ros.bag.interfaces`: a rosbags typestore with the stamp_ros messages, and the
  message kit the node's result builder fills.
* :mod:`~stamp_ros.bag.source` / :mod:`~stamp_ros.bag.sink`: the input bag, the output bag and
  the overlay video.
* :mod:`~stamp_ros.bag.replay`: the node's pairing and message rules, in bag time.
* :mod:`~stamp_ros.bag.command`: the command line.

Nothing here imports rclpy: the pure-Python ``rosbags`` library reads and writes the bags.

May import: :mod:`stamp_ros.pipeline` (the node's request, result and tracking rules) and
everything below it, ``rosbags``. Never rclpy or a message module (import-linter,
``.importlinter``; the bag tests also run the command with every ROS import blocked).
"""
