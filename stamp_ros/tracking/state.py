"""What the tracker says, and its settings: the types a node, a bag or a client reads.

Per frame (:class:`FrameTracks`): the objects seen (:class:`TrackedObject`: mask, ``state``,
``age``, 3D state), the tracks remembered but not seen (:class:`HiddenTrack`), and the events
since the previous frame (:class:`TrackEvent`: lost, returned, forgotten).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TRACKED = "tracked"
"""Seen whole: the model's mask, or the model's mask carried by the object's motion."""
OCCLUDED = "occluded"
"""Partly hidden (another object, the image border): carried on the points still followed; the
mask is the part in sight (:mod:`.visibility`)."""
REIDENTIFIED = "reidentified"
"""Back from memory (matched by appearance and position) less than REIDENTIFIED_S ago."""
PREDICTED = "predicted"
"""Hidden: where it is comes from its recent motion (for ``max_prediction`` s); no mask."""
OUT_OF_VIEW = "out_of_view"
"""It left the image (or the camera looked away): remembered, no position in the image."""
REMEMBERED = "remembered"
"""In memory only (missed by the model, lost in a scene change, predicted for too long)."""
VISIBLE_STATES = (TRACKED, OCCLUDED, REIDENTIFIED)
HIDDEN_STATES = (PREDICTED, OUT_OF_VIEW, REMEMBERED)
REIDENTIFIED_S = 1.0
"""How long a re-identified track reports REIDENTIFIED (msg/Instance.msg)."""


@dataclass(frozen=True)
class TrackerConfig:
    """The tunable part (the node's ``track_*`` parameters)."""

    min_iou: float = 0.3
    """A model mask continues a track only with at least this mask IoU."""
    max_misses: int = 2
    """A live track not matched by this many model answers in a row leaves the output (it is
    remembered: a later answer may find it again)."""
    max_side: int = 480
    """Longer side (px) of the grey working image motion is estimated on (at most; frames are
    downscaled by an integer factor)."""
    fb_threshold: float = 1.0
    """Forward-backward error (working px) above which a tracked point is not trusted."""
    scene_change: float = 0.7
    """Fraction of the whole image's points failing at once that counts as a scene change."""
    memory: float = 10.0
    """Seconds a track that is no longer seen is remembered (``track_memory``); 0 = forget at
    once (no re-identification)."""
    reid_threshold: float = 0.45
    """Appearance similarity (0-1) a model object needs to take a remembered track's id
    (``track_reid_threshold``)."""
    max_prediction: float = 3.0
    """Seconds a hidden object's position is predicted by its motion and used to gate its
    re-identification (``track_max_prediction``); after that only appearance counts."""
    frame_rate: float = 30.0
    """Frames per second assumed when frames come without stamps (times = seq / frame_rate)."""


@dataclass
class TrackedObject:
    """One live track on one frame."""

    track_id: int
    mask: np.ndarray
    """(H, W) bool at the frame's full resolution."""
    bbox: tuple[int, int, int, int]
    """(x_min, y_min, x_max, y_max) inclusive; (0, 0, -1, -1) when empty."""
    area: int
    score: float
    """The score the model gave the mask this track was last grounded on."""
    state: str = TRACKED
    """TRACKED, OCCLUDED or REIDENTIFIED."""
    age: float = 0.0
    """Seconds from the frame the track was first seen to this frame (frame stamps)."""
    visible: float = 1.0
    """Share of the track's followed points still consistent (1 = whole, lower = occluded)."""
    position_3d: np.ndarray | None = None
    """Kalman-filtered 3D position (the caller's 3D frame, m); None before any 3D."""
    velocity_3d: np.ndarray | None = None
    """Kalman-filtered 3D velocity (m/s); None before any 3D."""
    ambiguous_with: tuple[int, ...] = ()
    """While REIDENTIFIED: the look-alike tracks its return was decided against by position
    (not appearance); empty otherwise. A node may flag the object as uncertain."""


@dataclass
class HiddenTrack:
    """A track remembered but not seen on this frame (not output as a mask)."""

    track_id: int
    state: str
    """PREDICTED, OUT_OF_VIEW or REMEMBERED."""
    hidden_for: float
    """Seconds since it was last seen."""
    predicted_center: tuple[float, float] | None
    """PREDICTED: where its motion puts its centre (full-resolution px); else None."""
    position_3d: np.ndarray | None = None
    """Its 3D position predicted to this frame, when it had 3D."""


@dataclass
class TrackEvent:
    """Something a client reports: ``lost`` (left the output: hidden, left the view, missed by
    the model, scene change), ``returned`` (re-identified from memory: same id),
    ``forgotten`` (dropped from memory after ``memory`` s)."""

    kind: str
    track_id: int
    seq: int
    reason: str = ""
    hidden_for: float = 0.0
    """``returned``: seconds it was gone."""
    similarity: float = 0.0
    """``returned``: the appearance similarity it was matched with."""
    ambiguous_with: tuple[int, ...] = ()
    """``returned``: other remembered tracks that looked as alike (look-alikes): position and
    motion decided, and a client may want to double-check."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FrameTracks:
    """What the tracker says about one frame."""

    seq: int
    objects: list[TrackedObject]
    propagated: bool
    """False when these are the model's own masks of this frame (it answered this very frame
    before the frame was stepped), True when carried by motion."""
    grounded_seq: int
    """Frame of the newest model answer the tracks were grounded on."""
    grounding: Any
    """What the caller passed to :meth:`QueryTracker.ground` with that answer."""
    scene_change: bool = False
    hidden: list[HiddenTrack] = field(default_factory=list)
    """Tracks remembered but not seen on this frame (``lost_track_ids``)."""
    events: list[TrackEvent] = field(default_factory=list)
    """Lost / returned / forgotten since the previous output."""

    @property
    def lost(self) -> list[tuple[int, str]]:
        """Tracks lost since the previous output: (track id, why), from :attr:`events`."""
        return [(e.track_id, e.reason) for e in self.events if e.kind == "lost"]

    @property
    def refresh_reason(self) -> str:
        """Why a fresh model answer should be asked for ("" when none): a scene change or a
        lost track."""
        if self.scene_change:
            return "scene change"
        if self.lost:
            tid, why = self.lost[0]
            return f"track {tid} lost: {why}"
        return ""
