"""What is wrong with the node's inputs, and the one-line fix: rules without rclpy.

The node's silent-input warnings, its per-input /diagnostics statuses and every verdict line of
``stamp-ros doctor`` are computed here from plain facts, so they always agree and are tested
without ROS:

* :mod:`~stamp_ros.diagnosis.input_verdict`: the verdict rules (no publisher, wrong type, QoS
  mismatch, matched but silent, stopped) and their fixes;
* :mod:`~stamp_ros.diagnosis.input_monitor`: arrivals on one topic (rate, age, silence);
* :mod:`~stamp_ros.diagnosis.qos_compat`: which QoS policies keep two endpoints apart;
* :mod:`~stamp_ros.diagnosis.qos_graph`: rclpy's endpoint and graph objects as plain facts
  (duck-typed: it takes what rclpy returns but imports nothing of it);
* :mod:`~stamp_ros.diagnosis.similar_topics`: topics whose names look like the one awaited;
* :mod:`~stamp_ros.diagnosis.depth_units`: is a depth image in the units the node assumes;
* :mod:`~stamp_ros.diagnosis.probe`: the doctor's data model (what a probe measured) and the
  rules it judges colour/depth pairing by (the node's own).

May import: the standard library, numpy, and :mod:`stamp_ros.spatial` (the node's colour/depth
pairing rule). Never rclpy or a message module (import-linter, ``.importlinter``).
"""
