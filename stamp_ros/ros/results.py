"""Engine results -> stamp_ros/Segmentation messages (and error results).

Kept apart from the node so the message layout is tested without spinning anything.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np

from stamp_ros.engine.result import SegInstance, StampResult
from stamp_ros.geometry import Object3D
from stamp_ros.msg import Instance, Segmentation
from stamp_ros.ros.convert import mono8_to_image_msg


def _bytes_array(values: np.ndarray, typecode: str) -> array.array:
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


def instance_msg(inst: SegInstance, header: Any, obj: Object3D | None = None,
                 frame_id_3d: str = "") -> Instance:
    msg = Instance()
    msg.mask = mono8_to_image_msg(inst.mask.astype(bool), header)
    gh, gw = inst.grid.shape
    msg.grid_height, msg.grid_width = int(gh), int(gw)
    msg.grid = _bytes_array(inst.grid.astype(np.uint8).ravel(), "B")
    msg.grid_logits = _bytes_array(inst.logits.astype(np.float32).ravel(), "f")
    msg.x_min, msg.y_min, msg.x_max, msg.y_max = (int(v) for v in inst.bbox)
    msg.area = int(inst.area)
    msg.score = float(inst.score)
    if obj is not None:
        fill_3d(msg, obj, frame_id_3d)
    return msg


def fill_3d(msg: Instance, obj: Object3D, frame_id: str) -> None:
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
) -> Segmentation:
    msg = Segmentation()
    msg.header = header
    msg.request_id = request_id
    msg.query = query
    msg.answer = result.text
    msg.success = True
    msg.model = model
    msg.grid_height, msg.grid_width = (int(v) for v in result.grid_size)
    objects = list(objects) if objects is not None else [None] * len(result.instances)
    msg.instances = [
        instance_msg(inst, header, obj, frame_id_3d)
        for inst, obj in zip(result.instances, objects, strict=True)
    ]
    t = result.timings_ms
    msg.wait_ms = float(wait_ms)
    msg.preprocess_ms = float(convert_ms + t.get("preprocess", 0.0))
    msg.generate_ms = float(t.get("generate", 0.0))
    msg.mask_ms = float(t.get("mask", 0.0))
    msg.postprocess_ms = float(t.get("postprocess", 0.0))
    return msg


def error_msg(*, request_id: str, query: str, error: str, header: Any = None,
              model: str = "", wait_ms: float = 0.0) -> Segmentation:
    msg = Segmentation()
    if header is not None:
        msg.header = header
    msg.request_id = request_id
    msg.query = query
    msg.success = False
    msg.error = error
    msg.model = model
    msg.wait_ms = float(wait_ms)
    return msg
