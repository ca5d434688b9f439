"""QueryTracker: the objects of one standing query, grounded by the model, carried by motion.

Two inputs, usually from two threads (the tracker is thread-safe):

* :meth:`QueryTracker.step` for every camera frame the caller can keep up with (newest first):
  each live track's points are followed with forward-backward-checked Lucas-Kanade, a
  similarity is fitted key frame -> this frame, and the *model's* mask is warped by it (see
  :mod:`.motion` for why this and not frame-to-frame dense flow; the per-track rule is
  :mod:`.follow`). A track carried on part of its points is OCCLUDED; one with too few points
  left, whose motion is not rigid, whose mask collapses or leaves the image leaves the output
  on that frame (never kept at its old place) and is remembered: PREDICTED by its
  Kalman-filtered motion, OUT_OF_VIEW or REMEMBERED (:mod:`.state`; the bookkeeping is
  :mod:`.permanence`), forgotten after ``memory`` seconds. Every few frames a hidden track
  whose predicted place is in view is looked for there and taken back without waiting for the
  model (:mod:`.reacquire`). When most points of the whole image fail at once (:mod:`.scene`)
  every track is remembered without a position.
* :meth:`QueryTracker.ground` for every model answer, which is for some frame in the past (the
  model takes hundreds of milliseconds to seconds): its masks are matched to the tracks *as they
  were on that frame* (mask IoU, optimal assignment, :mod:`.identity`), matched tracks keep
  their id, the others are compared with the remembered tracks (appearance gated by position,
  :mod:`.memory`) and only then get new ids (an object's descriptor is computed only then, or
  once a second for a tracked one); live tracks missed by ``max_misses`` answers in a row are
  remembered; then
  each answered mask becomes its track's new key and is carried from the answered frame to the
  newest processed one (LK seeded with the motion known since, so a gap of many frames works).

Frames and answers are identified by a sequence number that grows with the camera's frames
(the node's frame counter, the bag's frame index); ``grounding`` is whatever the caller wants
back with every output (the node keeps the answer's stamp and text there); their times come
from :mod:`.clock`, the records the tracker keeps from :mod:`.track`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from stamp_ros.tracking import follow, motion
from stamp_ros.tracking.appearance import Appearance, ClassicAppearance
from stamp_ros.tracking.clock import FrameClock
from stamp_ros.tracking.follow import MIN_POINTS
from stamp_ros.tracking.identity import TrackIds, assign_by_iou, iou_matrix
from stamp_ros.tracking.image import WorkingFrame
from stamp_ros.tracking.permanence import HOLD_S, Permanence
from stamp_ros.tracking.reacquire import Template
from stamp_ros.tracking.scene import SceneMotion
from stamp_ros.tracking.state import (
    OCCLUDED,
    PREDICTED,
    REIDENTIFIED,
    REMEMBERED,
    TRACKED,
    FrameTracks,
    HiddenTrack,
    TrackedObject,
    TrackerConfig,
)
from stamp_ros.tracking.track import GALLERY_EVERY, Answered, Outbox, Track
from stamp_ros.tracking.visibility import WHOLE_IN_SIGHT, visible_part

CONFIRM_INSIDE = 0.5
"""A partial view confirms a whole-keyed track when this share of it lies on the track."""
TEMPLATE_AGE = 2.0
"""An answer replaces a track's template (:mod:`.reacquire`) when its mask is at least
:data:`.follow.TEMPLATE_AREA` of the template's (a half-hidden view is a worse template than the
whole one), or when the template is older than this (s): the object's look and size drift.
Never by a view cut by the image border (it would be looked for as the whole object)."""


class QueryTracker:
    """The tracks of one query on one camera (see the module docstring)."""

    def __init__(self, ids: TrackIds, config: TrackerConfig | None = None,
                 appearance: Appearance | None = None) -> None:
        self.ids = ids
        self.config = config or TrackerConfig()
        self.appearance: Appearance = appearance or ClassicAppearance()
        """The descriptor remembered tracks are recognised by (pluggable: :mod:`.appearance`)."""
        self._lock = threading.RLock()
        self._tracks: list[Track] = []
        self._prev: WorkingFrame | None = None
        self._prev_seq = -1
        self._scene = SceneMotion()
        self._answered_seq = -1
        self._clock = FrameClock(self.config.frame_rate)
        self._outbox = Outbox()
        self._hidden = Permanence(self.config, self._clock, self._scene, self.appearance,
                                  self._outbox)
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
            return [t.track_id for t in self._tracks if t.live]

    def lost_ids(self) -> dict[int, str]:
        """Remembered tracks not seen now: id -> why they left the output."""
        with self._lock:
            return {t.track_id: t.lost for t in self._tracks if t.lost}

    def states(self) -> dict[int, str]:
        """Every known track's state (TRACKED, OCCLUDED, REIDENTIFIED or a hidden state)."""
        with self._lock:
            return {t.track_id: self._visible_state(t) if t.live else t.state
                    for t in self._tracks}

    def newest_frame(self) -> tuple[int, WorkingFrame | None]:
        """The newest frame stepped (or grounded on) and its sequence number; (-1, None)
        before the first. The frame tells the size the tracks live in."""
        with self._lock:
            return self._prev_seq, self._prev

    # ------------------------------------------------------------------ time and 3D
    def time_of(self, seq: int) -> float:
        """Seconds of frame ``seq`` (:class:`~.clock.FrameClock`)."""
        with self._lock:
            return self._clock.time_of(seq)

    def observe_3d(self, track_id: int, seq: int, xyz: Sequence[float]
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """A 3D centroid of track ``track_id`` on frame ``seq`` (the caller's 3D frame, m):
        updates its 3D Kalman filter; returns the filtered (position, velocity), None for an
        unknown track. Used for gating its re-identification once it is hidden."""
        with self._lock:
            t = next((t for t in self._tracks if t.track_id == track_id), None)
            if t is None or not np.all(np.isfinite(xyz)):
                return None
            return self._hidden.observe_3d(t, seq, xyz)

    # ------------------------------------------------------------------ per frame
    def step(self, seq: int, frame: WorkingFrame, stamp: float | None = None
             ) -> FrameTracks | None:
        """Carry the tracks to frame ``seq`` (``stamp``: its time in seconds, e.g. the
        header's; None: seq/frame_rate). None before the first model answer (the motion of
        the scene is followed meanwhile) and for a frame older than the newest processed."""
        with self._lock:
            if seq < self._prev_seq:
                return None
            self._clock.record(seq, stamp)
            if seq > self._prev_seq:
                self._advance(seq, frame)
                self._tracks = self._hidden.expire(self._tracks, seq)
            if self.grounded_seq < 0:
                self._outbox.clear()
                return None
            return self._output(seq, frame)

    def _advance(self, seq: int, frame: WorkingFrame) -> None:
        prev = self._prev
        self._prev, self._prev_seq = frame, seq
        if prev is None or prev.size != frame.size or prev.full_size != frame.full_size:
            if prev is not None:  # a new resolution: nothing carries over
                self._hidden.lose_all(self._tracks, "the image size changed", seq, True)
                self._scene.epoch += 1
                self._scene.last_change_seq = seq
                self._outbox.scene_change = True
            self._scene.start(frame, seq)
            return
        live = [t for t in self._tracks if t.live]
        objects = follow.region(live, frame.size) if live else None
        self._scene.drop(objects)  # the camera's motion is the background's
        sets = [self._scene.pts] + [t.pts_cur for t in live]
        new, ok = motion.track_points(prev, frame, np.concatenate(sets),
                                      self.config.fb_threshold)
        bounds = np.cumsum([len(s) for s in sets])[:-1]
        new_sets, ok_sets = np.split(new, bounds), np.split(ok, bounds)
        step = self._scene.update(frame, seq, new_sets[0], ok_sets[0], self.config.scene_change,
                                  objects, ok[bounds[0]:] if live else None)
        if step.changed:
            self._outbox.scene_change = True
            self._hidden.lose_all(self._tracks, f"scene change ({step.failed_fraction:.0%} of "
                                  "the image's points failed)", seq)
            return
        now = self._clock.time_of(seq)
        for track, pts, good in zip(live, new_sets[1:], ok_sets[1:], strict=True):
            why, state = follow.move(track, seq, frame, pts, good)
            if why:
                self._hidden.hide(track, why, state, seq, frame.grey)
            elif self._visible_state(track) != OCCLUDED and follow.whole_key(track):
                # few points, or a key that shows part of it (points on what hides the rest):
                # its motion is too uncertain to learn from
                self._hidden.observe(track, seq, now, motion.apply(track.transform,
                                                                   track.key_centre[None])[0])
        merged = self._hidden.reacquire(self._tracks, seq, frame)
        if merged:
            self._tracks = [t for t in self._tracks if t not in merged]

    def _visible_state(self, t: Track) -> str:
        if self._clock.time_of(self._prev_seq) < t.reid_until:
            return REIDENTIFIED
        if follow.occluded(t) or t.in_sight < follow.OCCLUDED_BELOW:
            return OCCLUDED
        return TRACKED

    def _output(self, seq: int, frame: WorkingFrame) -> FrameTracks:
        now = self._clock.time_of(seq)
        objects, hidden = [], []
        for t in self._tracks:
            p3 = v3 = None
            if t.kf3 is not None:
                p3, v3 = t.kf3.position_at(now), t.kf3.velocity
            if t.live and now < t.tentative_until:
                continue  # held back: it may yet be a remembered track (permanence.py)
            if not t.live:
                hidden.append(HiddenTrack(t.track_id, t.state, now - t.hidden_t,
                                          self._hidden.predicted_full(t, seq, frame, now), p3))
                continue
            if t.mask is None:
                t.mask, t.area, t.box = motion.place_mask(
                    t.key_mask, t.key_box, motion.full_resolution(t.transform, frame),
                    frame.full_size)
                if t.amodal and t.key_grey is not None:  # just taken back: its part in sight
                    seen = follow.in_sight(t, frame)
                    t.mask, t.area, t.box = follow.cut(t.mask, seen, frame)
            state = self._visible_state(t)
            objects.append(TrackedObject(
                t.track_id, t.mask.view(bool), t.box, t.area, t.score,
                state=state, age=now - t.first_t,
                ambiguous_with=t.ambiguous_with if state == REIDENTIFIED else (),
                visible=min(t.in_sight, len(t.pts_cur) / t.support if t.support else 1.0),
                position_3d=p3, velocity_3d=v3))
        out = FrameTracks(seq, objects, propagated=self._answered_seq != seq,
                          grounded_seq=self.grounded_seq, grounding=self.grounding,
                          scene_change=self._outbox.scene_change, hidden=hidden,
                          events=list(self._outbox.events))
        self._outbox.clear()
        return out

    # ------------------------------------------------------------------ per model answer
    def ground(self, seq: int, frame: WorkingFrame, masks: Sequence[np.ndarray],
               scores: Sequence[float] | None = None, grounding: Any = None,
               positions_3d: Sequence[Sequence[float] | None] | None = None) -> list[int]:
        """A model answer for frame ``seq`` (its working frame and its full-resolution masks,
        in answer order). Returns the track id of each mask (0: not tracked, i.e. an empty or
        too small mask, or an answer older than the last scene change that matches no track).
        Masks matching no live track are compared with the remembered tracks
        (:mod:`.memory`) before they get new ids; ``positions_3d`` (per mask, optional) gate
        that comparison in 3D. The per-mask preparation (downscaling, corner search) runs
        before the tracker's lock is taken, so the frame thread waits only for the matching,
        the descriptors memory needs (objects matching no live track; a tracked object's once
        per GALLERY_EVERY) and the carry."""
        scores = list(scores) if scores is not None else [0.0] * len(masks)
        answered = [Answered.of(i, m, float(scores[i]), frame) for i, m in enumerate(masks)]
        usable = [a for a in answered if a.small.any()]
        with self._lock:
            if seq > self._prev_seq:  # the answer is ahead of the frames stepped so far
                self._advance(seq, frame)
            size = self._prev.size
            tracks = list(self._tracks)
            epoch = self._scene.epoch_at(seq)
            comparable = [t for t in tracks if t.epoch == epoch
                          and (t.live or t.hidden_seq >= seq) and t.history]
            where = [t.small_mask_at(seq, size) for t in comparable]
            overlap = iou_matrix([a.small for a in usable], where)
            for j, t in enumerate(comparable):
                if t.amodal:  # a whole view seen in part: the answer shows that part
                    overlap[:, j] = np.maximum(overlap[:, j], [
                        _on(a.small, where[j]) for a in usable])
            pairs = assign_by_iou(overlap, self.config.min_iou)
            ids = [0] * len(masks)
            matched: dict[int, Track] = {}
            for row, col in pairs:
                matched[usable[row].index] = comparable[col]
                ids[usable[row].index] = comparable[col].track_id
            if seq < self._scene.last_change_seq:
                return ids  # about the scene before a change: identity only, no re-keying
            now = self._clock.time_of(seq)
            for a in usable:  # describing costs: only what memory or a due gallery needs
                t = matched.get(a.index)
                if t is None or (now - t.gallery_t >= GALLERY_EVERY
                                 and (not a.at_border or not t.gallery)):
                    a.describe(self.appearance)
            returned = self._hidden.recall(
                seq, frame, self._tracks, [a for a in usable if a.index not in matched],
                set(matched.values()), positions_3d or [], self._prev_seq)
            for a in usable:
                track = matched.get(a.index)
                back = returned.get(a.index)
                if track is None and back is not None:
                    track = back
                fresh = track is None
                if fresh:
                    track = Track(self.ids.next(), first_t=now)
                    if a.at_border and self._hidden.may_come_back(tracks):
                        track.tentative_until = self._clock.time_of(self._prev_seq) + HOLD_S
                    self._tracks.append(track)
                ids[a.index] = track.track_id
                if not fresh and a.index in matched and self._confirms(track, seq, frame, a):
                    continue
                self._rekey(track, seq, frame, a, is_new=a.index not in matched)
                if fresh and not track.live:
                    # never followed (its mask could not be carried): not to be recognised
                    # later, or a half-seen object at the image border would take the id of
                    # the whole one when it comes back
                    track.gallery.clear()
            kept = set(matched.values()) | set(returned.values())
            for t in tracks:
                if t not in kept and t.live:
                    t.misses += 1
                    if t.misses >= max(1, self.config.max_misses):
                        self._hidden.hide(t, f"not in the model's last {t.misses} answers",
                                   REMEMBERED, self._prev_seq)
            if self.config.memory <= 0:
                self._tracks = [t for t in self._tracks if t.live]
            self.grounding, self.grounded_seq = grounding, seq
            if seq == self._prev_seq:
                self._answered_seq = seq
            return ids

    def _confirms(self, t: Track, seq: int, frame: WorkingFrame, a: Answered) -> bool:
        """A partial view of a live track keyed on a whole one, lying on it, on a frame where
        part of the whole view no longer agrees with the image (:mod:`.visibility`): the answer
        confirms the track (its misses and score) and the whole key stays, cut to the part in
        sight (``amodal``, :mod:`.visibility`). Re-keyed on the partial view, the track would
        carry the occluder's points along and its mask would stay that part when the object
        comes out."""
        if not t.live or t.template is None or t.key_grey is None or not follow.whole_key(t):
            return False
        if a.area >= follow.TEMPLATE_AREA * t.template.area:
            return False  # a whole view: the new key
        if not _on(a.small, t.small_mask_at(seq, a.small.shape[::-1])):
            return False
        seen, whole = visible_part(t.key_grey, t.key_small, t.transform_at(seq), frame.grey)
        if cv2.countNonZero(seen) >= WHOLE_IN_SIGHT * whole:
            return False  # all of it agrees with the frame: a tighter mask, not a partial view
        t.misses, t.score, t.amodal = 0, a.score, True
        return True

    def _rekey(self, t: Track, seq: int, frame: WorkingFrame, a: Answered,
               is_new: bool) -> None:
        """Make the answered mask the track's key and carry it to the newest processed frame."""
        cur, cur_seq = self._prev, self._prev_seq
        pts = a.pts
        predicted = None
        if not is_new and t.live:
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
        was_live = t.live and t.kf is not None
        was_whole = was_live and follow.whole_key(t)
        was_hidden = not t.live
        old_centre = (motion.apply(t.transform, t.key_centre[None])[0]
                      if was_live else None)
        t.key_mask, t.key_small, t.key_area, t.key_box = a.mask, a.small, a.area, a.box
        t.key_grey, t.amodal, t.in_sight, t.emerging = frame.grey, False, 1.0, False
        t.key_seq, t.redetect_at = seq, -1
        t.score, t.transform, t.misses = a.score, transform, 0
        t.epoch = self._scene.epoch_at(seq)
        t.pts_key, t.pts_cur = pts, pts_cur
        t.support = len(pts_cur)
        t.key_centre = a.centre.copy()
        if a.descriptor is not None:
            t.gallery.append(a.descriptor)
            t.gallery_t = self._clock.time_of(seq)
        if t.template is None or (not a.at_border and (
                a.area >= follow.TEMPLATE_AREA * t.template.area
                or self._clock.time_of(seq) - self._clock.time_of(t.template.seq) > TEMPLATE_AGE)):
            t.template = Template.of(seq, frame, a.small, a.centre, a.mask, a.box,
                                     a.area) or t.template
        t.mask, t.area, t.box = (t.key_mask, t.key_area, t.key_box) if seq == cur_seq else (
            None, 0, (0, 0, -1, -1))
        t.history.clear()
        t.history.append((seq, motion.identity()))
        if cur_seq != seq:
            t.history.append((cur_seq, transform.copy()))
        new_centre = motion.apply(transform, t.key_centre[None])[0]
        if lost:
            if t.live:
                self._hidden.hide(t, lost, PREDICTED, cur_seq, cur.grey)
            return
        t.lost, t.state, t.hidden_grey = "", TRACKED, None
        camera = self._scene.camera_at(cur_seq)
        if old_centre is not None and camera is not None and camera[0] == t.kf_epoch:
            # the filter follows the centre of the whole object: a partial view's centroid is
            # not it (the filter goes on predicting it); a whole one after a partial one
            # restarts its position there; one whole view after another is another point of
            # the same object (the model's cells, its jitter): move the filter's position by
            # the difference, keep its velocity
            if not follow.whole_key(t):
                return
            if not was_whole:
                self._hidden.observe(t, cur_seq, self._clock.time_of(cur_seq), new_centre,
                                     restart=True)
                return
            inv = np.linalg.inv(camera[1])
            shift = (motion.apply(inv, new_centre[None]) - motion.apply(inv, old_centre[None]))
            t.kf.shift(shift[0])
        else:
            self._hidden.observe(t, cur_seq, self._clock.time_of(cur_seq), new_centre,
                                 restart=was_hidden)


def _on(part: np.ndarray, whole: np.ndarray) -> float:
    """Share of ``part`` on ``whole`` when it is at least CONFIRM_INSIDE, else 0: how well a
    partial view matches a track carrying the whole object (IoU would count the hidden rest
    against it)."""
    area = cv2.countNonZero(part)
    share = cv2.countNonZero(part & whole) / area if area else 0.0
    return share if share >= CONFIRM_INSIDE else 0.0
