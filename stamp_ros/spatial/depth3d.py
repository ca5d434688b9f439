"""Depth pairing and 3D lifting for the node and ``stamp-ros bag``: message plumbing around
stamp_ros.spatial.geometry.

The geometry itself is pure numpy (stamp_ros.spatial.geometry); this module chooses the depth
image for a colour frame, converts messages, applies an optional transform and says, per object,
why it has no 3D (:mod:`stamp_ros.spatial.status3d`). No rclpy: the bag command uses it with
rosbags messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stamp_ros.msgs.convert import ImageConversionError, image_msg_to_array
from stamp_ros.spatial import status3d
from stamp_ros.spatial.geometry import (
    MIN_POINTS,
    CameraIntrinsics,
    Object3D,
    depth_to_metres,
    mask_points,
    quaternion_to_matrix,
    summarise_points,
    transform_points,
    valid_depth_fraction,
)
from stamp_ros.spatial.status3d import Reason3D


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def pair_stamp(t: float, depth_stamps: Sequence[float], max_skew: float) -> int | None:
    """The pairing rule, on stamps (seconds): the index of the depth stamp closest to the colour
    frame's ``t``, within ``max_skew`` (of equally close ones the last); None when none is that
    close (the frame gets no 3D). The node and ``stamp-ros bag`` apply it through
    :func:`pair_depth`, ``stamp-ros doctor`` to the stamps it measured."""
    best, best_dt = None, max_skew
    for k, stamp in enumerate(depth_stamps):
        dt = abs(stamp - t)
        if dt <= best_dt:
            best, best_dt = k, dt
    return best


def nearest_stamp_skew(t: float, depth_stamps: Sequence[float]) -> float | None:
    """Seconds from the colour frame's ``t`` to the closest depth stamp (None: no depth)."""
    return min((abs(stamp - t) for stamp in depth_stamps), default=None)


def pair_depth(header: Any, depth_msgs: Sequence[Any], max_skew: float) -> Any | None:
    """The depth image whose stamp is closest to the colour frame's, within ``max_skew``
    (:func:`pair_stamp`)."""
    k = pair_stamp(_seconds(header.stamp),
                   [_seconds(msg.header.stamp) for msg in depth_msgs], max_skew)
    return None if k is None else depth_msgs[k]


def nearest_skew(header: Any, depth_msgs: Sequence[Any]) -> float | None:
    """Seconds between the colour frame and the closest depth image (None: no depth)."""
    return nearest_stamp_skew(_seconds(header.stamp),
                              [_seconds(msg.header.stamp) for msg in depth_msgs])


@dataclass
class Lift3D:
    """The 3D outcome of one frame's masks: per instance its summary (None: no 3D), its points,
    the share of its pixels with valid depth and, when it has no 3D, the reason."""

    objects: list[Object3D | None]
    points: list[np.ndarray]
    fractions: list[float]
    reasons: list[Reason3D | None]
    frame_id: str = ""
    depth_msg: Any = field(default=None, repr=False)

    @classmethod
    def withheld(cls, count: int, reason: Reason3D, frame_id: str = "") -> Lift3D:
        """No object of the frame has 3D, all for the same reason."""
        empty = np.empty((0, 3), np.float32)
        return cls([None] * count, [empty] * count, [0.0] * count, [reason] * count, frame_id)

    def withhold(self, reason: Reason3D) -> None:
        """Drop the 3D of every object (a failed transform): those that had it get ``reason``,
        the others keep their own."""
        self.reasons = [reason if o is not None else r
                        for o, r in zip(self.objects, self.reasons, strict=True)]
        self.objects = [None] * len(self.objects)
        self.points = [np.empty((0, 3), np.float32)] * len(self.points)

    @property
    def any_3d(self) -> bool:
        return any(o is not None for o in self.objects)


def lift_frame(header: Any, masks: Sequence[np.ndarray], depth_msgs: Sequence[Any],
               camera_info: Any, *, depth_max_skew: float, depth_scale: float,
               max_pixels: int | None = None) -> Lift3D:
    """Pair the frame with its depth image and lift every mask, or say why not (camera optical
    frame; :func:`transform_objects` moves the result). ``max_pixels``: each mask's points are
    sampled on a grid of at most that many (:func:`~stamp_ros.spatial.geometry.mask_points`;
    None: every pixel)."""
    count = len(masks)
    if not depth_msgs:
        return Lift3D.withheld(count, status3d.no_depth())
    if camera_info is None:
        return Lift3D.withheld(count, status3d.no_camera_info())
    depth_msg = pair_depth(header, depth_msgs, depth_max_skew)
    if depth_msg is None:
        skew = nearest_skew(header, depth_msgs) or 0.0
        return Lift3D.withheld(count, status3d.depth_skew(skew, depth_max_skew))
    try:
        depth_raw = image_msg_to_array(depth_msg)
        if depth_raw.ndim != 2:
            raise ValueError(f"depth image must have one channel, got {depth_msg.encoding}")
        depth_m = depth_to_metres(depth_raw,
                                  depth_scale if depth_raw.dtype.kind in "ui" else None)
        intrinsics = CameraIntrinsics.from_k(camera_info.k,
                                             camera_info.width or depth_raw.shape[1],
                                             camera_info.height or depth_raw.shape[0])
    except (ImageConversionError, ValueError, TypeError) as exc:
        return Lift3D.withheld(count, status3d.depth_unusable(str(exc)))
    lift = Lift3D([], [], [], [], header.frame_id, depth_msg)
    for mask in masks:
        points = mask_points(mask, depth_m, intrinsics, max_pixels=max_pixels)
        obj = summarise_points(points)
        lift.objects.append(obj)
        lift.points.append(points)
        lift.fractions.append(valid_depth_fraction(mask, depth_m))
        if obj is not None:
            lift.reasons.append(None)
        elif not np.any(mask):
            lift.reasons.append(status3d.empty_mask())
        else:
            lift.reasons.append(status3d.few_points(len(points), MIN_POINTS))
    return lift


def transform_objects(objects: Sequence[Object3D | None], points: Sequence[np.ndarray],
                      quaternion: Sequence[float], translation: Sequence[float]
                      ) -> tuple[list[Object3D | None], list[np.ndarray]]:
    """Move points into another frame and re-summarise them (an axis-aligned box is not
    preserved by a rotation, so it is recomputed from the moved points)."""
    rotation = quaternion_to_matrix(quaternion)
    moved = [transform_points(p, rotation, translation) if len(p) else p for p in points]
    return [summarise_points(p) if o is not None else None
            for o, p in zip(objects, moved, strict=True)], moved
