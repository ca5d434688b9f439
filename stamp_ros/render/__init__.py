"""Human-facing pictures of a result: the coloured overlay, the union mask, instance colours.

* :mod:`~stamp_ros.render.overlay`: overlay and union mask (numpy + OpenCV);
* :mod:`~stamp_ros.render.palette`: instance ``i``'s colour, the same in the overlay, the RViz
  markers and the point cloud.

Used by the node, ``stamp-ros segment/bag/eval`` and the demo. May import numpy and OpenCV only:
nothing else of stamp_ros, never rclpy (import-linter, ``.importlinter``).
"""
