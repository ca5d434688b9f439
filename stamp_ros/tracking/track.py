"""One track's state, and one model mask prepared for grounding: the tracker's working records.

Kept apart from the logic that moves them (:mod:`.follow` per frame, :mod:`.tracker` per
answer, :mod:`.permanence` while hidden) so each of those modules reads one record type, and
so what a track *is* can be read in one place.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stamp_ros.tracking import motion
from stamp_ros.tracking.appearance import Appearance
from stamp_ros.tracking.image import WorkingFrame, resize_mask
from stamp_ros.tracking.kalman import ConstantVelocity
from stamp_ros.tracking.reacquire import Template
from stamp_ros.tracking.state import TRACKED, TrackEvent

GALLERY = 4
"""Appearance descriptors kept per track (the newest answers'): poses change while tracked."""
GALLERY_EVERY = 1.0
"""Seconds between two descriptors of a tracked object (its look changes slowly; its answers
come several times a second)."""
TRACK_HISTORY = 512
"""Frames of key -> frame transforms kept per track, to match an answer for an older frame."""
BORDER_MARGIN = 0.025
"""A mask this share of the image's longer side from its border reaches it (the model's cells
and its jitter leave a few pixels between an object cut by the border and the border)."""
MAX_OBJECT_POINTS = 40
"""Points followed per object; topped up from the current mask when half are gone."""


@dataclass(eq=False)
class Track:
    """A track: its key (the model mask it was last grounded on), its motion since, and what
    it is remembered by once hidden."""

    track_id: int
    key_mask: np.ndarray = field(repr=False, default=None)
    """The model's mask (full resolution, uint8 0/1) the track was last grounded on."""
    key_small: np.ndarray = field(repr=False, default=None)
    key_area: int = 0
    key_box: tuple[int, int, int, int] = (0, 0, -1, -1)
    key_seq: int = -1
    key_grey: np.ndarray | None = field(repr=False, default=None)
    """The grey working image ``key_small`` was drawn on (what its in-sight part is compared
    with: :mod:`.visibility`)."""
    amodal: bool = False
    """The key is a whole view of an object that was last seen in part (a stored view after a
    return, or a partial answer that confirmed it): its mask is cut to the part in sight."""
    in_sight: float = 1.0
    """Share of the whole object in sight on the newest frame (1.0 unless it may be partly
    hidden: OCCLUDED by its points, or ``amodal``)."""
    emerging: bool = False
    """Found in part between answers and not yet clearly out (:data:`.follow.EMERGING_SLACK`)."""
    score: float = 0.0
    transform: np.ndarray = field(default_factory=motion.identity)
    """Working pixels, key frame -> the newest processed frame."""
    pts_key: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.float32))
    pts_cur: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.float32))
    epoch: int = 0
    """Scene epoch of the key frame: after a scene change old positions say nothing."""
    misses: int = 0
    lost: str = ""
    """Why the track is lost ("" = live)."""
    mask: np.ndarray | None = field(repr=False, default=None)
    """Full-resolution mask on the newest processed frame (uint8 0/1)."""
    area: int = 0
    box: tuple[int, int, int, int] = (0, 0, -1, -1)
    redetect_at: int = -1
    """Frame from which new points may be looked for again."""
    history: deque = field(default_factory=lambda: deque(maxlen=TRACK_HISTORY), repr=False)
    """(seq, key -> frame transform) of processed frames since the key."""
    state: str = TRACKED
    first_t: float = 0.0
    hidden_t: float = 0.0
    """Time it was last seen (hidden states)."""
    hidden_seq: int = -1
    """Frame it left the output on (answers for older frames still see it live)."""
    hidden_grey: np.ndarray | None = field(default=None, repr=False)
    """That frame's grey working image (what was in its place when it went out of sight)."""
    rescaled: bool = False
    """Hidden because the image size changed (the same view, rescaled: not a cut)."""
    support: int = 0
    """Points it had after its last (re)key or top-up: the reference for OCCLUDED."""
    key_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))
    """Centroid of the key mask (working px, key frame)."""
    kf: ConstantVelocity | None = None
    """Centre in the scene epoch's coordinates (working px, camera motion removed)."""
    kf_epoch: int = -1
    kf3: ConstantVelocity | None = None
    gallery: deque = field(default_factory=lambda: deque(maxlen=GALLERY), repr=False)
    gallery_t: float = -1e9
    """Time of the newest descriptor in ``gallery`` (a matched answer is described only when
    this is GALLERY_EVERY old: describing costs more than the rest of grounding)."""
    reid_until: float = -1.0
    ambiguous_with: tuple[int, ...] = ()
    """Look-alike tracks its last return was decided against by position."""
    template: Template | None = field(default=None, repr=False)
    """The newest answer that saw it whole, to take it back between answers
    (:mod:`.reacquire`)."""
    next_try: int = -1
    """Frame from which a hidden track is looked for again between answers."""
    tentative_until: float = -1.0
    """Until then it is not output: it was born of a partial view at the image border that
    looked like a track that left the view, and may yet turn out to be that one
    (:meth:`~.permanence.Permanence.merge_young`)."""

    @property
    def live(self) -> bool:
        return not self.lost

    def transform_at(self, seq: int) -> np.ndarray:
        """The key -> frame transform of the nearest recorded frame at or before ``seq`` (the
        oldest recorded one when ``seq`` is older than all)."""
        best = None
        for s, t in self.history:
            if s > seq:
                break
            best = t
        if best is None:
            return self.history[0][1] if self.history else self.transform
        return best

    def small_mask_at(self, seq: int, size: tuple[int, int]) -> np.ndarray:
        return motion.warp_mask(self.key_small, self.transform_at(seq), size)


@dataclass
class Answered:
    """One mask of a model answer, prepared for grounding."""

    index: int
    mask: np.ndarray
    """Full resolution, uint8 0/1."""
    small: np.ndarray
    """Working resolution, uint8 0/1."""
    area: int
    box: tuple[int, int, int, int]
    pts: np.ndarray
    """Corners inside the mask on the answered frame (working pixels)."""
    score: float
    centre: np.ndarray
    """Centroid of ``small`` (working pixels)."""
    frame: WorkingFrame = field(repr=False, default=None)
    """The answered frame (with colour: the descriptor reads it)."""
    descriptor: Any = None
    """Its appearance (the tracker's :class:`~.appearance.Appearance`) once :meth:`describe`
    ran; None before, or when there is nothing to describe."""
    described: bool = False

    @classmethod
    def of(cls, index: int, mask: np.ndarray, score: float, frame: WorkingFrame) -> Answered:
        full = (np.asarray(mask) != 0).astype(np.uint8)
        small = resize_mask(full, frame.size)
        pts = motion.detect_points(frame.grey, small, MAX_OBJECT_POINTS)
        m = cv2.moments(small, binaryImage=True)
        centre = (np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]]) if m["m00"]
                  else np.zeros(2))
        return cls(index, full, small, int(cv2.countNonZero(full)), motion.box_of(full), pts,
                   score, centre, frame)

    def describe(self, appearance: Appearance) -> Any:
        """Its descriptor, computed on first use (only objects that match no live track, and
        tracks whose gallery is due, are described: :data:`GALLERY_EVERY`)."""
        if not self.described:
            self.described = True
            if self.small.any():
                self.descriptor = appearance.describe(self.frame, self.small)
        return self.descriptor

    @property
    def at_border(self) -> bool:
        """The mask reaches the image border (within BORDER_MARGIN): a partial view of an
        object entering or leaving."""
        x0, y0, x1, y1 = self.box
        w, h = self.mask.shape[1], self.mask.shape[0]
        m = BORDER_MARGIN * max(w, h)
        return x0 <= m or y0 <= m or x1 >= w - 1 - m or y1 >= h - 1 - m


@dataclass
class Outbox:
    """What happened since the last output frame: events (lost, returned, forgotten) and a
    scene change. Drained into every :class:`~.state.FrameTracks`."""

    events: list[TrackEvent] = field(default_factory=list)
    scene_change: bool = False

    def clear(self) -> None:
        self.events.clear()
        self.scene_change = False
