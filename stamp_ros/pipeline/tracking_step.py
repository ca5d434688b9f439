"""One tracked frame, and the grounding of tracks on a model answer: the node's and the bag's.

The node (:class:`stamp_ros.ros.tracking.TrackStream`, a thread beside the executor) and
``stamp-ros bag --track`` (:class:`stamp_ros.bag.tracking.TrackReplay`, in bag time) differ in
*when* a frame is tracked and an answer arrives; *what* happens then is written once, here:

* :func:`track_frame`: the frame at the tracker's working size, one
  :meth:`~stamp_ros.tracking.QueryTracker.step`, the tracks lifted to 3D by the caller's lifter
  (the node's with tf2, the bag's in the camera frame), and the ``~/tracks`` message;
* :meth:`TrackedFrame.overlay`: the frame with the tracks drawn and labelled ``#<track id>``;
* :func:`ground_tracks`: a model answer's masks handed to the tracker (on the answered frame)
  and the track ids written into the answer's ``~/result``. The size rule: an answer whose
  frame has another size than the tracker's newest frame (the camera changed resolution, or
  ``track_max_side`` changed, while the answer was in flight) is about an image geometry the
  tracks no longer live in. For the tracker a new size is a scene change (every track is lost
  at the first frame of the new size, and a fresh answer is asked for), so such an answer
  grounds nothing: its objects get track id 0, and the next answer on a frame of the new size
  grounds the tracks again. An answer for a frame *newer* than the tracker's is the tracker's
  own case (it takes the new size from it) and grounds as usual.

A tracked frame whose :attr:`~stamp_ros.tracking.FrameTracks.refresh_reason` is set (a lost
track, a scene change) asks the caller to clear its answer reuse, so the next model run writes
its answer afresh; both callers do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stamp_ros.pipeline.params import TRACKER_PARAMS
from stamp_ros.pipeline.results import MessageKit, ModelAnswer, mark_tracked, tracks_msg
from stamp_ros.spatial.depth3d import Lift3D
from stamp_ros.tracking import (
    FrameTracks,
    QueryTracker,
    TrackerConfig,
    WorkingFrame,
    working_frame,
)

__all__ = ["Lifter", "TrackedFrame", "answers_another_geometry",
           "ground_tracks", "query_continues_tracks", "track_frame", "tracker_config"]

def tracker_config(param: Callable[[str], Any]) -> TrackerConfig:
    """The tracker's configuration from ``param(name)`` for each of
    :data:`~stamp_ros.pipeline.params.TRACKER_PARAMS` (the node's parameters, the bag's
    options), each value converted to the field's type."""
    defaults = TrackerConfig()
    return TrackerConfig(**{field: type(getattr(defaults, field))(param(name))
                            for name, field in TRACKER_PARAMS.items()})

Lifter = Callable[[Any, list[np.ndarray], int | None], Lift3D]
"""``(header, full-size masks, max_pixels) -> Lift3D``: the caller's 3D step for one frame's
objects, each sampled on at most ``max_pixels`` depth pixels (None: all of them)."""
TRACKED_LIFT_PIXELS = 20_000
"""Depth pixels at most that a tracked frame lifts per object (a regular grid over it,
:func:`~stamp_ros.spatial.geometry.mask_points`): lifting every pixel of three large objects
took 260 ms per frame on two shared cores and held ``~/tracks`` at 3.6 Hz. The centroid and
box move by about a grid step's footprint; the answered frames' 3D (and point cloud) use every
pixel."""


@dataclass
class TrackedFrame:
    """What one frame's tracking step produced."""

    tracks: FrameTracks
    """The tracker's output: the live tracks (ids, full-size masks) and a refresh reason."""
    message: Any
    """The frame's ``~/tracks`` Segmentation (its own header, the tracks' 3D)."""
    rgb: np.ndarray
    """The frame the tracks were carried onto (the overlay is drawn on it)."""

    def overlay(self) -> np.ndarray:
        """The frame with every track drawn in its id's colour and labelled ``#<id>``."""
        from stamp_ros.render.overlay import render_overlay

        ids = [o.track_id for o in self.tracks.objects]
        return render_overlay(self.rgb, [o.mask for o in self.tracks.objects],
                              self.message.answer, labels=[f"#{i}" for i in ids], colors=ids)


def track_frame(tracker: QueryTracker, seq: int, rgb: np.ndarray, header: Any, *, query: str,
                model: str, lift: Lifter, kit: MessageKit,
                received: float | None = None) -> TrackedFrame | None:
    """Carry ``tracker``'s tracks onto frame ``seq`` and build its ``~/tracks`` message.

    None until the tracker has been grounded on a first answer. ``received`` (monotonic
    seconds, the node's arrival time) adds the frame's wait to the message's timings and
    counts ``total_ms`` from it; without it (a bag) ``total_ms`` is this step alone.
    """
    t0 = time.monotonic()
    work = working_frame(rgb, tracker.config.max_side)
    t1 = time.monotonic()
    out = tracker.step(seq, work, stamp=stamp_seconds(getattr(header, "stamp", None)))
    t2 = time.monotonic()
    if out is None:
        return None
    lifted = lift(header, [o.mask for o in out.objects], TRACKED_LIFT_PIXELS)
    for obj, o3d in zip(out.objects, lifted.objects, strict=False):
        if o3d is not None:  # the track's 3D Kalman filter (position/velocity, re-id gate)
            filtered = tracker.observe_3d(obj.track_id, seq, o3d.centroid)
            if filtered is not None:
                obj.position_3d, obj.velocity_3d = filtered
    timings = {"preprocess": (t1 - t0) * 1e3, "mask": (t2 - t1) * 1e3}
    if received is not None:
        timings["wait"] = (t0 - received) * 1e3
    msg = tracks_msg(seq=seq, header=header, query=query, model=model, tracks=out,
                     objects=lifted.objects, frame_id_3d=lifted.frame_id,
                     reasons_3d=[r.text if r else "" for r in lifted.reasons],
                     depth_fractions=lifted.fractions, timings_ms=timings, kit=kit)
    done = time.monotonic()
    msg.postprocess_ms = float((done - t2) * 1e3)
    msg.total_ms = float((done - (t0 if received is None else received)) * 1e3)
    return TrackedFrame(out, msg, rgb)


def ground_tracks(tracker: QueryTracker, seq: int, rgb: np.ndarray, result: Any,
                  seg: Any) -> list[int]:
    """Ground ``tracker`` on a model answer and write the track ids into its ``~/result``.

    ``result`` is the engine's answer on frame ``seq`` (``rgb``), ``seg`` the Segmentation
    built from it; the tracks remember what they were grounded on (``model_stamp``, answer,
    request id) for every ``~/tracks`` message until the next answer. Returns the track id of
    each instance, in order (all 0 for an answer on a frame of another size than the tracker's
    newest: see the module docstring).
    """
    instances: Sequence[Any] = result.instances
    answer = ModelAnswer(stamp=seg.header.stamp, answer=seg.answer,
                         answer_reused=bool(seg.answer_reused), request_id=seg.request_id)
    work = working_frame(rgb, tracker.config.max_side, colour=True)  # appearance: colour
    ids = [0] * len(instances)
    if not answers_another_geometry(tracker, seq, work):
        try:
            ids = tracker.ground(seq, work, [inst.mask for inst in instances],
                                 [inst.score for inst in instances], grounding=answer)
        except Exception:
            # The frame thread stepped a frame of another size between the check and the
            # matching (the node's tracking thread runs beside the answers): the same rule.
            if not answers_another_geometry(tracker, seq, work):
                raise
    mark_tracked(seg, ids, tracker.states() if any(ids) else {})
    return ids


def stamp_seconds(stamp: Any) -> float | None:
    """A header stamp (``sec``/``nanosec``) in seconds; None when there is none or it is 0 (a
    camera without a clock: the tracker then counts frames at ``frame_rate``)."""
    sec = getattr(stamp, "sec", None)
    if sec is None:
        return None
    value = float(sec) + float(getattr(stamp, "nanosec", 0)) * 1e-9
    return value if value > 0 else None


def query_continues_tracks(tracked: str, query: str) -> bool:
    """A query message for a camera that already tracks ``tracked``: the same text (up to
    surrounding whitespace) is the same query, and its tracks go on with their ids (issue 31;
    a re-sent query only asks for a fresh answer). Another text starts a new tracker."""
    return bool(tracked.strip()) and tracked.strip() == query.strip()


def answers_another_geometry(tracker: QueryTracker, seq: int, work: WorkingFrame) -> bool:
    """The size rule: the answered frame ``seq`` (as ``work``) is not newer than the tracker's
    newest frame and differs from it in full or working size, so its masks cannot be compared
    with the tracks (nor carried to the frames the tracker is at)."""
    newest_seq, newest = tracker.newest_frame()
    if newest is None or seq > newest_seq:
        return False  # the tracker advances to this frame itself (a new size: scene change)
    return newest.size != work.size or newest.full_size != work.full_size
