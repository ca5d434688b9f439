"""Depth pairing and 3D lifting for the node: message plumbing around stamp_ros.geometry.

The geometry itself is pure numpy (stamp_ros.geometry); this module only chooses the depth
image for a colour frame, converts messages and applies an optional transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stamp_ros.geometry import (
    CameraIntrinsics,
    Object3D,
    depth_to_metres,
    mask_points,
    quaternion_to_matrix,
    summarise_points,
    transform_points,
)
from stamp_ros.ros.convert import image_msg_to_array


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def pair_depth(header: Any, depth_msgs: Sequence[Any], max_skew: float) -> Any | None:
    """The depth image whose stamp is closest to the colour frame's, within ``max_skew``."""
    t = _seconds(header.stamp)
    best, best_dt = None, max_skew
    for msg in depth_msgs:
        dt = abs(_seconds(msg.header.stamp) - t)
        if dt <= best_dt:
            best, best_dt = msg, dt
    return best


def lift_instances(masks: Sequence[np.ndarray], depth_msg: Any, camera_info: Any,
                   depth_scale: float) -> tuple[list[Object3D | None], list[np.ndarray]]:
    """Per mask: its 3D points (camera optical frame) and their summary (None if too few)."""
    depth_raw = image_msg_to_array(depth_msg)
    if depth_raw.ndim != 2:
        raise ValueError(f"depth image must have one channel, got {depth_msg.encoding}")
    depth_m = depth_to_metres(depth_raw, depth_scale if depth_raw.dtype.kind in "ui" else None)
    intrinsics = CameraIntrinsics.from_k(camera_info.k, camera_info.width or depth_raw.shape[1],
                                         camera_info.height or depth_raw.shape[0])
    points = [mask_points(m, depth_m, intrinsics) for m in masks]
    return [summarise_points(p) for p in points], points


def transform_objects(objects: Sequence[Object3D | None], points: Sequence[np.ndarray],
                      quaternion: Sequence[float], translation: Sequence[float]
                      ) -> tuple[list[Object3D | None], list[np.ndarray]]:
    """Move points into another frame and re-summarise them (an axis-aligned box is not
    preserved by a rotation, so it is recomputed from the moved points)."""
    rotation = quaternion_to_matrix(quaternion)
    moved = [transform_points(p, rotation, translation) if len(p) else p for p in points]
    return [summarise_points(p) if o is not None else None
            for o, p in zip(objects, moved, strict=True)], moved
