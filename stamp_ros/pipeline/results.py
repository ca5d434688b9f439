"""Engine results -> stamp_ros/Segmentation messages (and error results).

Kept apart from the node so the message layout is tested without spinning anything. The same
functions build the node's rclpy messages and the ``stamp-ros bag`` command's rosbags messages:
the message classes come from a :class:`MessageKit` (:class:`stamp_ros.ros.kit.RclpyKit` in the
node, :class:`stamp_ros.bag.interfaces.RosbagsKit` in the bag), so the offline path never imports
rclpy while both fill every field with exactly the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stamp_ros.engine.result import SegInstance, StampResult
from stamp_ros.spatial.geometry import Object3D
from stamp_ros.spatial.status3d import no_depth
from stamp_ros.tracking.state import OCCLUDED, REIDENTIFIED, TRACKED

__all__ = [
    "MessageKit",
    "ModelAnswer",
    "error_msg",
    "fill_3d",
    "instance_msg",
    "mark_tracked",
    "segmentation_msg",
    "tracks_msg",
]


class MessageKit(Protocol):
    """Where the message objects come from: empty messages and the sequence field values.

    Every message returned must be mutable with mutable nested messages (``msg.centroid.x =``),
    as rclpy's and rosbags' classes are.
    """

    def segmentation(self) -> Any:
        """An empty ``stamp_ros/msg/Segmentation``."""

    def instance(self) -> Any:
        """An empty ``stamp_ros/msg/Instance``."""

    def mono8(self, mask: np.ndarray, header: Any) -> Any:
        """A ``sensor_msgs/msg/Image`` (mono8) of an (H, W) mask; bool is written as 0/255."""

    def uint8_seq(self, values: np.ndarray) -> Any:
        """The value of a ``uint8[]`` field holding ``values``."""

    def float32_seq(self, values: np.ndarray) -> Any:
        """The value of a ``float32[]`` field holding ``values``."""

    def uint32_seq(self, values: np.ndarray) -> Any:
        """The value of a ``uint32[]`` field holding ``values``."""


TRACK_STATE_CODES = {TRACKED: 1, OCCLUDED: 2, REIDENTIFIED: 3}
"""The tracker's state names as ``Instance.track_state`` (TRACK_TRACKED ... TRACK_REIDENTIFIED;
TRACK_NONE = 0 when not tracked)."""


def instance_msg(inst: SegInstance, header: Any, obj: Object3D | None = None,
                 frame_id_3d: str = "", *, kit: MessageKit,
                 status_3d: str = "", valid_depth_fraction: float = 0.0) -> Any:
    """One Instance; without ``obj`` its ``status_3d`` says why (``status_3d``, by default
    "no depth received")."""
    msg = kit.instance()
    msg.mask = kit.mono8(inst.mask.astype(bool), header)
    gh, gw = inst.grid.shape
    msg.grid_height, msg.grid_width = int(gh), int(gw)
    msg.grid = kit.uint8_seq(inst.grid.astype(np.uint8).ravel())
    msg.grid_logits = kit.float32_seq(inst.logits.astype(np.float32).ravel())
    msg.x_min, msg.y_min, msg.x_max, msg.y_max = (int(v) for v in inst.bbox)
    msg.area = int(inst.area)
    msg.score = float(inst.score)
    set_3d(msg, obj, frame_id_3d, status_3d, valid_depth_fraction)
    return msg


def set_3d(msg: Any, obj: Object3D | None, frame_id: str, status_3d: str,
           valid_depth_fraction: float) -> None:
    """An Instance's 3D fields: the summary of ``obj``, or without one the reason
    (``status_3d``, by default "no depth received"); the valid-depth share either way."""
    msg.valid_depth_fraction = float(valid_depth_fraction)
    if obj is not None:
        fill_3d(msg, obj, frame_id)
    else:
        msg.status_3d = status_3d or no_depth().text


def fill_3d(msg: Any, obj: Object3D, frame_id: str) -> None:
    msg.has_3d = True
    msg.frame_id_3d = frame_id
    msg.centroid.x, msg.centroid.y, msg.centroid.z = (float(v) for v in obj.centroid)
    msg.box_center.x, msg.box_center.y, msg.box_center.z = (float(v) for v in obj.box_center)
    msg.size.x, msg.size.y, msg.size.z = (float(v) for v in obj.size)
    msg.num_points = int(obj.n_points)


def segmentation_msg(
    *,
    request_id: str,
    query: str,
    header: Any,
    result: StampResult,
    model: str,
    wait_ms: float,
    convert_ms: float,
    objects: Sequence[Object3D | None] | None = None,
    frame_id_3d: str = "",
    reasons_3d: Sequence[str] | None = None,
    depth_fractions: Sequence[float] | None = None,
    kit: MessageKit,
) -> Any:
    """A successful result; ``objects`` (3D per instance or None), ``reasons_3d`` (why an
    instance has none) and ``depth_fractions`` (valid-depth share of its mask) as lifted."""
    msg = kit.segmentation()
    msg.header = header
    msg.request_id = request_id
    msg.query = query
    msg.answer = result.text
    msg.success = True
    msg.model = model
    msg.grid_height, msg.grid_width = (int(v) for v in result.grid_size)
    count = len(result.instances)
    objects = list(objects) if objects is not None else [None] * count
    reasons = list(reasons_3d) if reasons_3d is not None else [""] * count
    fractions = list(depth_fractions) if depth_fractions is not None else [0.0] * count
    msg.instances = [
        instance_msg(inst, header, obj, frame_id_3d, kit=kit, status_3d=reason,
                     valid_depth_fraction=fraction)
        for inst, obj, reason, fraction in zip(result.instances, objects, reasons, fractions,
                                               strict=True)
    ]
    t = result.timings_ms
    msg.wait_ms = float(wait_ms)
    msg.preprocess_ms = float(convert_ms + t.get("preprocess", 0.0))
    msg.generate_ms = float(t.get("generate", 0.0))
    msg.mask_ms = float(t.get("mask", 0.0))
    msg.postprocess_ms = float(t.get("postprocess", 0.0))
    return msg


def error_msg(*, request_id: str, query: str, error: str, header: Any = None,
              model: str = "", wait_ms: float = 0.0, kit: MessageKit) -> Any:
    msg = kit.segmentation()
    if header is not None:
        msg.header = header
    msg.request_id = request_id
    msg.query = query
    msg.success = False
    msg.error = error
    msg.model = model
    msg.wait_ms = float(wait_ms)
    return msg


@dataclass(frozen=True)
class ModelAnswer:
    """What every ``~/tracks`` message repeats from the model answer its tracks were last
    grounded on (kept by the tracker as its ``grounding``)."""

    stamp: Any
    """builtin_interfaces/Time of the answered frame (``model_stamp``)."""
    answer: str
    answer_reused: bool
    request_id: str


def tracks_msg(*, seq: int, header: Any, query: str, model: str, tracks: Any,
               objects: Sequence[Object3D | None] | None = None, frame_id_3d: str = "",
               reasons_3d: Sequence[str] | None = None,
               depth_fractions: Sequence[float] | None = None,
               timings_ms: dict[str, float] | None = None,
               kit: MessageKit) -> Any:
    """The ``~/tracks`` Segmentation of one frame from the tracker's
    :class:`~stamp_ros.tracking.FrameTracks`: every live track as an Instance with its
    ``track_id``, the frame's own header, ``propagated`` and ``model_stamp``; its 3D (or the
    reason it has none) as :func:`segmentation_msg` fills it. Tracked instances carry no patch
    grid (that is the model's, on ``~/result``)."""
    answer: ModelAnswer = tracks.grounding
    msg = kit.segmentation()
    msg.header = header
    msg.request_id = f"t{seq}"
    msg.query = query
    msg.answer = answer.answer
    msg.success = True
    msg.model = model
    msg.answer_reused = bool(answer.answer_reused)
    msg.propagated = bool(tracks.propagated)
    msg.model_stamp = answer.stamp
    count = len(tracks.objects)
    objects = list(objects) if objects is not None else [None] * count
    reasons = list(reasons_3d) if reasons_3d is not None else [""] * count
    fractions = list(depth_fractions) if depth_fractions is not None else [0.0] * count
    instances = []
    for tracked, obj, reason, fraction in zip(tracks.objects, objects, reasons, fractions,
                                              strict=True):
        inst = kit.instance()
        inst.mask = kit.mono8(tracked.mask, header)
        inst.x_min, inst.y_min, inst.x_max, inst.y_max = (int(v) for v in tracked.bbox)
        inst.area = int(tracked.area)
        inst.score = float(tracked.score)
        inst.track_id = int(tracked.track_id)
        set_3d(inst, obj, frame_id_3d, reason, fraction)
        set_track_state(inst, tracked, has_3d=obj is not None)
        instances.append(inst)
    msg.instances = instances
    msg.lost_track_ids = kit.uint32_seq(
        np.array([h.track_id for h in getattr(tracks, "hidden", ())], np.uint32))
    for name, value in (timings_ms or {}).items():
        setattr(msg, f"{name}_ms", float(value))
    return msg


def set_track_state(inst: Any, tracked: Any, *, has_3d: bool) -> None:
    """An Instance's trust fields from the tracker's :class:`~stamp_ros.tracking.TrackedObject`:
    ``track_state``, ``track_ambiguous``, ``track_age`` and, with 3D, the Kalman-filtered
    ``track_position``/``track_velocity`` (left zero without 3D on this frame)."""
    inst.track_state = TRACK_STATE_CODES.get(tracked.state, TRACK_STATE_CODES[TRACKED])
    inst.track_ambiguous = bool(getattr(tracked, "ambiguous_with", ()))
    inst.track_age = float(tracked.age)
    if has_3d and tracked.position_3d is not None and tracked.velocity_3d is not None:
        inst.track_position.x, inst.track_position.y, inst.track_position.z = (
            float(v) for v in tracked.position_3d)
        inst.track_velocity.x, inst.track_velocity.y, inst.track_velocity.z = (
            float(v) for v in tracked.velocity_3d)


def mark_tracked(msg: Any, track_ids: Sequence[int],
                 states: dict[int, str] | None = None) -> None:
    """A model answer (``~/result``) in tracking mode: each instance's ``track_id`` and
    ``track_state`` (from the tracker's ``states()``: REIDENTIFIED when the answer gave a
    remembered track its id back; TRACK_NONE for an instance that grounded nothing), and
    ``model_stamp`` = its own stamp (the answer is the grounding)."""
    states = states or {}
    for inst, track_id in zip(msg.instances, track_ids, strict=True):
        inst.track_id = int(track_id)
        inst.track_state = (TRACK_STATE_CODES.get(states.get(int(track_id), TRACKED),
                                                  TRACK_STATE_CODES[TRACKED])
                            if track_id else 0)
    msg.propagated = False
    msg.model_stamp = msg.header.stamp
