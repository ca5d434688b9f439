"""What the node and ``stamp-ros bag`` do with each request and each frame, once, without ROS.

The node (:mod:`stamp_ros.ros`) adds topics, threads and the executor; the bag replay
(:mod:`stamp_ros.bag`) adds bag time. Both follow the same rules because they call these:

* :mod:`~stamp_ros.pipeline.params`: the parameter table (names, defaults, validation, which
  ones need a reload) the node declares and the bag command reads its defaults from;
* :mod:`~stamp_ros.pipeline.frame_cache`: each camera's newest frames and the freshness rule;
* :mod:`~stamp_ros.pipeline.answer_reuse`: continuous mode's "write once, teacher-force next";
* :mod:`~stamp_ros.pipeline.conversations`: multi-turn conversations and their limits;
* :mod:`~stamp_ros.pipeline.results`: the ``Segmentation`` messages, built through a message
  kit (rclpy's classes in the node, rosbags' in the bag);
* :mod:`~stamp_ros.pipeline.detections`: a finished Segmentation as vision_msgs detections, a
  16UC1 label image and TF transforms (``~/detections``, ``~/labels``, ``/tf``), same kits;
* :mod:`~stamp_ros.pipeline.tracking_step`: one tracked frame (working frame, tracker step,
  3D, the ``~/tracks`` message, the overlay) and the grounding of tracks on a model answer.

May import: the engine's result and error types, :mod:`stamp_ros.tracking`,
:mod:`stamp_ros.spatial`, :mod:`stamp_ros.render`, :mod:`stamp_ros.msgs`. Never rclpy or a
message module (import-linter, ``.importlinter``).
"""
