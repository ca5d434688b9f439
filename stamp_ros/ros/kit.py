"""numpy -> rclpy messages: images, and the message kit the node's results are built with.

:mod:`stamp_ros.pipeline.results` fills ``Segmentation`` messages for the node and the bag alike
through a :class:`~stamp_ros.pipeline.results.MessageKit` (and the ecosystem's messages through
a :class:`~stamp_ros.pipeline.detections.DetectionKit`); :class:`RclpyKit` is the node's, with
rclpy's generated classes. Outgoing data is assigned as ``array.array`` filled with
``frombytes``: Humble asserts field types on every assignment, where ``bytes`` of a 1080p frame
take ~0.7 s to check and an ndarray is rejected outright.
"""

from __future__ import annotations

import array
import importlib
from typing import Any

import numpy as np

__all__ = ["RclpyKit", "build_image_msg", "mono8_to_image_msg", "mono16_to_image_msg",
           "rclpy_kit", "rgb_to_image_msg"]


def build_image_msg(
    header: Any, height: int, width: int, encoding: str, step: int, bigendian: bool, raw: Any
) -> Any:
    """A ``sensor_msgs/Image`` from raw bytes, with exactly the Python types Humble accepts.

    Public so that every writer of image messages (the ones below, and the any-layout test
    builder in :mod:`stamp_ros.testing.images`) goes through the one place that knows Humble's
    field assertions.
    """
    from sensor_msgs.msg import Image

    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = int(height)
    msg.width = int(width)
    msg.encoding = str(encoding)
    msg.is_bigendian = 1 if bigendian else 0
    msg.step = int(step)
    data = array.array("B")
    data.frombytes(raw)  # one copy; raw is any contiguous byte buffer
    msg.data = data
    return msg


def _flat_bytes(a: np.ndarray) -> np.ndarray:
    """A flat uint8 view of ``a`` (copying only if it is not C-contiguous)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def rgb_to_image_msg(rgb: np.ndarray, header: Any = None, encoding: str = "rgb8") -> Any:
    """An (H, W, 3) uint8 RGB array as a ``sensor_msgs/Image`` (``rgb8`` or ``bgr8``).

    ``header`` is attached as is (``None``: an empty header), so results stay stamped with
    the source frame's time and frame_id.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    if encoding == "bgr8":
        rgb = rgb[..., ::-1]
    elif encoding != "rgb8":
        raise ValueError(f"rgb_to_image_msg writes rgb8 or bgr8, not {encoding!r}")
    h, w = rgb.shape[:2]
    return build_image_msg(header, h, w, encoding, w * 3, False, _flat_bytes(rgb))


def mono8_to_image_msg(mask_uint8: np.ndarray, header: Any = None) -> Any:
    """An (H, W) mask as a ``mono8`` ``sensor_msgs/Image``.

    uint8 values are sent unchanged (use 0/255 for a mask RViz shows visibly); a bool mask is
    written as 0/255 since a 0/1 image looks all black.
    """
    mask = np.asarray(mask_uint8)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8) * np.uint8(255)
    elif mask.dtype != np.uint8:
        raise ValueError(f"expected a uint8 or bool mask, got {mask.dtype}")
    h, w = mask.shape
    return build_image_msg(header, h, w, "mono8", w, False, _flat_bytes(mask))


def mono16_to_image_msg(labels: np.ndarray, header: Any = None) -> Any:
    """An (H, W) uint16 array as a ``16UC1`` little-endian ``sensor_msgs/Image`` (the label
    image: step = 2 * width)."""
    a = np.asarray(labels)
    if a.ndim != 2 or a.dtype.kind != "u" or a.dtype.itemsize != 2:
        raise ValueError(f"expected an (H, W) uint16 array, got {a.dtype} {a.shape}")
    h, w = a.shape
    little = a.astype("<u2", copy=False)
    return build_image_msg(header, h, w, "16UC1", 2 * w, False, _flat_bytes(little))


def _bytes_array(values: np.ndarray, typecode: str) -> array.array:
    out = array.array(typecode)
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


class RclpyKit:
    """The node's kit: rclpy's generated classes; sequences as ``array.array``, the one type
    Humble's field assertions accept without a per-element check."""

    def __init__(self) -> None:
        from stamp_ros.msg import Instance, Segmentation

        self._instance, self._segmentation = Instance, Segmentation
        self._classes: dict[str, type] = {}

    def segmentation(self) -> Any:
        return self._segmentation()

    def instance(self) -> Any:
        return self._instance()

    def mono8(self, mask: np.ndarray, header: Any) -> Any:
        return mono8_to_image_msg(mask, header)

    def new(self, msgtype: str) -> Any:
        """:class:`~stamp_ros.pipeline.detections.DetectionKit`: an empty message of
        ``pkg/msg/Name`` (ImportError when its package is not installed)."""
        cls = self._classes.get(msgtype)
        if cls is None:
            package, _, name = msgtype.split("/")
            cls = self._classes[msgtype] = getattr(importlib.import_module(f"{package}.msg"),
                                                   name)
        return cls()

    def mono16(self, labels: np.ndarray, header: Any) -> Any:
        return mono16_to_image_msg(labels, header)

    def uint8_seq(self, values: np.ndarray) -> array.array:
        return _bytes_array(np.asarray(values, dtype=np.uint8), "B")

    def float32_seq(self, values: np.ndarray) -> array.array:
        return _bytes_array(np.asarray(values, dtype=np.float32), "f")

    def uint32_seq(self, values: np.ndarray) -> array.array:
        return _bytes_array(np.asarray(values, dtype=np.uint32), "I")


_RCLPY_KIT: RclpyKit | None = None


def rclpy_kit() -> RclpyKit:
    """The shared rclpy kit, created on first use (imports the generated interfaces)."""
    global _RCLPY_KIT
    if _RCLPY_KIT is None:
        _RCLPY_KIT = RclpyKit()
    return _RCLPY_KIT
