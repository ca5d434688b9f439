"""Message types for bags without ROS: a rosbags typestore that also knows ``stamp_ros/msg/*``.

rosbags ships the standard ROS 2 interfaces; ours are parsed from the package's own ``.msg``
files, so the output bag carries the same definitions (and the same RIHS01 type hashes) as the
node's generated interfaces, and Foxglove or ``ros2 bag play`` decode them without this package.
The ``.msg`` files are found wherever the package was installed from: pip package data, the
source checkout, or a ROS install's ``share/stamp_ros/msg``. The vision_msgs definitions of the
detection topics come from the repository's ``interfaces/vision_msgs/msg`` (upstream's files) or
a ROS install's ``share/vision_msgs/msg``; rosbags' own store already has tf2_msgs.

:class:`RosbagsKit` is the :class:`stamp_ros.pipeline.results.MessageKit` for rosbags' message
dataclasses, so ``results.segmentation_msg`` builds the bag's messages exactly as the node's.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

from stamp_ros.engine.errors import InputError

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "IMAGE",
    "INSTANCE",
    "SEGMENTATION",
    "STRING",
    "RosbagsKit",
    "msg_dir",
    "new_message",
    "typestore",
    "vision_msg_dir",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
SEGMENTATION = "stamp_ros/msg/Segmentation"
INSTANCE = "stamp_ros/msg/Instance"

STORE = Stores.ROS2_JAZZY
"""The standard definitions used for reading and writing. Image, CompressedImage, CameraInfo,
String and Header are identical (same hashes) from Humble to Kilted; Jazzy is the LTS."""

MSG_DIR_ENV = "STAMP_ROS_MSG_DIR"
"""Overrides where ``Segmentation.msg`` and ``Instance.msg`` are read from."""


def _install_prefixes() -> list[Path]:
    """Where an installed package's ``share/<pkg>/msg`` may be: this interpreter's prefix and
    every ``AMENT_PREFIX_PATH`` entry (a ROS install)."""
    prefixes = [Path(sys.prefix)]
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return prefixes


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    found = []
    if os.environ.get(MSG_DIR_ENV):
        found.append(Path(os.environ[MSG_DIR_ENV]))
    found += [
        here / "interfaces",  # pip install: setup.py maps the repository's msg/ here
        here.parents[1] / "msg",  # source checkout: <repo>/stamp_ros/bag -> <repo>/msg
    ]
    found += [p / "share" / "stamp_ros" / "msg" for p in _install_prefixes()]  # ROS install
    return found


def msg_dir() -> Path:
    """The directory holding ``Segmentation.msg`` and ``Instance.msg`` (InputError if none)."""
    for path in _candidates():
        if (path / "Segmentation.msg").is_file() and (path / "Instance.msg").is_file():
            return path
    raise InputError(
        "the stamp_ros message definitions (Segmentation.msg, Instance.msg) are not installed; "
        f"reinstall the package or point {MSG_DIR_ENV} at its msg/ directory"
    )


def vision_msg_dir() -> Path | None:
    """The directory holding vision_msgs' ``Detection2DArray.msg`` and the rest (None if no
    copy is found: the bag then writes no detection topics and says so)."""
    here = Path(__file__).resolve().parent
    for path in [here / "interfaces" / "vision_msgs" / "msg",  # pip install (setup.py)
                 here.parents[1] / "interfaces" / "vision_msgs" / "msg",  # source checkout
                 *(p / "share" / "vision_msgs" / "msg" for p in _install_prefixes())]:
        if (path / "Detection2DArray.msg").is_file():
            return path
    return None


@cache
def typestore() -> Typestore:
    """The standard ROS 2 types plus ``stamp_ros/msg/Segmentation`` and ``Instance``, and
    ``vision_msgs/msg/*`` when their definitions are found (:func:`vision_msg_dir`)."""
    store = get_typestore(STORE)
    folder = msg_dir()
    types: dict[str, Any] = {}
    for name in ("Instance", "Segmentation"):
        text = (folder / f"{name}.msg").read_text(encoding="utf-8")
        types.update(get_types_from_msg(text, f"stamp_ros/msg/{name}"))
    vision = vision_msg_dir()
    if vision is not None and "vision_msgs/msg/Detection2DArray" not in store.types:
        for path in sorted(vision.glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"),
                                            f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


# How rosbags represents a primitive sequence: a numpy array of this dtype.
_SEQ_DTYPES = {
    "bool": np.bool_, "byte": np.int8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


def _default_base(base: str) -> Any:
    if base == "bool":
        return False
    if base in ("string", "wstring"):
        return ""
    if base.startswith("float"):
        return 0.0
    return 0


def _default(store: Typestore, desc: tuple) -> Any:
    kind, rest = desc
    if kind == Nodetype.BASE:
        return _default_base(rest[0])
    if kind == Nodetype.NAME:
        return new_message(store, rest)
    sub, length = rest
    if sub[0] == Nodetype.BASE and sub[1][0] in _SEQ_DTYPES:
        size = length if kind == Nodetype.ARRAY else 0
        return np.zeros(size, dtype=_SEQ_DTYPES[sub[1][0]])
    if kind == Nodetype.ARRAY:
        return [_default(store, sub) for _ in range(length)]
    return []


def new_message(store: Typestore, msgtype: str) -> Any:
    """A rosbags message of ``msgtype`` with every field at its ROS default (zeros, "", empty
    sequences, nested messages likewise), as an rclpy constructor without arguments gives."""
    _, fields = store.fielddefs[msgtype]
    cls = store.types[msgtype]
    return cls(**{name: _default(store, desc) for name, desc in fields})


class RosbagsKit:
    """:class:`stamp_ros.pipeline.results.MessageKit` and
    :class:`stamp_ros.pipeline.detections.DetectionKit` for rosbags' dataclasses (numpy
    sequences)."""

    def __init__(self, store: Typestore | None = None) -> None:
        self.store = store or typestore()
        self._image = self.store.types[IMAGE]

    def segmentation(self) -> Any:
        return new_message(self.store, SEGMENTATION)

    def instance(self) -> Any:
        return new_message(self.store, INSTANCE)

    def header(self) -> Any:
        return new_message(self.store, "std_msgs/msg/Header")

    def uint8_seq(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)

    def float32_seq(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.float32).reshape(-1)

    def uint32_seq(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.uint32).reshape(-1)

    def new(self, msgtype: str) -> Any:
        """:class:`~stamp_ros.pipeline.detections.DetectionKit`: an empty message."""
        return new_message(self.store, msgtype)

    def mono16(self, labels: np.ndarray, header: Any) -> Any:
        """An (H, W) uint16 array as a 16UC1 little-endian Image (the label image)."""
        a = np.asarray(labels)
        if a.ndim != 2 or a.dtype.kind != "u" or a.dtype.itemsize != 2:
            raise ValueError(f"expected an (H, W) uint16 array, got {a.dtype} {a.shape}")
        h, w = a.shape
        data = np.ascontiguousarray(a, dtype="<u2").reshape(-1).view(np.uint8)
        return self._image(header if header is not None else self.header(), h, w, "16UC1", 0,
                           2 * w, data)

    def mono8(self, mask: np.ndarray, header: Any) -> Any:
        """Same pixels as :func:`stamp_ros.ros.kit.mono8_to_image_msg`: uint8 as is,
        bool as 0/255."""
        m = np.asarray(mask)
        if m.ndim != 2 or m.dtype not in (np.bool_, np.uint8):
            raise ValueError(f"expected an (H, W) uint8 or bool mask, got {m.dtype} {m.shape}")
        if m.dtype == np.bool_:
            m = m.view(np.uint8) * np.uint8(255)
        h, w = m.shape
        return self._image(header if header is not None else self.header(), h, w, "mono8", 0,
                           w, self.uint8_seq(m))

    def rgb8(self, rgb: np.ndarray, header: Any) -> Any:
        """An (H, W, 3) uint8 RGB frame as an rgb8 Image (the overlay)."""
        a = np.asarray(rgb)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 array, got {a.dtype} {a.shape}")
        h, w = a.shape[:2]
        return self._image(header if header is not None else self.header(), h, w, "rgb8", 0,
                           w * 3, self.uint8_seq(a))
