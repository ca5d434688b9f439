"""The node's outputs in the ROS ecosystem's vocabulary: vision_msgs detections, the instance
label image and one TF frame per object (issue 30).

The messages are built ROS-free from the finished Segmentation
(:mod:`stamp_ros.pipeline.detections`, with the node's rclpy kit); this module only creates the
publishers and decides what to publish:

* ``~/detections`` (vision_msgs/Detection2DArray), ``~/detections_3d`` (Detection3DArray,
  when an object has 3D) and ``~/labels`` (16UC1) for every successful ``~/result``, and the
  same under ``~/tracks/`` for every ``~/tracks`` frame. Each is built only while someone
  subscribes to it (as ``~/overlay`` is): a node nobody listens to pays nothing.
* ``/tf`` (tf2_msgs/TFMessage) while ``publish_tf`` is true: every object with 3D as
  ``<tf_prefix><id>`` in its ``frame_id_3d``. While a camera is tracking, its transforms come
  from ``~/tracks`` (camera rate, track ids) and not from ``~/result`` too: the answered frame
  is also a tracked frame, and the same child at the same stamp twice makes tf2 listeners warn.
  The publisher has tf2_ros's TransformBroadcaster QoS (reliable, volatile, depth 100); tf2_ros
  itself is not needed.

vision_msgs and tf2_msgs are optional: without them the node runs, creates no publisher for the
outputs they carry, and says once which outputs are off and why (:func:`unavailable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from stamp_ros.pipeline.detections import (
    detections_2d,
    detections_3d,
    labels_msg,
    object_transforms,
    tf_message,
)
from stamp_ros.ros.kit import rclpy_kit

__all__ = ["DETECTION_TYPES", "TF_QOS", "configure_tf", "publish_detections", "unavailable"]

try:
    from vision_msgs.msg import Detection2DArray, Detection3DArray
except ImportError as exc:
    Detection2DArray = Detection3DArray = None
    _VISION_ERROR = f"vision_msgs is not importable ({exc})"
else:
    _VISION_ERROR = ""
try:
    from tf2_msgs.msg import TFMessage
except ImportError as exc:
    TFMessage = None
    _TF_ERROR = f"tf2_msgs is not importable ({exc})"
else:
    _TF_ERROR = ""

DETECTION_TYPES: tuple[type | None, ...] = (Detection2DArray, Detection3DArray, Image) * 2
"""The types of camera.OUTPUTS' ``detections``, ``detections_3d``, ``labels`` and their
``tracks/`` twins, in that order; None where the package is missing (no publisher then)."""

TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
"""tf2_ros's DynamicBroadcasterQoS: what every /tf listener expects."""

_told = False


def unavailable() -> list[str]:
    """One line per missing package: which outputs are off, and why."""
    lines = []
    if _VISION_ERROR:
        lines.append(f"~/detections and ~/detections_3d (also under ~/tracks/) are off: "
                     f"{_VISION_ERROR}")
    if _TF_ERROR:
        lines.append(f"/tf (publish_tf) is off: {_TF_ERROR}")
    return lines


def configure_tf(logger: Any, publisher: Callable[..., Any],
                 cameras: Iterable[Any]) -> list[Any]:
    """At configure: say once per process which outputs are off, and create the ``/tf``
    publisher with ``publisher(msg_type, topic, qos, role)`` (the node's, which adds the
    QoS-event callbacks; shared by every camera, as its ``outputs["tf"]``) when tf2_msgs is
    here. Returns the publishers created (the node destroys them at cleanup)."""
    global _told
    if not _told:
        _told = True
        for line in unavailable():
            logger.warning(line)
    if TFMessage is None:
        return []
    pub = publisher(TFMessage, "/tf", TF_QOS, "tf")
    for camera in cameras:
        camera.outputs["tf"] = pub
    return [pub]


def _wanted(pub: Any) -> bool:
    return pub is not None and pub.get_subscription_count() > 0


def publish_detections(outputs: dict[str, Any], seg: Any, size: tuple[int, int],
                       masks: list | None, param: Callable[[str], Any], *, prefix: str = "",
                       tf: bool = True) -> None:
    """A successful Segmentation's detections, 3D detections and label image on the camera's
    ``<prefix>detections`` ... (each only while subscribed), and its objects on ``/tf`` when
    ``tf`` and ``publish_tf``. ``size`` is the frame's (height, width), ``masks`` the
    instances' numpy masks (None: decoded from ``seg``)."""
    kit = rclpy_kit()
    pub = outputs.get(f"{prefix}detections")
    if _wanted(pub):
        pub.publish(detections_2d(seg, kit))
    pub = outputs.get(f"{prefix}detections_3d")
    if _wanted(pub):
        msg = detections_3d(seg, kit)
        if msg is not None:
            pub.publish(msg)
    pub = outputs.get(f"{prefix}labels")
    if _wanted(pub):
        pub.publish(labels_msg(seg, kit, size, masks))
    pub = outputs.get("tf")
    if tf and pub is not None and param("publish_tf"):
        transforms = object_transforms(seg, kit, str(param("tf_prefix")))
        if transforms:
            pub.publish(tf_message(transforms, kit))
