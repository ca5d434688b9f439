"""The rclpy-bound adapters: everything that creates ROS entities or ROS messages.

* :mod:`~stamp_ros.ros.node`: ``StampNode`` (parameters, lifecycle, entities, topic callbacks);
* :mod:`~stamp_ros.ros.calls`: the ``~/segment`` service and action (calls -> jobs -> answers);
* :mod:`~stamp_ros.ros.requests`: one request from job to published result (``RequestPipeline``);
* :mod:`~stamp_ros.ros.model_processes`: the node's inference processes (start, end, events);
* :mod:`~stamp_ros.ros.activation`: ``activate`` loads the model without holding the executor;
* :mod:`~stamp_ros.ros.camera`: one camera's topics, frame cache and outputs;
* :mod:`~stamp_ros.ros.tracking`: ``TrackStream``, the tracking thread and ``~/tracks``;
* :mod:`~stamp_ros.ros.objects3d`: 3D with tf2, ``~/points`` and ``~/markers``
  (:mod:`~stamp_ros.ros.cloud` builds those messages);
* :mod:`~stamp_ros.ros.input_watch`, :mod:`~stamp_ros.ros.health`,
  :mod:`~stamp_ros.ros.diagnostics`: QoS events, silent inputs, /diagnostics, ``~/self_test``;
* :mod:`~stamp_ros.ros.doctor_probe`: what ``stamp-ros doctor`` measures from outside;
* :mod:`~stamp_ros.ros.ecosystem`: ``~/detections``, ``~/detections_3d``, ``~/labels`` and
  ``/tf`` (lazy; off, with a log line, without vision_msgs / tf2_msgs);
* :mod:`~stamp_ros.ros.kit`: numpy -> rclpy images and the node's message kit;
* :mod:`~stamp_ros.ros.param_descriptors`: the parameter table as rclpy descriptors.

What the node shares with ``stamp-ros bag`` is not here but in :mod:`stamp_ros.pipeline` (and
below), ROS-free. May import: :mod:`stamp_ros.pipeline` and everything below it, rclpy, tf2 and
the message packages; never torch (the model runs in the inference processes) and never the
layers above (client, bag, eval, bench, testing, cli) (import-linter, ``.importlinter``).
"""
