"""What the node and an inference process say to each other over their pipe.

Small picklable dataclasses only: pixels never travel here. A request names the shared-memory
slot its frame was written to (:class:`SlotRef`); the reply says where the process left the
masks (:class:`MaskLayout`), normally in the same slot. One request at a time per process, in
the order sent; replies carry the request id (``rid``) so the node can route them.

Node -> process: :class:`LoadSpec` (first message, exactly once), then :class:`SegmentRequest`,
:class:`WarmupRequest` and finally :class:`Stop`; before the first request on a slot segment
the process has not seen, :class:`SlotFd` (the segment's file descriptor follows on the socket,
see :func:`stamp_ros.inference.slots.send_fd`). Process -> node: :class:`Alive` while it loads
and warms up, :class:`Loaded` or :class:`LoadFailed`, :class:`WarmedUp` (after an automatic or
requested warm-up), and per request any number of :class:`Progress` followed by one
:class:`Done` or :class:`Failed`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stamp_ros.engine.defaults import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    DEFAULT_MODEL,
)
from stamp_ros.engine.prompt import DEFAULT_SYSTEM_PROMPT


@dataclass(frozen=True)
class LoadSpec:
    """How the process builds its :class:`StampSegmenter` (the node's ``[reload]`` parameters;
    the defaults are the engine's)."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    mask_upsample: str = "nearest"
    refine: str | None = None
    sam_checkpoint: str | None = None
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    threads: int = 0
    """torch intra-op threads (0: torch's default; the node passes
    :func:`stamp_ros.inference.pool.thread_budget`)."""
    nice: int = 0
    """Scheduling niceness of the process (0-19): higher yields contended cores to the node."""
    warmup: bool = True
    """Run one small inference right after loading (reported as :class:`WarmedUp`)."""

    def segmenter_options(self) -> dict[str, Any]:
        """Keyword arguments of ``StampSegmenter.from_pretrained``."""
        return {
            "device": self.device, "dtype": self.dtype, "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels, "max_new_tokens": self.max_new_tokens,
            "mask_upsample": self.mask_upsample, "refine": self.refine,
            "sam_checkpoint": self.sam_checkpoint, "system_prompt": self.system_prompt,
        }

    def with_device(self, device: str, threads: int) -> LoadSpec:
        return replace(self, device=device, threads=threads)


@dataclass(frozen=True)
class SlotRef:
    """A shared-memory segment of the node's ring: slot ``index``, segment ``name`` (a new one
    each time the slot grows)."""

    index: int
    name: str
    size: int
    fd: bool = False
    """The segment has no name to open (a memfd): the node hands its descriptor over with
    :class:`SlotFd` before the first request on it. False: a named POSIX segment the process
    opens by ``name`` on first use."""


@dataclass(frozen=True)
class SlotFd:
    """The next bytes on the socket carry ``slot``'s file descriptor (SCM_RIGHTS): map it, in
    place of the slot's previous segment."""

    slot: SlotRef


@dataclass(frozen=True)
class LiveSettings:
    """Settings the node may change while a model is loaded; sent with every request."""

    max_new_tokens: int
    mask_upsample: str
    system_prompt: str | None


@dataclass
class SegmentRequest:
    rid: int
    slot: SlotRef
    shape: tuple[int, int]
    """(H, W) of the uint8 RGB frame at :data:`stamp_ros.inference.slots.DATA_OFFSET`."""
    query: str
    settings: LiveSettings
    history: list[tuple[str, str]] | None = None
    forced_answer_ids: list[int] | None = None
    image_in_first_turn: bool = False
    frame_key: Hashable | None = None
    path: str | None = None
    progress: bool = False
    """Send :class:`Progress` for every stage and decoded token (only an action needs them)."""
    inline_image: Any = None
    """Instead of the slot: something that is not an HxWx3 uint8 array, so that the engine
    itself judges it (and rejects it with its own words)."""


@dataclass(frozen=True)
class WarmupRequest:
    rid: int
    size_hw: tuple[int, int] = (64, 64)


@dataclass(frozen=True)
class Stop:
    """Finish: the process exits after the request it is running (if any)."""


@dataclass(frozen=True)
class Alive:
    """A sign of life while the process loads the model or warms up (when the engine reports
    nothing): sent when it is still working (see ``process.LifeSigns``), never when it is
    stuck."""

    stage: str
    """``load`` or ``warmup``."""


@dataclass(frozen=True)
class Loaded:
    pid: int
    device: str
    threads: int
    load_s: float


@dataclass(frozen=True)
class LoadFailed:
    reason: str


@dataclass(frozen=True)
class WarmedUp:
    rid: int
    """0 for the automatic warm-up after loading."""
    times_ms: dict[str, float]
    error: str = ""


@dataclass(frozen=True)
class Progress:
    rid: int
    stage: str
    text: str


@dataclass(frozen=True)
class InstanceMeta:
    """One instance without its full-size mask (that one travels through the slot)."""

    grid: np.ndarray
    logits: np.ndarray
    bbox: tuple[int, int, int, int]
    area: int
    score: float


@dataclass
class MaskLayout:
    """Where the full-size masks of a result are.

    ``u8``: ``count`` (H, W) uint8 masks back to back at the slot's data offset; ``bits``: the
    same, each packed with ``np.packbits`` (when uint8 does not fit the slot); ``inline``: in
    ``masks`` (more masks than even bits fit: rare, slower, still exact); ``none``: no masks.
    """

    kind: str
    count: int = 0
    shape: tuple[int, int] = (0, 0)
    masks: list[np.ndarray] | None = None


@dataclass
class Done:
    rid: int
    text: str
    instances: list[InstanceMeta]
    masks: MaskLayout
    image_size: tuple[int, int]
    grid_size: tuple[int, int]
    timings_ms: dict[str, float]
    token_ids: list[int]
    history_text: str
    """The answer as a later conversation turn carries it (``StampSegmenter.history_answer``)."""
    engine_ms: float
    """Wall time of ``segment()`` in the process: the node's time minus this is the hop."""


@dataclass(frozen=True)
class Failed:
    rid: int
    kind: str
    """``cancelled``, ``input``, ``engine``, ``value`` or ``unexpected``."""
    message: str
