"""Hidden-track bookkeeping: hiding a track, predicting it, forgetting it, and recalling it
from an answer.

A track that leaves the output is not dropped (issue 31): it is hidden with a state
(:mod:`.state`: PREDICTED by its motion, OUT_OF_VIEW, REMEMBERED), its image motion is kept in
a constant-velocity Kalman filter with the camera's motion removed (:mod:`.kalman`, the scene
epoch's coordinates of :mod:`.scene`), it is forgotten after ``memory`` seconds, and a model
answer's object that matches no live track is compared with it (:mod:`.memory`) before it gets
a new id. The tracker (:mod:`.tracker`) decides *when* (per frame, per answer); this module
holds *how*, so the tracker stays about carrying and grounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from stamp_ros.tracking import follow, motion
from stamp_ros.tracking.appearance import Appearance
from stamp_ros.tracking.clock import FrameClock
from stamp_ros.tracking.image import WorkingFrame
from stamp_ros.tracking.kalman import ConstantVelocity
from stamp_ros.tracking.memory import Candidate, gate_radius, gate_radius_3d, reidentify
from stamp_ros.tracking.reacquire import Found, Template, entering, find
from stamp_ros.tracking.scene import SceneMotion
from stamp_ros.tracking.state import (
    OUT_OF_VIEW,
    PREDICTED,
    REIDENTIFIED_S,
    REMEMBERED,
    TRACKED,
    TrackerConfig,
    TrackEvent,
)
from stamp_ros.tracking.track import Answered, Outbox, Track
from stamp_ros.tracking.visibility import changed

ACCEL = 400.0
"""Image Kalman filter: acceleration noise (working px/s^2)."""
ACCEL_3D = 2.0
"""3D Kalman filter: acceleration noise (m/s^2)."""
UNGATED_MARGIN = 0.15
"""A remembered track without a predicted position (out of view, after a scene change) needs
this much more appearance similarity than ``reid_threshold``: different objects reach up to
0.57 on the benchmark (docs/tracking.md), the same object 0.8-0.9 seen whole (but 0.58 while
it enters at the image border: see the limits). It also needs positive geometric evidence
(:meth:`.appearance.Appearance.verified`): two regions of one kind of texture (another room of
the same clutter) reach 0.65-0.76 on the colour histogram alone, and a colour histogram is no
identity evidence without a place to be. Not after an image size change (the same view
rescaled, no cut: the keypoints' scale changed, not the scene)."""
REACQUIRE_EVERY = 3
"""Frames between two looks for one hidden track between answers (10 Hz at 30 Hz: an object
coming out is taken back within a tenth of a second, at a third of the cost)."""
IN_VIEW = 0.3
"""A hidden track is looked for only where at least this share of its box would be in view
(less and the model's next answer decides)."""
TAKEN_IOU = 0.2
"""A find overlapping a live track (or an earlier find on the frame) this much is that object."""
REACQUIRE_RADIUS = 0.75
"""A hidden track is found again only within this share of its size (the square root of its
core's area) of where its motion puts it: a look-alike further off is not it."""
ENTRY_SPEED = 10.0
"""Working px/s of its own (camera motion removed) from which a track that went out of view
is looked for along the image borders."""
ENTRY_RADIUS = 0.5
"""A border find must lie within this share of REACQUIRE_RADIUS of the border search's
guess."""
MERGE_RADIUS = 0.5
"""A remembered track's template found on a young track must lie within this share of its
size of the young track's centre."""
HOLD_S = 1.0
"""Seconds a young track born at the image border, looking like a track that left the view,
is held back from the output while its view is checked against that track's."""
BACKFILL = 30
"""Frames before a find that get a position from the track's motion (answers in flight for
them compare with it there)."""


class Permanence:
    """The hidden side of one tracker's tracks (see the module docstring). Not thread-safe: the
    tracker's lock guards it."""

    def __init__(self, config: TrackerConfig, clock: FrameClock, scene: SceneMotion,
                 appearance: Appearance, outbox: Outbox) -> None:
        self.config = config
        self.clock = clock
        self.scene = scene
        self.appearance = appearance
        self.outbox = outbox
        self._alike: dict[tuple[int, int], bool] = {}

    # ------------------------------------------------------------------ hiding
    def hide(self, t: Track, why: str, state: str, seq: int, grey: np.ndarray | None = None,
             rescaled: bool = False) -> None:
        """The track leaves the output (remembered): why, which hidden state, and the grey
        working frame it left on (``grey``; a part of it found later must have come into sight
        since: :func:`.reacquire.find`)."""
        if state == PREDICTED and (t.kf is None or t.kf_epoch != self.scene.epoch):
            state = REMEMBERED
        t.lost, t.state, t.rescaled = why, state, rescaled
        t.hidden_t, t.hidden_seq = self.clock.time_of(seq), seq
        t.hidden_grey = grey
        t.next_try = seq + REACQUIRE_EVERY  # not found again where it was just lost
        t.mask = None
        self.outbox.events.append(TrackEvent("lost", t.track_id, seq, why))

    def lose_all(self, tracks: Sequence[Track], why: str, seq: int,
                 rescaled: bool = False) -> None:
        for track in tracks:
            if track.live:
                self.hide(track, why, REMEMBERED, seq, rescaled=rescaled)

    def expire(self, tracks: Sequence[Track], seq: int) -> list[Track]:
        """Hidden tracks: predicted ones become merely remembered after ``max_prediction``;
        every remembered one is forgotten after ``memory`` seconds. Returns those kept."""
        now = self.clock.time_of(seq)
        kept = []
        for t in tracks:
            if t.live:
                kept.append(t)
                continue
            gone = now - t.hidden_t
            if gone > self.config.memory:
                self.outbox.events.append(TrackEvent("forgotten", t.track_id, seq,
                                                     f"not seen for {gone:.1f} s",
                                                     hidden_for=gone))
                continue
            if t.state == PREDICTED and gone > self.config.max_prediction:
                t.state = REMEMBERED
            kept.append(t)
        return kept

    # ------------------------------------------------------------------ motion
    def observe(self, t: Track, seq: int, now: float, centre: np.ndarray,
                restart: bool = False) -> None:
        """The track's centre on frame ``seq`` (working px) into its image Kalman filter, in
        the scene epoch's coordinates (camera motion removed: a still object stays still).
        ``restart``: the track comes back from hiding; its position starts over here, its
        velocity (the best estimate of its motion) is kept."""
        camera = self.scene.camera_at(seq)
        if camera is None:
            return
        epoch, acc = camera
        world = motion.apply(np.linalg.inv(acc), centre[None].astype(np.float32))[0]
        if t.kf is None or t.kf_epoch != epoch:
            t.kf = ConstantVelocity(world, now, accel=ACCEL, noise=2.0, velocity_sigma=60.0)
            t.kf_epoch = epoch
        elif restart:
            t.kf.shift(world - t.kf.position)
            t.kf.t = now
        else:
            t.kf.update(world, now)

    def observe_3d(self, t: Track, seq: int, xyz: Sequence[float]
                   ) -> tuple[np.ndarray, np.ndarray]:
        """A 3D centroid of ``t`` on frame ``seq`` into its 3D Kalman filter; returns the
        filtered (position, velocity)."""
        now = self.clock.time_of(seq)
        if t.kf3 is None:
            t.kf3 = ConstantVelocity(np.asarray(xyz, float), now, accel=ACCEL_3D, noise=0.03,
                                     velocity_sigma=1.0)
        else:
            t.kf3.update(np.asarray(xyz, float), now)
        return t.kf3.position, t.kf3.velocity

    def predicted(self, t: Track, seq: int, now: float, size: tuple[int, int]
                  ) -> np.ndarray | None:
        """A PREDICTED track's centre on frame ``seq`` (working px of an image of ``size``),
        from its motion and the camera's; None when it has no trusted prediction."""
        if t.state != PREDICTED or t.kf is None:
            return None
        camera = self.scene.camera_at(seq)
        if camera is None or camera[0] != t.kf_epoch:
            return None
        world = t.kf.position_at(now).astype(np.float32)
        p = motion.apply(camera[1], world[None])[0].astype(np.float64)
        w, h = size
        if not (0 <= p[0] < w and 0 <= p[1] < h):
            t.state = OUT_OF_VIEW  # its motion took it out of the image: it may come back
            return None  # anywhere (no position gate)
        return p

    def predicted_full(self, t: Track, seq: int, frame: WorkingFrame, now: float
                       ) -> tuple[float, float] | None:
        """:meth:`predicted` in full-resolution pixels of ``frame``."""
        p = self.predicted(t, seq, now, frame.size)
        if p is None:
            return None
        full = motion.apply(np.linalg.inv(frame.to_working()), p[None].astype(np.float32))[0]
        return float(full[0]), float(full[1])

    # ------------------------------------------------------------------ recall
    def recall(self, seq: int, frame: WorkingFrame, tracks: Sequence[Track],
               unmatched: list[Answered], taken: set[Track], positions_3d: Sequence,
               newest_seq: int) -> dict[int, Track]:
        """Unmatched answer objects re-identified as remembered tracks: answer index -> track
        (a ``returned`` event each)."""
        remembered = [t for t in tracks if not t.live and t not in taken and t.gallery]
        described = [a for a in unmatched if a.descriptor is not None]
        if not remembered or not described:
            return {}
        now = self.clock.time_of(seq)
        diagonal = float(np.hypot(*frame.size))
        candidates = []
        for t in remembered:
            sims = np.array([max(self.appearance.similarity(g, a.descriptor) for g in t.gallery)
                             for a in described])
            gone = max(0.0, now - t.hidden_t)
            size = float(np.sqrt(max(1, int(t.key_small.sum()))))
            predicted = self.predicted(t, seq, now, frame.size)
            p3 = t.kf3.position_at(now) if t.kf3 is not None and t.state == PREDICTED else None
            if predicted is None and p3 is None:  # nothing says where it is: look closer
                sims = np.array([
                    s if s >= self.config.reid_threshold + UNGATED_MARGIN and (t.rescaled or any(
                        self.appearance.verified(g, a.descriptor) for g in t.gallery))
                    else 0.0 for s, a in zip(sims, described, strict=True)])
            candidates.append(Candidate(t, sims, predicted, gate_radius(diagonal, size, gone),
                                        p3, gate_radius_3d(gone)))
        centres = np.array([a.centre for a in described])
        p3s = [positions_3d[a.index] if a.index < len(positions_3d) else None
               for a in described]
        out = {}
        for i, cand, sim, alike in reidentify(centres, p3s, candidates,
                                              self.config.reid_threshold):
            t: Track = cand.key
            a = described[i]
            out[a.index] = t
            gone = now - t.hidden_t
            t.reid_until = self.clock.time_of(newest_seq) + REIDENTIFIED_S
            t.ambiguous_with = tuple(k.track_id for k in alike)
            self.outbox.events.append(TrackEvent(
                "returned", t.track_id, seq, f"re-identified after {gone:.1f} s ({t.lost})",
                hidden_for=gone, similarity=sim, ambiguous_with=t.ambiguous_with))
        return out

    @staticmethod
    def may_come_back(tracks: Sequence[Track]) -> bool:
        """An answer object at the image border (matching no track) may be a track that is
        out of view or remembered without a position coming back: some such track has a
        template to look for on it. Its appearance cannot tell: a view cut by the border is
        too partial for the descriptor (a half view of the object that left scores below
        ``reid_threshold``); the template found on it can (:meth:`merge_young`)."""
        return any(not t.live and t.state != PREDICTED and t.template is not None
                   for t in tracks)

    # ------------------------------------------------------------------ between answers
    def expected(self, t: Track, seq: int, now: float) -> np.ndarray | None:
        """Where a hidden track's motion and the camera's put its centre on frame ``seq``
        (working px), its own motion extrapolated for at most ``max_prediction`` s (a still
        object the camera looked away from stays where it was in the scene); None without a
        filter in the current scene epoch. Unlike :meth:`predicted` it may lie outside the
        image and changes no state."""
        if t.kf is None:
            return None
        camera = self.scene.camera_at(seq)
        if camera is None or camera[0] != t.kf_epoch:
            return None
        horizon = min(now, t.hidden_t + self.config.max_prediction)
        world = t.kf.position_at(horizon).astype(np.float32)
        return motion.apply(camera[1], world[None])[0].astype(np.float64)

    def reacquire(self, tracks: Sequence[Track], seq: int, frame: WorkingFrame) -> list[Track]:
        """Hidden tracks whose expected box is in view, looked for there (every
        REACQUIRE_EVERY frames each, :func:`.reacquire.find`); a track found is live again
        (REIDENTIFIED, a ``returned`` event). Finds on a live track's place, and two tracks
        finding one place, are settled for the nearer prediction; look-alikes whose gate
        held the place are reported (``ambiguous_with``)."""
        now = self.clock.time_of(seq)
        size = frame.size
        diagonal = float(np.hypot(*size))
        live = [t for t in tracks if t.live]
        finds = []
        for t in tracks:
            if t.live or t.template is None or seq < t.next_try:
                continue
            centre = self.expected(t, seq, now)
            radius = REACQUIRE_RADIUS * float(np.sqrt(t.template.core.sum()))
            if centre is not None and _mostly_inside(t.template, centre, size):
                t.next_try = seq + REACQUIRE_EVERY
                camera = self.scene.between(t.template.seq, seq)
                guess = _moved_to(camera if camera is not None else motion.identity(),
                                  t.template.centre, centre)
                # in part only where its own motion is trusted (PREDICTED): a strip of it is
                # weak evidence anywhere a position does not back it
                found = find(t.template, frame, guess, radius, self.config.fb_threshold,
                             self._changed_since_lost(t, seq, frame)
                             if t.state == PREDICTED else None)
                how = "where its motion put it"
            elif self._left_on_its_own(t):
                t.next_try = seq + REACQUIRE_EVERY
                fresh = self._changed_since_lost(t, seq, frame)
                found = None if fresh is None else next(filter(None, (
                    find(t.template, frame, guess, ENTRY_RADIUS * radius,
                         self.config.fb_threshold, fresh)
                    for guess in entering(t.template, frame))), None)
                if found is not None:  # no prediction to be near: as near as can be
                    centre = motion.apply(found.transform, t.template.centre[None])[0]
                how = "coming in at the image border"
            else:
                continue
            if found is None:
                continue
            small = motion.warp_mask(t.template.small, found.transform, size)
            if any(motion.mask_iou(small, motion.warp_mask(u.key_small, u.transform, size))
                   >= TAKEN_IOU for u in live):
                continue  # a live track's place: that object, not this one
            d = float(np.linalg.norm(motion.apply(found.transform,
                                                  t.template.centre[None])[0] - centre))
            finds.append((d, t, found, small, how))
        finds.sort(key=lambda f: f[0])
        taken: list[np.ndarray] = []
        for _, t, found, small, how in finds:
            if any(motion.mask_iou(small, other) >= TAKEN_IOU for other in taken):
                continue
            taken.append(small)
            where = motion.apply(found.transform, t.template.centre[None])[0]
            if any(u is not t and not u.live and self._lookalike(t, u) and (
                    self._could_be_at(u, where, seq, now, diagonal) or self._left_on_its_own(u))
                   for u in tracks):
                continue  # a hidden look-alike could be there too: the next answer decides
            self._take_back(t, found, seq, frame, now, (), how=how)
        return self.merge_young(tracks, seq, frame, now)

    def _changed_since_lost(self, t: Track, seq: int, frame: WorkingFrame
                            ) -> np.ndarray | None:
        """Where ``frame`` (frame ``seq``) differs from the frame ``t`` was lost on, moved by
        the camera's motion since (:func:`.visibility.changed`; computed once per look, for
        every place tried); None without that frame, or across a scene change."""
        camera = self.scene.between(t.hidden_seq, seq)
        if t.hidden_grey is None or camera is None or t.hidden_grey.shape != frame.grey.shape:
            return None
        return changed(cv2.warpAffine(t.hidden_grey, camera[:2], frame.size,
                                      flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
                       frame.grey)

    def _left_on_its_own(self, t: Track) -> bool:
        """Out of view by its own motion (not the camera's): it may come back across any
        border (:func:`.reacquire.entering`), where a still object the camera turned from comes
        back where the camera's motion puts it."""
        return (t.state == OUT_OF_VIEW and t.kf is not None
                and float(np.linalg.norm(t.kf.velocity)) >= ENTRY_SPEED)

    def merge_young(self, tracks: Sequence[Track], seq: int, frame: WorkingFrame,
                    now: float) -> list[Track]:
        """A tentative track (born of a partial view at the image border that looked like a
        track gone out of view, not output yet) on which a remembered track's template is
        found, strictly (:func:`.reacquire.find` at the young track's place): the remembered
        track takes its place and keeps its id; the young one is dropped (returned) before its
        id was ever output."""
        dropped = []
        size = frame.size
        for young in tracks:
            if not young.live or now >= young.tentative_until or seq < young.next_try:
                continue
            young.next_try = seq + REACQUIRE_EVERY
            small = motion.warp_mask(young.key_small, young.transform, size)
            for old in tracks:
                if old.live or old.template is None or old.state == PREDICTED:
                    continue
                radius = MERGE_RADIUS * float(np.sqrt(old.template.core.sum()))
                camera = self.scene.between(old.template.seq, seq)
                guess = _moved_to(camera if camera is not None else motion.identity(),
                                  old.template.centre, _aligned(old.template, small, size))
                found = find(old.template, frame, guess, radius, self.config.fb_threshold)
                if found is None or motion.mask_iou(small, motion.warp_mask(
                        old.template.small, found.transform, size)) < TAKEN_IOU:
                    continue
                old.kf, old.kf_epoch, old.kf3 = young.kf, young.kf_epoch, young.kf3
                self._take_back(old, found, seq, frame, now, (), young=young)
                dropped.append(young)
                break
        return dropped

    def _take_back(self, t: Track, found: Found, seq: int, frame: WorkingFrame, now: float,
                   alike: tuple[int, ...], young: Track | None = None,
                   how: str = "on the young track it was") -> None:
        """Make the template the track's key, carried by ``found`` to frame ``seq`` (taking
        the place of ``young``: its motion and its past positions)."""
        tpl = t.template
        gone = now - t.hidden_t
        t.key_mask, t.key_small, t.key_area, t.key_box = tpl.mask, tpl.small, tpl.area, tpl.box
        t.key_seq, t.key_centre = tpl.seq, tpl.centre.copy()
        t.key_grey, t.amodal, t.in_sight, t.emerging = tpl.grey, True, 1.0, found.in_part
        t.epoch = self.scene.epoch_at(seq)
        t.transform = found.transform
        t.pts_key, t.pts_cur = found.pts_key, found.pts_cur
        t.support, t.redetect_at, t.misses = len(found.pts_cur), -1, 0
        t.mask, t.area, t.box = None, 0, (0, 0, -1, -1)
        # answers for the frames just before (in flight now) compare with where its
        # motion had it
        t.history.clear()
        here = motion.apply(found.transform, tpl.centre[None])[0]
        if young is not None:
            to_young = np.linalg.inv(young.transform) @ found.transform
            t.history.extend((s, m @ to_young) for s, m in young.history if s < seq)
        else:
            then = self.expected(t, seq, now)
            for s in range(max(t.hidden_seq, seq - BACKFILL), seq):
                was = self.expected(t, s, self.clock.time_of(s))
                if was is not None and then is not None:
                    shift = motion.identity()
                    shift[:2, 2] = was - then
                    t.history.append((s, shift @ found.transform))
        t.history.append((seq, found.transform.copy()))
        why = t.lost
        t.lost, t.state, t.hidden_grey = "", TRACKED, None
        self.observe(t, seq, now, here, restart=True)
        t.reid_until = now + REIDENTIFIED_S
        t.ambiguous_with = alike
        self.outbox.events.append(TrackEvent(
            "returned", t.track_id, seq, f"found again after {gone:.1f} s {how} ({why})",
            hidden_for=gone, similarity=found.zncc, ambiguous_with=alike))

    def _lookalike(self, a: Track, b: Track) -> bool:
        """Their galleries are as alike as one object's views (``reid_threshold``)."""
        key = (min(a.track_id, b.track_id), max(a.track_id, b.track_id))
        if key not in self._alike:
            self._alike[key] = any(
                self.appearance.similarity(g, h) >= self.config.reid_threshold
                for g in a.gallery for h in b.gallery)
        return self._alike[key]

    def _could_be_at(self, t: Track, where: np.ndarray, seq: int, now: float,
                     diagonal: float) -> bool:
        centre = self.expected(t, seq, now)
        if centre is None:
            return False
        size = float(np.sqrt(max(1, int(t.key_small.sum()))))
        return float(np.linalg.norm(where - centre)) <= gate_radius(
            diagonal, size, max(0.0, now - t.hidden_t))


def _moved_to(camera: np.ndarray, centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``camera`` followed by the translation that brings ``centre`` to ``target``."""
    moved = motion.apply(camera, centre[None].astype(np.float32))[0]
    out = camera.copy()
    out[:2, 2] += target - moved
    return out


def _aligned(template: Template, small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Where the template's centre would be if it were the object seen as ``small`` (working
    size), a view cut by the image border: on an axis where the view is shorter than the
    template's (TEMPLATE_AREA of it), the template's box is aligned with the view's on the side
    away from the nearer border; centred otherwise."""
    x, y, w, h = cv2.boundingRect(template.small)
    vx, vy, vw, vh = cv2.boundingRect(small)
    out = []
    for lo, ext, vlo, vext, side in ((x, w, vx, vw, size[0]), (y, h, vy, vh, size[1])):
        if vext >= follow.TEMPLATE_AREA * ext:
            out.append(vlo + vext / 2 - (lo + ext / 2))
        elif vlo < side - (vlo + vext):
            out.append(vlo + vext - (lo + ext))  # cut on the low side: align the high edges
        else:
            out.append(vlo - lo)
    return template.centre + np.array(out, np.float64)


def _mostly_inside(template: Template, centre: np.ndarray, size: tuple[int, int]) -> bool:
    """The template's core, centred on ``centre``, lies at least IN_VIEW inside the image."""
    x, y, w, h = cv2.boundingRect(template.core)
    dx, dy = centre - template.centre
    x0, y0, x1, y1 = x + dx, y + dy, x + dx + w, y + dy + h
    iw = max(0.0, min(x1, size[0]) - max(x0, 0.0))
    ih = max(0.0, min(y1, size[1]) - max(y0, 0.0))
    return iw * ih >= IN_VIEW * max(1, w * h)
