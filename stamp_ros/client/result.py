"""Plain Python views of the node's answers: numpy masks, boxes, 3D, the answer text.

No rclpy here: :meth:`SegmentResult.from_msg` reads any object with the fields of
``stamp_ros/msg/Segmentation`` (a live message, one deserialised from a bag, a test double), so
planners, offline tools and tests share one decoding of ``Instance.mask`` and the grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIMING_FIELDS = ("wait_ms", "preprocess_ms", "generate_ms", "mask_ms", "postprocess_ms",
                 "total_ms")
"""The per-stage wall-clock fields of a Segmentation, in pipeline order."""

MASK_ENCODINGS = ("mono8", "8UC1")

TRACK_STATES = {0: "", 1: "tracked", 2: "occluded", 3: "reidentified"}
"""``Instance.track_state`` values (TRACK_NONE ... TRACK_REIDENTIFIED) as the client's names."""


def _flat(seq: Any, dtype: Any) -> np.ndarray:
    """A message sequence field (array.array, bytes, list, numpy) as a fresh 1-D array."""
    if isinstance(seq, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(seq, dtype=np.uint8)
    else:
        arr = np.asarray(seq)  # array.array keeps its own item type through the buffer protocol
    return np.array(arr, dtype=dtype, copy=True).reshape(-1)


def _grid(seq: Any, dtype: Any, rows: int, cols: int, what: str) -> np.ndarray:
    flat = _flat(seq, dtype)
    if flat.size != rows * cols:
        raise ValueError(f"{what} has {flat.size} cells, grid_height x grid_width is "
                         f"{rows}x{cols}")
    return flat.reshape(rows, cols)


def mask_from_image(img: Any) -> np.ndarray:
    """A mono8 (or 8UC1) mask image as an (H, W) bool array: nonzero = object.

    ``step`` padding is honoured; a payload shorter than ``step * height`` or another encoding
    is a ``ValueError``.
    """
    h, w = int(img.height), int(img.width)
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=np.bool_)
    if img.encoding not in MASK_ENCODINGS:
        raise ValueError(f"mask encoding {img.encoding!r}: expected mono8")
    step = int(img.step) or w
    data = _flat(img.data, np.uint8)
    if step < w or data.size < step * h:
        raise ValueError(f"mask {w}x{h} (step {step}) needs {step * h} bytes, got {data.size}")
    return data[: step * h].reshape(h, step)[:, :w] != 0


def _seconds(stamp: Any) -> float:
    return 0.0 if stamp is None else int(stamp.sec) + int(stamp.nanosec) * 1e-9


def _point(p: Any) -> np.ndarray:
    return np.array([p.x, p.y, p.z], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SegmentedObject:
    """One object of an answer (one ``<|seg|>`` token): an ``Instance`` message in numpy."""

    mask: np.ndarray = field(repr=False)
    """(H, W) bool, the size of the frame the answer was computed on."""
    box: tuple[int, int, int, int] | None
    """(x_min, y_min, x_max, y_max) in pixels, inclusive; None when the mask is empty."""
    area: int
    score: float
    grid: np.ndarray = field(repr=False)
    """The model's patch decisions, (grid_h, grid_w) uint8 in {0, 1}."""
    grid_logits: np.ndarray = field(repr=False)
    """Classifier logit per grid cell, float32, same shape (> 0 = foreground)."""
    centroid: np.ndarray | None = None
    """Metres in :attr:`frame_id_3d`, shape (3,); None without depth (has_3d false)."""
    box_center: np.ndarray | None = None
    size: np.ndarray | None = None
    """Extent of the axis-aligned 3D box along x, y, z (metres)."""
    num_points: int = 0
    frame_id_3d: str = ""
    status_3d: str = ""
    """Empty with 3D; otherwise why there is none ("no depth received", "depth 180 ms from
    the colour frame (depth_max_skew 50 ms)", "tf: ...", "3 valid points < 10", ...)."""
    valid_depth_fraction: float = 0.0
    """Share of the mask's pixels with a usable depth reading."""
    track_id: int = 0
    """Tracking: the object's identity across answers and frames (0 = not tracked)."""
    track_state: str = ""
    """Tracking: ``"tracked"`` (seen whole), ``"occluded"`` (partly hidden, carried on its
    visible points), ``"reidentified"`` (back after being lost, matched to the remembered
    object); ``""`` when not tracked."""
    track_ambiguous: bool = False
    """Tracking, ``"reidentified"`` only: look-alikes were remembered too and position decided
    which id this object took back; double-check before acting on the id."""
    track_age: float = 0.0
    """Tracking: seconds since the track was first seen (frame stamps)."""
    track_position: np.ndarray | None = None
    """Tracking with 3D: Kalman-filtered position in :attr:`frame_id_3d` (m), shape (3,)."""
    track_velocity: np.ndarray | None = None
    """Tracking with 3D: Kalman-filtered velocity in :attr:`frame_id_3d` (m/s), shape (3,)."""

    @property
    def has_3d(self) -> bool:
        return self.centroid is not None

    @classmethod
    def from_msg(cls, inst: Any) -> SegmentedObject:
        """From a ``stamp_ros/msg/Instance`` (or any object with its fields)."""
        rows, cols = int(inst.grid_height), int(inst.grid_width)
        empty = int(inst.x_max) < int(inst.x_min) or int(inst.y_max) < int(inst.y_min)
        has_3d = bool(inst.has_3d)
        return cls(
            mask=mask_from_image(inst.mask),
            box=None if empty else (int(inst.x_min), int(inst.y_min), int(inst.x_max),
                                    int(inst.y_max)),
            area=int(inst.area),
            score=float(inst.score),
            grid=_grid(inst.grid, np.uint8, rows, cols, "grid"),
            grid_logits=_grid(inst.grid_logits, np.float32, rows, cols, "grid_logits"),
            centroid=_point(inst.centroid) if has_3d else None,
            box_center=_point(inst.box_center) if has_3d else None,
            size=_point(inst.size) if has_3d else None,
            num_points=int(inst.num_points) if has_3d else 0,
            frame_id_3d=str(inst.frame_id_3d) if has_3d else "",
            # getattr: Segmentation messages recorded before these fields existed
            status_3d=str(getattr(inst, "status_3d", "")),
            valid_depth_fraction=float(getattr(inst, "valid_depth_fraction", 0.0)),
            track_id=int(getattr(inst, "track_id", 0)),
            track_state=TRACK_STATES.get(int(getattr(inst, "track_state", 0)), "unknown"),
            track_ambiguous=bool(getattr(inst, "track_ambiguous", False)),
            track_age=float(getattr(inst, "track_age", 0.0)),
            track_position=(_point(inst.track_position)
                            if has_3d and hasattr(inst, "track_position") else None),
            track_velocity=(_point(inst.track_velocity)
                            if has_3d and hasattr(inst, "track_velocity") else None),
        )


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """The node's answer to one request (a ``Segmentation`` message in plain Python).

    ``success`` false means the node answered but inferred nothing; ``error`` says why (no
    fresh frame, unknown camera, empty query, cancelled, ...). Branch on :attr:`ok`.
    """

    success: bool
    error: str
    answer: str
    query: str
    request_id: str
    conversation: str
    turn: int
    """This answer's turn in :attr:`conversation` (1 = first); 0 for one-shot requests."""
    frame_id: str
    stamp: float
    """The source frame's header stamp in seconds (0.0 when the error result had no frame)."""
    header: Any = field(repr=False)
    """The raw std_msgs/Header of the source frame."""
    objects: list[SegmentedObject] = field(default_factory=list)
    grid_height: int = 0
    grid_width: int = 0
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage, keyed by the message's field names (``wait_ms`` ... ``total_ms``)."""
    frame_age_ms: float = 0.0
    answer_reused: bool = False
    propagated: bool = False
    """Tracking: the masks were carried to this frame by image motion (not the model's own)."""
    model_stamp: float = 0.0
    """Tracking: stamp (s) of the frame of the model answer the tracks were grounded on."""
    lost_track_ids: tuple[int, ...] = ()
    """Tracking: ids the tracker remembers but does not see on this frame (hidden, out of
    view, missed by the model); each keeps its id if found again within ``track_memory``."""

    @property
    def ok(self) -> bool:
        return self.success

    @property
    def grid_size(self) -> tuple[int, int]:
        """(grid_height, grid_width) of the merged-patch grid of the mask pass."""
        return self.grid_height, self.grid_width

    def union_mask(self, shape: Sequence[int] | None = None) -> np.ndarray | None:
        """All objects in one (H, W) bool mask.

        Without objects the frame size is unknown to the result: pass ``shape`` ((H, W) or
        (H, W, C)) to get an empty mask of that size; otherwise the answer is None.
        """
        if not self.objects:
            return None if shape is None else np.zeros(tuple(shape)[:2], dtype=np.bool_)
        return np.logical_or.reduce([o.mask for o in self.objects])

    @classmethod
    def from_msg(cls, msg: Any) -> SegmentResult:
        """From a ``stamp_ros/msg/Segmentation`` (or any object with its fields)."""
        header = msg.header
        return cls(
            success=bool(msg.success),
            error=str(msg.error),
            answer=str(msg.answer),
            query=str(msg.query),
            request_id=str(msg.request_id),
            conversation=str(msg.conversation),
            turn=int(msg.turn),
            frame_id=str(header.frame_id),
            stamp=_seconds(header.stamp),
            header=header,
            objects=[SegmentedObject.from_msg(inst) for inst in msg.instances],
            grid_height=int(msg.grid_height),
            grid_width=int(msg.grid_width),
            model=str(msg.model),
            timings={name: float(getattr(msg, name)) for name in TIMING_FIELDS},
            frame_age_ms=float(msg.frame_age_ms),
            answer_reused=bool(msg.answer_reused),
            propagated=bool(getattr(msg, "propagated", False)),
            model_stamp=_seconds(getattr(msg, "model_stamp", None)),
            lost_track_ids=tuple(int(i) for i in getattr(msg, "lost_track_ids", ())),
        )


@dataclass(frozen=True)
class SegmentFeedback:
    """One action feedback: the stage being worked on and the answer decoded so far.

    Stages, in order: queued, waiting_for_frame, convert, preprocess, vision, prefill, decode
    (once per token, with the partial answer), mask, postprocess, done.
    """

    stage: str
    partial_answer: str
    elapsed_ms: float

    @classmethod
    def from_msg(cls, msg: Any) -> SegmentFeedback:
        """From a ``Segment.Feedback`` (or the action's wrapped feedback message)."""
        fb = getattr(msg, "feedback", msg)
        return cls(stage=str(fb.stage), partial_answer=str(fb.partial_answer),
                   elapsed_ms=float(fb.elapsed_ms))
