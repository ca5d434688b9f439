"""A finished Segmentation -> the ROS ecosystem's messages: detections, a label image, TF.

``~/result`` and ``~/tracks`` are stamp_ros's own messages; tools written against the common
vocabulary (vision_msgs consumers, label-image viewers, anything that reads TF) get the same
objects from these builders, for the node (:mod:`stamp_ros.ros.ecosystem`, rclpy's classes) and
``stamp-ros bag`` (rosbags' classes) alike. Everything is derived from the *finished*
Segmentation message (plus its numpy masks when the caller still holds them, so they are not
decoded again): a detection can never disagree with the result it comes from.

The conventions, for every output:

* **Detection k is instance k** (same order); its ``id`` is the instance's ``track_id`` when it
  is tracked (non-zero), else ``<request_id>_<k>`` (:func:`detection_id`), and
  ``results[0].hypothesis`` has ``class_id`` = the query text and ``score`` = the instance's.
* **2D boxes are the instance's inclusive pixel box** (``x_min..x_max``, ``y_min..y_max``):
  centre ``((x_min + x_max) / 2, (y_min + y_max) / 2)`` and size ``x_max - x_min + 1`` (pixel
  centres at integer coordinates, so a one-pixel box at column 5 has centre 5.0 and size 1);
  an empty mask (``x_max = -1``) has size 0 (:func:`box_2d`).
* **3D detections** only for instances with ``has_3d``: bbox = ``box_center`` / ``size`` (the
  axis-aligned box of the object's points, in ``frame_id_3d``), hypothesis pose = centroid,
  identity orientation. A Segmentation without any 3D object has no Detection3DArray (as it has
  no ``~/points``/``~/markers``).
* **Label image** (16UC1, little-endian, frame-sized, the frame's header): pixel = k + 1 on
  instance k's mask, 0 elsewhere; where masks overlap the instance listed first keeps the pixel
  (so label k + 1 <-> detection k).
* **TF**: one transform per object with 3D, parent ``frame_id_3d``, child
  ``<tf_prefix><id>``, translation = centroid, **identity rotation** (a mask gives a position,
  not an orientation: an axis-aligned frame at the centroid is the honest answer), stamped with
  the frame's stamp.

The message classes come from a :class:`DetectionKit` (``new`` by type name, and the 16UC1
image), as the Segmentation's come from a :class:`~stamp_ros.pipeline.results.MessageKit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DETECTION_2D_ARRAY",
    "DETECTION_3D_ARRAY",
    "TF_MESSAGE",
    "DetectionKit",
    "box_2d",
    "detection_id",
    "detections_2d",
    "detections_3d",
    "label_image",
    "labels_msg",
    "object_transforms",
    "tf_message",
]

DETECTION_2D_ARRAY = "vision_msgs/msg/Detection2DArray"
DETECTION_3D_ARRAY = "vision_msgs/msg/Detection3DArray"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
LABEL_ENCODING = "16UC1"


class DetectionKit(Protocol):
    """Where the ecosystem's message objects come from (rclpy's or rosbags' classes)."""

    def new(self, msgtype: str) -> Any:
        """An empty message of ``msgtype`` (``pkg/msg/Name``), every field at its default;
        nested messages and message lists mutable."""

    def mono16(self, labels: np.ndarray, header: Any) -> Any:
        """A ``sensor_msgs/msg/Image`` (16UC1, little-endian, step = 2 * width) of an (H, W)
        uint16 array."""


def detection_id(request_id: str, index: int, track_id: int) -> str:
    """The id of instance ``index`` of a result: its track id when tracked, else
    ``<request_id>_<index>``; also the TF child name after ``tf_prefix``."""
    return str(int(track_id)) if track_id else f"{request_id}_{index}"


def box_2d(inst: Any) -> tuple[float, float, float, float]:
    """(centre x, centre y, width, height) of an instance's inclusive pixel box (see the module
    docstring); an empty box (max < min) has size 0."""
    x0, y0, x1, y1 = int(inst.x_min), int(inst.y_min), int(inst.x_max), int(inst.y_max)
    return ((x0 + x1) / 2.0, (y0 + y1) / 2.0, float(max(0, x1 - x0 + 1)),
            float(max(0, y1 - y0 + 1)))


def _hypothesis(kit: Any, query: str, score: float) -> Any:
    hyp = kit.new("vision_msgs/msg/ObjectHypothesisWithPose")
    hyp.hypothesis.class_id = query
    hyp.hypothesis.score = float(score)
    hyp.pose.pose.orientation.w = 1.0  # rosbags' defaults are zeros, rclpy's w = 1: say it
    return hyp


def _ids(seg: Any) -> list[str]:
    return [detection_id(seg.request_id, k, inst.track_id)
            for k, inst in enumerate(seg.instances)]


def detections_2d(seg: Any, kit: DetectionKit) -> Any:
    """``vision_msgs/Detection2DArray`` of a successful Segmentation: its header, one
    Detection2D per instance, in order."""
    out = kit.new(DETECTION_2D_ARRAY)
    out.header = seg.header
    detections = []
    for inst, ident in zip(seg.instances, _ids(seg), strict=True):
        det = kit.new("vision_msgs/msg/Detection2D")
        det.header = seg.header
        det.id = ident
        det.results = [_hypothesis(kit, seg.query, inst.score)]
        cx, cy, w, h = box_2d(inst)
        det.bbox.center.position.x, det.bbox.center.position.y = cx, cy
        det.bbox.center.theta = 0.0
        det.bbox.size_x, det.bbox.size_y = w, h
        detections.append(det)
    out.detections = detections
    return out


def _header_in(kit: Any, seg: Any, frame_id: str) -> Any:
    header = kit.new("std_msgs/msg/Header")
    header.stamp = seg.header.stamp
    header.frame_id = str(frame_id)
    return header


def detections_3d(seg: Any, kit: DetectionKit) -> Any | None:
    """``vision_msgs/Detection3DArray``: one Detection3D per instance with 3D (in order),
    headers in ``frame_id_3d`` at the frame's stamp; None when no instance has 3D."""
    chosen = [(inst, ident) for inst, ident in zip(seg.instances, _ids(seg), strict=True)
              if inst.has_3d]
    if not chosen:
        return None
    out = kit.new(DETECTION_3D_ARRAY)
    out.header = _header_in(kit, seg, chosen[0][0].frame_id_3d)
    detections = []
    for inst, ident in chosen:
        det = kit.new("vision_msgs/msg/Detection3D")
        det.header = _header_in(kit, seg, inst.frame_id_3d)
        det.id = ident
        hyp = _hypothesis(kit, seg.query, inst.score)
        position = hyp.pose.pose.position
        position.x, position.y, position.z = (float(inst.centroid.x), float(inst.centroid.y),
                                              float(inst.centroid.z))
        det.results = [hyp]
        center = det.bbox.center
        center.position.x, center.position.y, center.position.z = (
            float(inst.box_center.x), float(inst.box_center.y), float(inst.box_center.z))
        center.orientation.w = 1.0
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (
            float(inst.size.x), float(inst.size.y), float(inst.size.z))
        detections.append(det)
    out.detections = detections
    return out


def _mask_of(inst: Any) -> np.ndarray:
    """An Instance's mono8 mask as an (H, W) bool array (no copy of the message's bytes)."""
    image = inst.mask
    data = np.frombuffer(memoryview(image.data), np.uint8)
    return data.reshape(int(image.height), int(image.step))[:, : int(image.width)] != 0


def label_image(masks: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint16: k + 1 on mask k, 0 elsewhere; the first listed mask keeps an overlap.
    Written from the last mask to the first, each with one masked copy (no index arrays):
    1080p with three objects is a few milliseconds."""
    labels = np.zeros(size, np.uint16)
    for k in range(len(masks) - 1, -1, -1):
        mask = np.asarray(masks[k])
        if mask.shape != labels.shape:
            raise ValueError(f"mask {k} is {mask.shape[1::-1]}, the frame "
                             f"{labels.shape[1::-1]} (width, height)")
        np.copyto(labels, np.uint16(k + 1), where=mask if mask.dtype == np.bool_ else mask != 0)
    return labels


def labels_msg(seg: Any, kit: DetectionKit, size: tuple[int, int],
               masks: Sequence[np.ndarray] | None = None) -> Any:
    """The label image of a Segmentation (``size`` = the frame's (height, width)); ``masks``
    are its instances' masks when the caller has them (else decoded from the message)."""
    if masks is None:
        masks = [_mask_of(inst) for inst in seg.instances]
    if len(masks) != len(seg.instances):
        raise ValueError(f"{len(masks)} masks for {len(seg.instances)} instances")
    return kit.mono16(label_image(masks, size), seg.header)


def object_transforms(seg: Any, kit: DetectionKit, tf_prefix: str) -> list[Any]:
    """``geometry_msgs/TransformStamped`` per instance with 3D: ``frame_id_3d`` ->
    ``<tf_prefix><id>`` at the centroid, identity rotation, the frame's stamp."""
    out = []
    for inst, ident in zip(seg.instances, _ids(seg), strict=True):
        if not inst.has_3d:
            continue
        tf = kit.new("geometry_msgs/msg/TransformStamped")
        tf.header = _header_in(kit, seg, inst.frame_id_3d)
        tf.child_frame_id = f"{tf_prefix}{ident}"
        t = tf.transform.translation
        t.x, t.y, t.z = float(inst.centroid.x), float(inst.centroid.y), float(inst.centroid.z)
        tf.transform.rotation.w = 1.0
        out.append(tf)
    return out


def tf_message(transforms: list[Any], kit: DetectionKit) -> Any:
    """``tf2_msgs/TFMessage`` holding ``transforms``."""
    msg = kit.new(TF_MESSAGE)
    msg.transforms = list(transforms)
    return msg
