"""One camera served by the node: its topic names, its newest frames and its outputs.

The node serves several cameras through one model (``cameras: [front, wrist]``); everything that
belongs to a single camera lives here, so the request pipeline only needs the camera a request
names. No rclpy calls: the node creates the subscriptions and publishers and hands them over.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from typing import Any

from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from stamp_ros.msg import Segmentation
from stamp_ros.pipeline.answer_reuse import AnswerReuse
from stamp_ros.pipeline.frame_cache import FrameCache
from stamp_ros.ros.ecosystem import DETECTION_TYPES

DEPTH_BUFFER = 30
"""Depth images kept for pairing by stamp: one second of a 30 Hz depth stream."""

OUTPUTS = ("result", "answer", "mask", "overlay", "points", "markers", "tracks",
           "detections", "detections_3d", "labels",
           "tracks/detections", "tracks/detections_3d", "tracks/labels")
"""The per-camera output topics (``~/result`` or ``~/<camera>/result`` ...); the last six are
the ecosystem's outputs (:mod:`stamp_ros.ros.ecosystem`), for results and for tracked frames."""

OUTPUT_TYPES: dict[str, type] = {key: t for key, t in zip(OUTPUTS, (
    Segmentation, String, Image, Image, PointCloud2, MarkerArray, Segmentation, *DETECTION_TYPES),
    strict=True) if t is not None}
"""The message type of each output whose package is installed: the node creates a publisher
for these only (vision_msgs is optional)."""


class SerializedImage:
    """A camera message as it came off the wire (CDR bytes), decoded only when a request uses it.

    At 30 Hz 1080p most frames are superseded before any request looks at them; deserialising
    each one would cost ~5 ms of Python time per frame in the executor, competing with the
    inference thread for the GIL.
    """

    __slots__ = ("_lock", "_msg", "msg_type", "raw")

    def __init__(self, raw: bytes, msg_type: type) -> None:
        self.raw = raw
        self.msg_type = msg_type
        self._msg: Any = None
        self._lock = threading.Lock()

    def stamp_ns(self) -> int | None:
        """The header stamp in nanoseconds, read from the CDR bytes without deserialising.

        Image and CompressedImage both start with std_msgs/Header, whose first field is the
        stamp: after the 4-byte encapsulation header come ``int32 sec`` and ``uint32 nanosec``
        in the byte order the encapsulation names (byte 1: 1 = little endian)."""
        raw = self.raw
        if len(raw) < 12:
            return None
        sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
        return sec * 1_000_000_000 + nanosec

    def message(self) -> Any:
        """The deserialised message (decoded once, on first use)."""
        with self._lock:
            if self._msg is None:
                from rclpy.serialization import deserialize_message

                self._msg = deserialize_message(self.raw, self.msg_type)
                self.raw = b""
            return self._msg


def as_message(payload: Any) -> Any:
    """A cached frame's message, whether it was stored serialised or already decoded."""
    return payload.message() if isinstance(payload, SerializedImage) else payload


class Camera:
    """Input topics, frame/depth caches, continuous-mode state and output publishers of one
    camera; the model and the inference worker are shared by all cameras."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames = FrameCache()
        self.depth: deque[Any] = deque(maxlen=DEPTH_BUFFER)
        self.camera_info: Any = None
        self.continuous_query = ""
        self.answer_reuse = AnswerReuse()
        self.outputs: dict[str, Any] = {}
        """Publisher per name in :data:`OUTPUTS` (those whose message package is installed)
        and ``tf`` (the node's /tf publisher); empty while the node is not configured."""
        self.inputs: dict[str, Any] = {}
        """Input role (image, depth, ...) -> its watched endpoint (input_watch.Endpoint)."""

    def topic(self, base: str) -> str:
        """Input topic: ``image`` for the unnamed camera, ``front/image`` for "front"."""
        return f"{self.name}/{base}" if self.name else base

    def output_topic(self, base: str) -> str:
        """Output topic: ``~/result``, or ``~/front/result`` for camera "front"."""
        return f"~/{self.name}/{base}" if self.name else f"~/{base}"

    @property
    def label(self) -> str:
        """The name used in logs and error texts ("default" for the unnamed camera)."""
        return self.name or "default"

    def track(self, query: str) -> None:
        """Continuous mode: apply ``query`` to every new frame from now on ("" stops)."""
        self.continuous_query = query
        self.answer_reuse.clear()
