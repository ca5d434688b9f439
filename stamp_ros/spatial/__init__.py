"""Mask + aligned depth + intrinsics -> 3D, and why an object has no 3D: pure numpy.

* :mod:`~stamp_ros.spatial.geometry`: points, centroid, 3D box and valid-depth share of a mask
  (REP 103/105/118 conventions);
* :mod:`~stamp_ros.spatial.depth3d`: one frame's masks lifted with the depth image paired to
  it (nearest stamp within ``depth_max_skew``) and moved into a target frame;
* :mod:`~stamp_ros.spatial.status3d`: the reasons ``Instance.status_3d`` carries and
  /diagnostics counts.

Shared by the node (:mod:`stamp_ros.ros.objects3d` adds tf2 and the point cloud) and
``stamp-ros bag``. May import: numpy, :mod:`stamp_ros.msgs` (depth image decoding). Never rclpy,
tf2 or a message module (import-linter, ``.importlinter``).
"""
