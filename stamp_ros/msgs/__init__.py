"""Image messages <-> numpy without cv_bridge, and nothing of ROS: a message is any object with
the ``sensor_msgs`` fields (rclpy's classes in the node, rosbags' in ``stamp-ros bag``).

* :mod:`~stamp_ros.msgs.convert`: ``sensor_msgs/Image`` of every REP 118 / OpenCV encoding to
  arrays (and the raw layout of an array as an image);
* :mod:`~stamp_ros.msgs.compressed`: ``CompressedImage`` (JPEG, PNG, compressedDepth) to arrays.

Building rclpy messages is :mod:`stamp_ros.ros.kit`'s job. May import numpy and OpenCV only
(import-linter, ``.importlinter``): the bottom layer beside the engine.
"""
