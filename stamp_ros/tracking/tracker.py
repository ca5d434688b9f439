"""QueryTracker: the objects of one standing query, grounded by the model, carried by motion.

Two inputs, usually from two threads (the tracker is thread-safe):

* :meth:`QueryTracker.step` for every camera frame the caller can keep up with (newest first):
  each live track's points are followed with forward-backward-checked Lucas-Kanade, a
  similarity is fitted key frame -> this frame, and the *model's* mask is warped by it (see
  :mod:`.motion` for why this and not frame-to-frame dense flow). A track whose points fail,
  whose motion is not rigid, whose mask collapses or leaves the image is marked lost on that
  frame and not output (it is not kept at its old place). When most points of the whole image
  fail at once (:mod:`.scene`) every track is lost.
* :meth:`QueryTracker.ground` for every model answer, which is for some frame in the past (the
  model takes hundreds of milliseconds to seconds): its masks are matched to the tracks *as they
  were on that frame* (mask IoU, optimal assignment, :mod:`.identity`), matched tracks keep
  their id, new objects get new ids, tracks missed by ``max_misses`` answers in a row end; then
  each answered mask becomes its track's new key and is carried from the answered frame to the
  newest processed one (LK seeded with the motion known since, so a gap of many frames works).

Frames and answers are identified by a sequence number that grows with the camera's frames
(the node's frame counter, the bag's frame index); ``grounding`` is whatever the caller wants
back with every output (the node keeps the answer's stamp and text there).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stamp_ros.tracking import motion
from stamp_ros.tracking.identity import TrackIds, assign_by_iou, iou_matrix
from stamp_ros.tracking.image import WorkingFrame, resize_mask
from stamp_ros.tracking.scene import SceneMotion

MAX_OBJECT_POINTS = 40
"""Points followed per object; topped up from the current mask when half are gone."""
REDETECT_PAUSE = 10
"""Frames to wait before looking for new points again when the last look found (almost) none
(a weakly textured object would otherwise cost a corner search on every frame)."""
MIN_POINTS = 5
"""Fewer consistent points than this and an object's motion is unknown: lost."""
LOST_FAILED_FRACTION = 0.5
"""An object whose points fail the forward-backward check more than this on one frame is lost."""
MIN_INLIER_FRACTION = 0.5
"""Fewer of its consistent points explained by one similarity: not rigid enough, lost."""
MIN_VISIBLE_FRACTION = 0.25
"""Less of the carried mask inside the image than this: the object left the image, lost."""
SCALE_RANGE = (0.5, 2.0)
"""Scale relative to the model's mask outside this range: the mask collapsed (or exploded)."""
TRACK_HISTORY = 512
"""Frames of key -> frame transforms kept per track, to match an answer for an older frame."""


@dataclass(frozen=True)
class TrackerConfig:
    """The tunable part (the node's ``track_*`` parameters)."""

    min_iou: float = 0.3
    """A model mask continues a track only with at least this mask IoU."""
    max_misses: int = 2
    """A track not matched by this many model answers in a row ends."""
    max_side: int = 480
    """Longer side (px) of the grey working image motion is estimated on (at most; frames are
    downscaled by an integer factor)."""
    fb_threshold: float = 1.0
    """Forward-backward error (working px) above which a tracked point is not trusted."""
    scene_change: float = 0.7
    """Fraction of the whole image's points failing at once that counts as a scene change."""


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
    lost: list[tuple[int, str]] = field(default_factory=list)
    """Tracks lost since the previous output: (track id, why)."""
    scene_change: bool = False

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


@dataclass(eq=False)
class _Track:
    track_id: int
    key_mask: np.ndarray = field(repr=False, default=None)
    """The model's mask (full resolution, uint8 0/1) the track was last grounded on."""
    key_small: np.ndarray = field(repr=False, default=None)
    key_area: int = 0
    key_box: tuple[int, int, int, int] = (0, 0, -1, -1)
    key_seq: int = -1
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


class QueryTracker:
    """The tracks of one query on one camera (see the module docstring)."""

    def __init__(self, ids: TrackIds, config: TrackerConfig | None = None) -> None:
        self.ids = ids
        self.config = config or TrackerConfig()
        self._lock = threading.RLock()
        self._tracks: list[_Track] = []
        self._prev: WorkingFrame | None = None
        self._prev_seq = -1
        self._scene = SceneMotion()
        self._answered_seq = -1
        self._events: list[tuple[int, str]] = []
        self._scene_event = False
        self.grounding: Any = None
        self.grounded_seq = -1

    # ------------------------------------------------------------------ introspection
    @property
    def grounded(self) -> bool:
        """True once a model answer arrived (outputs start then)."""
        with self._lock:
            return self.grounded_seq >= 0

    def live_ids(self) -> list[int]:
        with self._lock:
            return [t.track_id for t in self._tracks if not t.lost]

    def lost_ids(self) -> dict[int, str]:
        with self._lock:
            return {t.track_id: t.lost for t in self._tracks if t.lost}

    def newest_frame(self) -> tuple[int, WorkingFrame | None]:
        """The newest frame stepped (or grounded on) and its sequence number; (-1, None)
        before the first. The frame tells the size the tracks live in."""
        with self._lock:
            return self._prev_seq, self._prev

    # ------------------------------------------------------------------ per frame
    def step(self, seq: int, frame: WorkingFrame) -> FrameTracks | None:
        """Carry the tracks to frame ``seq``. None before the first model answer (the motion
        of the scene is followed meanwhile) and for a frame older than the newest processed."""
        with self._lock:
            if seq < self._prev_seq:
                return None
            if seq > self._prev_seq:
                self._advance(seq, frame)
            if self.grounded_seq < 0:
                self._events.clear()
                self._scene_event = False
                return None
            return self._output(seq, frame)

    def _advance(self, seq: int, frame: WorkingFrame) -> None:
        prev = self._prev
        self._prev, self._prev_seq = frame, seq
        if prev is None or prev.size != frame.size or prev.full_size != frame.full_size:
            if prev is not None:  # a new resolution: nothing carries over
                self._lose_all("the image size changed")
                self._scene.epoch += 1
                self._scene.last_change_seq = seq
                self._scene_event = True
            self._scene.start(frame, seq)
            return
        live = [t for t in self._tracks if not t.lost]
        sets = [self._scene.pts] + [t.pts_cur for t in live]
        new, ok = motion.track_points(prev, frame, np.concatenate(sets),
                                      self.config.fb_threshold)
        bounds = np.cumsum([len(s) for s in sets])[:-1]
        new_sets, ok_sets = np.split(new, bounds), np.split(ok, bounds)
        step = self._scene.update(frame, seq, new_sets[0], ok_sets[0], self.config.scene_change)
        if step.changed:
            self._scene_event = True
            self._lose_all(f"scene change ({step.failed_fraction:.0%} of the image's points "
                           "failed)")
            return
        for track, pts, good in zip(live, new_sets[1:], ok_sets[1:], strict=True):
            why = self._move(track, seq, frame, pts, good)
            if why:
                track.lost = why
                self._events.append((track.track_id, why))

    def _lose_all(self, why: str) -> None:
        for track in self._tracks:
            if not track.lost:
                track.lost = why
                self._events.append((track.track_id, why))

    def _move(self, t: _Track, seq: int, frame: WorkingFrame, new: np.ndarray,
              ok: np.ndarray) -> str:
        """Fit the track's motion on this frame; returns why it is lost ("" = it moved)."""
        n_ok = int(ok.sum())
        if n_ok < MIN_POINTS:
            return f"only {n_ok} of its points could be followed"
        if 1.0 - n_ok / len(ok) > LOST_FAILED_FRACTION:
            return (f"{len(ok) - n_ok} of its {len(ok)} points failed the forward-backward "
                    "check")
        fit = motion.fit_similarity(t.pts_key[ok], new[ok])
        if fit is None or fit.inlier_count < max(MIN_POINTS, MIN_INLIER_FRACTION * n_ok):
            return "its motion is not rigid enough to follow (too few inliers)"
        scale = motion.scale_of(fit.transform)
        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            return f"its mask collapsed (scale {scale:.2f} of the model's mask)"
        mask, area, box = motion.place_mask(
            t.key_mask, t.key_box, motion.full_resolution(fit.transform, frame),
            frame.full_size)
        visible = area / max(1.0, t.key_area * scale * scale)
        if visible < MIN_VISIBLE_FRACTION:
            return f"it left the image ({visible:.0%} of it still inside)"
        t.transform, t.mask, t.area, t.box = fit.transform, mask, area, box
        t.pts_key, t.pts_cur = t.pts_key[ok][fit.inliers], new[ok][fit.inliers]
        if len(t.pts_cur) < MAX_OBJECT_POINTS // 2 and seq >= t.redetect_at:
            region = motion.warp_mask(t.key_small, t.transform, frame.size)
            more = motion.detect_points(frame.grey, region, MAX_OBJECT_POINTS - len(t.pts_cur),
                                        avoid=t.pts_cur)
            if len(more) < 3:
                t.redetect_at = seq + REDETECT_PAUSE
            t.pts_cur = np.concatenate([t.pts_cur, more])
            t.pts_key = np.concatenate([t.pts_key,
                                        motion.apply(np.linalg.inv(t.transform), more)])
        t.history.append((seq, t.transform.copy()))
        return ""

    def _output(self, seq: int, frame: WorkingFrame) -> FrameTracks:
        objects = []
        for t in self._tracks:
            if t.lost:
                continue
            if t.mask is None:
                t.mask, t.area, t.box = motion.place_mask(
                    t.key_mask, t.key_box, motion.full_resolution(t.transform, frame),
                    frame.full_size)
            objects.append(TrackedObject(t.track_id, t.mask.view(bool), t.box, t.area,
                                         t.score))
        out = FrameTracks(seq, objects, propagated=self._answered_seq != seq,
                          grounded_seq=self.grounded_seq, grounding=self.grounding,
                          lost=list(self._events), scene_change=self._scene_event)
        self._events.clear()
        self._scene_event = False
        return out

    # ------------------------------------------------------------------ per model answer
    def ground(self, seq: int, frame: WorkingFrame, masks: Sequence[np.ndarray],
               scores: Sequence[float] | None = None, grounding: Any = None) -> list[int]:
        """A model answer for frame ``seq`` (its working frame and its full-resolution masks,
        in answer order). Returns the track id of each mask (0: not tracked, i.e. an empty or
        too small mask, or an answer older than the last scene change that matches no track).
        The per-mask preparation (downscaling, corner search) runs before the tracker's lock
        is taken, so the frame thread waits only for the matching and the carry."""
        scores = list(scores) if scores is not None else [0.0] * len(masks)
        answered = [_Answered.of(i, m, float(scores[i]), frame) for i, m in enumerate(masks)]
        usable = [a for a in answered if a.small.any()]
        with self._lock:
            if seq > self._prev_seq:  # the answer is ahead of the frames stepped so far
                self._advance(seq, frame)
            size = self._prev.size
            tracks = list(self._tracks)
            epoch = self._scene.epoch_at(seq)
            comparable = [t for t in tracks if t.epoch == epoch]
            where = [t.small_mask_at(seq, size) for t in comparable]
            pairs = assign_by_iou(iou_matrix([a.small for a in usable], where),
                                  self.config.min_iou)
            ids = [0] * len(masks)
            matched: dict[int, _Track] = {}
            for row, col in pairs:
                matched[usable[row].index] = comparable[col]
                ids[usable[row].index] = comparable[col].track_id
            if seq < self._scene.last_change_seq:
                return ids  # about the scene before a change: identity only, no re-keying
            for a in usable:
                track = matched.get(a.index)
                if track is None:
                    track = _Track(self.ids.next())
                    self._tracks.append(track)
                    ids[a.index] = track.track_id
                self._rekey(track, seq, frame, a, is_new=a.index not in matched)
            kept = set(matched.values())
            for t in tracks:
                if t not in kept:
                    t.misses += 1
            self._tracks = [t for t in self._tracks
                            if t.misses < max(1, self.config.max_misses)]
            self.grounding, self.grounded_seq = grounding, seq
            if seq == self._prev_seq:
                self._answered_seq = seq
            return ids

    def _rekey(self, t: _Track, seq: int, frame: WorkingFrame, a: _Answered,
               is_new: bool) -> None:
        """Make the answered mask the track's key and carry it to the newest processed frame."""
        cur, cur_seq = self._prev, self._prev_seq
        pts = a.pts
        predicted = None
        if not is_new and not t.lost:
            predicted = t.transform @ np.linalg.inv(t.transform_at(seq))
        if predicted is None:
            predicted = self._scene.between(seq, cur_seq)
        transform, lost = motion.identity(), ""
        pts_cur = pts
        if seq != cur_seq:
            guess = motion.apply(predicted if predicted is not None else motion.identity(),
                                 pts)
            new, ok = motion.track_points(frame, cur, pts, self.config.fb_threshold,
                                          guess=guess)
            fit = motion.fit_similarity(pts[ok], new[ok]) if ok.sum() >= MIN_POINTS else None
            if fit is None or fit.inlier_count < MIN_POINTS:
                lost = "the model's mask could not be carried to the current frame"
                transform = predicted if predicted is not None else motion.identity()
                pts = pts_cur = np.empty((0, 2), np.float32)
            else:
                transform = fit.transform
                pts, pts_cur = pts[ok][fit.inliers], new[ok][fit.inliers]
        elif len(pts) < MIN_POINTS:
            lost = f"only {len(pts)} trackable points in the model's mask"
        t.key_mask, t.key_small, t.key_area, t.key_box = a.mask, a.small, a.area, a.box
        t.key_seq, t.redetect_at = seq, -1
        t.score, t.transform, t.misses = a.score, transform, 0
        t.epoch = self._scene.epoch_at(seq)
        t.pts_key, t.pts_cur = pts, pts_cur
        t.mask, t.area, t.box = (t.key_mask, t.key_area, t.key_box) if seq == cur_seq else (
            None, 0, (0, 0, -1, -1))
        t.history.clear()
        t.history.append((seq, motion.identity()))
        if cur_seq != seq:
            t.history.append((cur_seq, transform.copy()))
        if lost and not t.lost:
            self._events.append((t.track_id, lost))
        t.lost = lost


@dataclass
class _Answered:
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

    @classmethod
    def of(cls, index: int, mask: np.ndarray, score: float, frame: WorkingFrame) -> _Answered:
        full = (np.asarray(mask) != 0).astype(np.uint8)
        small = resize_mask(full, frame.size)
        pts = motion.detect_points(frame.grey, small, MAX_OBJECT_POINTS)
        return cls(index, full, small, int(cv2.countNonZero(full)), motion.box_of(full), pts,
                   score)
