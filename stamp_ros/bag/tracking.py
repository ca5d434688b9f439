"""``stamp-ros bag --track``: ``/stamp/tracks`` for every frame, with the node's semantics.

The node runs the model whenever it is free and carries the tracks by image motion on every
camera frame in between; a bag is replayed faster or slower than real time, so when the model
answers is simulated in bag time, one of two ways:

* ``model_every=N``: the model answers every N-th frame, instantly (deterministic: the
  answered frames' tracks are the model's own masks, ``propagated`` false);
* ``model_period=S`` seconds (or the measured time of each answer on this machine, ``None``):
  the model takes the newest frame when it is free, and its answer arrives S bag seconds later,
  when the first frame at or after that time grounds the tracks on it (carried from the
  answered frame, as in the node); frames in between are propagated.

The tracker, the messages and the re-grounding rule (a lost track or a scene change makes the
next model run write its answer afresh) are the node's: :class:`stamp_ros.tracking.QueryTracker`
and :func:`stamp_ros.ros.results.tracks_msg`. ``/stamp/result`` holds the model's answers
(written when they arrive, with track ids), ``/stamp/tracks`` one message per frame once the
first answer arrived; the overlay and the video show the tracks with their ids, every frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stamp_ros.bag.interfaces import COMPRESSED_IMAGE
from stamp_ros.ros.compressed import compressed_msg_to_rgb
from stamp_ros.ros.convert import image_msg_to_rgb
from stamp_ros.ros.results import ModelAnswer, mark_tracked, tracks_msg
from stamp_ros.tracking import QueryTracker, TrackerConfig, TrackIds, working_frame

__all__ = ["TrackReplay", "TrackReplayConfig"]


@dataclass
class TrackReplayConfig:
    """When the model answers, and the tracker's parameters."""

    model_every: int | None = None
    """The model answers every N-th frame, instantly; None: see model_period."""
    model_period: float | None = None
    """Bag seconds each answer takes; None (with model_every None): as long as it took here."""
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class _InFlight:
    """A model answer that is not due yet (bag time)."""

    ready_ns: int
    seq: int
    work: Any
    answered: Any
    frame: Any


class TrackReplay:
    """The ``--track`` part of one :class:`~stamp_ros.bag.replay.Replayer` pass."""

    def __init__(self, replayer: Any, config: TrackReplayConfig) -> None:
        self.r = replayer
        self.cfg = config
        self.tracker = QueryTracker(TrackIds(), config.tracker)
        self.frames_done = 0
        self.model_runs = 0
        self._in_flight: _InFlight | None = None

    # ------------------------------------------------------------------ one frame
    def process(self, work: Any) -> None:
        """One frame: deliver an answer that is due, let a free model take this frame, then
        step the tracker and write the frame's tracks."""
        t_ns = work.write_ns
        if self._in_flight is not None and self._in_flight.ready_ns <= t_ns:
            self._deliver(self._in_flight)
            self._in_flight = None
        rgb = None
        if self._in_flight is None and self._model_takes():
            rgb = self._run_model(work, t_ns)
        if rgb is None:
            msg = work.frame.msg.message()
            rgb = (compressed_msg_to_rgb(msg) if work.frame.msg.msgtype == COMPRESSED_IMAGE
                   else image_msg_to_rgb(msg))
        self._step(work, rgb, t_ns)
        self.frames_done += 1
        if self.r.progress is not None:
            self.r.progress.update(self.frames_done, self.r.summary.errors)

    def _model_takes(self) -> bool:
        every = self.cfg.model_every
        return every is None or self.frames_done % every == 0

    def _run_model(self, work: Any, t_ns: int) -> Any:
        """Answer this frame; returns its RGB (None when the answer failed, which is then
        written as an error result at once)."""
        answered = self.r._infer(work)
        self.model_runs += 1
        if answered is None:
            return None
        frame = working_frame(answered.rgb, self.cfg.tracker.max_side)
        if self.cfg.model_every is not None:
            latency_s = 0.0
        elif self.cfg.model_period is not None:
            latency_s = self.cfg.model_period
        else:
            latency_s = time.monotonic() - answered.t_start
        flight = _InFlight(t_ns + int(latency_s * 1e9), work.frame.seq, work, answered, frame)
        if flight.ready_ns <= t_ns:
            self._deliver(flight)
        else:
            self._in_flight = flight
        return answered.rgb

    def _deliver(self, flight: _InFlight) -> None:
        """The answer arrives: ground the tracks on it, write it (with track ids)."""
        answered = flight.answered
        seg, result = answered.seg, answered.result
        ids = self.tracker.ground(
            flight.seq, flight.frame, [inst.mask for inst in result.instances],
            [inst.score for inst in result.instances],
            grounding=ModelAnswer(stamp=seg.header.stamp, answer=seg.answer,
                                  answer_reused=bool(seg.answer_reused),
                                  request_id=seg.request_id))
        mark_tracked(seg, ids)
        self.r._write(seg, flight.ready_ns, answered.t_start, answered.rgb,
                      [inst.mask for inst in result.instances], overlay=False)

    def finish(self) -> None:
        """The bag ended: an answer still in flight is written (the node would publish it)."""
        if self._in_flight is not None:
            self._deliver(self._in_flight)
            self._in_flight = None

    # ------------------------------------------------------------------ tracks
    def _step(self, work: Any, rgb: Any, t_ns: int) -> None:
        r = self.r
        cfg = r.cfg
        t0 = time.monotonic()
        frame = working_frame(rgb, self.cfg.tracker.max_side)
        t1 = time.monotonic()
        out = self.tracker.step(work.frame.seq, frame)
        t2 = time.monotonic()
        if out is None:  # nothing grounded yet: the video still shows the frame
            if r.video is not None:
                r.video.write(rgb)
            return
        if out.refresh_reason:
            r.reuse.clear()
        header = work.frame.msg.message().header
        lift = r.lift_3d(header, [o.mask for o in out.objects])
        seg = tracks_msg(seq=work.frame.seq, header=header, query=work.query, model=cfg.model,
                         tracks=out, objects=lift.objects, frame_id_3d=lift.frame_id,
                         reasons_3d=[x.text if x else "" for x in lift.reasons],
                         depth_fractions=lift.fractions, kit=r.kit,
                         timings_ms={"preprocess": (t1 - t0) * 1e3, "mask": (t2 - t1) * 1e3})
        seg.total_ms = float((time.monotonic() - t0) * 1e3)
        r.out.write(cfg.topic("tracks"), t_ns, seg)
        r.summary.tracked_frames += 1
        if cfg.overlay or r.video is not None:
            from stamp_ros.overlay import render_overlay

            ids = [o.track_id for o in out.objects]
            image = render_overlay(rgb, [o.mask for o in out.objects], seg.answer,
                                   labels=[f"#{i}" for i in ids], colors=ids)
            if cfg.overlay:
                r.out.write(cfg.topic("overlay"), t_ns, r.kit.rgb8(image, header))
            if r.video is not None:
                r.video.write(image)
