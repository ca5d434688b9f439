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

The tracking step, the grounding step and the re-grounding rule (a lost track or a scene change
makes the next model run write its answer afresh) are the node's:
:mod:`stamp_ros.pipeline.tracking_step`. ``/stamp/result`` holds the model's answers
(written when they arrive, with track ids), ``/stamp/tracks`` one message per frame once the
first answer arrived (and ``/stamp/tracks/detections``, ``.../detections_3d``,
``.../labels`` with it; ``--tf``: the tracks' transforms on ``/tf``); the overlay and the
video show the tracks with their ids, every frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stamp_ros.bag.interfaces import COMPRESSED_IMAGE
from stamp_ros.msgs.compressed import compressed_msg_to_rgb
from stamp_ros.msgs.convert import image_msg_to_rgb
from stamp_ros.pipeline.tracking_step import ground_tracks, track_frame
from stamp_ros.tracking import QueryTracker, TrackerConfig, TrackIds

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
    answered: Any


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
        answered = self.r.answer(work)
        self.model_runs += 1
        if answered is None:
            return None
        if self.cfg.model_every is not None:
            latency_s = 0.0
        elif self.cfg.model_period is not None:
            latency_s = self.cfg.model_period
        else:
            latency_s = time.monotonic() - answered.t_start
        flight = _InFlight(t_ns + int(latency_s * 1e9), work.frame.seq, answered)
        if flight.ready_ns <= t_ns:
            self._deliver(flight)
        else:
            self._in_flight = flight
        return answered.rgb

    def _deliver(self, flight: _InFlight) -> None:
        """The answer arrives: ground the tracks on it, write it (with track ids)."""
        answered = flight.answered
        ground_tracks(self.tracker, flight.seq, answered.rgb, answered.result, answered.seg)
        self.r.write_result(answered.seg, flight.ready_ns, answered.t_start, answered.rgb,
                            [inst.mask for inst in answered.result.instances], overlay=False)

    def finish(self) -> None:
        """The bag ended: an answer still in flight is written (the node would publish it)."""
        if self._in_flight is not None:
            self._deliver(self._in_flight)
            self._in_flight = None

    # ------------------------------------------------------------------ tracks
    def _step(self, work: Any, rgb: Any, t_ns: int) -> None:
        r = self.r
        cfg = r.cfg
        header = work.frame.msg.message().header
        tracked = track_frame(self.tracker, work.frame.seq, rgb, header, query=work.query,
                              model=cfg.model, lift=r.lift_3d, kit=r.kit)
        if tracked is None:  # nothing grounded yet: the video still shows the frame
            if r.video is not None:
                r.video.write(rgb)
            return
        if tracked.tracks.refresh_reason:
            r.reuse.clear()
        r.out.write(cfg.topic("tracks"), t_ns, tracked.message)
        r.write_detections(tracked.message, t_ns, rgb.shape[:2],
                           [o.mask for o in tracked.tracks.objects], group="tracks/")
        r.summary.tracked_frames += 1
        if cfg.overlay or r.video is not None:
            image = tracked.overlay()
            if cfg.overlay:
                r.out.write(cfg.topic("overlay"), t_ns, r.kit.rgb8(image, header))
            if r.video is not None:
                r.video.write(image)
