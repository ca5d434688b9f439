"""Replay a recorded bag through the engine with the node's rules, in bag time.

The bag is read once, in bag-time order, and every message is handled the way the node handles
it on arrival; bag time (each message's log time) stands in for the node's clock. Inference is
treated as instantaneous, i.e. the replay behaves like a node whose model is always idle: in
continuous mode no frame is dropped for being busy (use ``--every`` to thin), in once mode a
query is answered on the newest frame at the moment it was asked.

The rules themselves are the node's, imported rather than rewritten:

* once mode: :class:`~stamp_ros.pipeline.frame_cache.FrameCache` on a bag-time clock picks the
  newest frame no older than ``max_frame_age`` when the query was asked; a query without one waits
  up to ``frame_timeout`` (bag time) for the next frame, else gets the node's error result.
* continuous mode: :class:`~stamp_ros.pipeline.answer_reuse.AnswerReuse` writes the answer every
  ``reanswer_every`` frames and teacher-forces it in between.
* conversion (:mod:`stamp_ros.msgs.convert`), 3D lifting (:mod:`stamp_ros.spatial.depth3d`), the
  Segmentation message (:mod:`stamp_ros.pipeline.results`, with a rosbags kit), the union mask /
  overlay (:mod:`stamp_ros.render.overlay`) and the detections, label image and TF
  (:mod:`stamp_ros.pipeline.detections`) are the node's functions. The bag writes detections
  and labels for every success (no subscriber to wait for), TF to ``/tf`` with ``--tf``.

With ``--depth-topic`` a frame is processed once the bag has been read ``depth_max_skew`` past
it, so a depth image recorded just after its colour frame is still paired (the node's
deque-of-recent-depth rule sees it too, since its worker runs after the frame arrived).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stamp_ros.bag.interfaces import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    SEGMENTATION,
    STRING,
    RosbagsKit,
)
from stamp_ros.bag.sink import OutputBag, VideoOut
from stamp_ros.bag.source import InputBag, TopicSpec
from stamp_ros.bag.tracking import TrackReplay, TrackReplayConfig
from stamp_ros.engine.errors import EngineError, InferenceCancelled, InputError
from stamp_ros.engine.prompt import query_refusal
from stamp_ros.msgs.compressed import compressed_msg_to_rgb
from stamp_ros.msgs.convert import ImageConversionError, image_msg_to_rgb
from stamp_ros.pipeline.answer_reuse import AnswerReuse
from stamp_ros.pipeline.detections import (
    DETECTION_2D_ARRAY,
    DETECTION_3D_ARRAY,
    TF_MESSAGE,
    detections_2d,
    detections_3d,
    labels_msg,
    object_transforms,
    tf_message,
)
from stamp_ros.pipeline.frame_cache import Frame, FrameCache, NoFreshFrame
from stamp_ros.pipeline.params import BY_NAME
from stamp_ros.pipeline.results import error_msg, segmentation_msg
from stamp_ros.render.overlay import render_overlay, union_mask
from stamp_ros.spatial.depth3d import Lift3D, lift_frame

__all__ = ["ReplayConfig", "Replayer", "Summary"]

logger = logging.getLogger("stamp_ros.bag")

MAX_LOOKAHEAD_S = 1.0
"""Frames wait at most this long (bag time) for their depth image: bounds what is buffered."""

DEPTH_HISTORY = 30
"""Depth images kept for pairing, as the node keeps them."""

TF_TOPIC = "/tf"
"""Where ``--tf`` writes the objects' transforms: the topic TF tools read (not under the
prefix)."""


def _param(name: str) -> Any:
    return BY_NAME[name].default


@dataclass
class ReplayConfig:
    """What to replay and how; defaults are the node's parameter defaults."""

    image_topic: str
    query: str | None = None
    """Continuous mode: this query on every (selected) frame."""
    query_topic: str | None = None
    """Once mode: std_msgs/String queries read from the bag."""
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    every: int = 1
    max_frames: int | None = None
    reanswer_every: int = field(default_factory=lambda: int(_param("reanswer_every")))
    max_frame_age: float = field(default_factory=lambda: float(_param("max_frame_age")))
    frame_timeout: float = field(default_factory=lambda: float(_param("frame_timeout")))
    depth_scale: float = field(default_factory=lambda: float(_param("depth_scale")))
    depth_max_skew: float = field(default_factory=lambda: float(_param("depth_max_skew")))
    copy_input: bool = False
    overlay: bool = True
    track: TrackReplayConfig | None = None
    """Continuous mode with tracking (``--track``): tracks on every frame, see bag.tracking."""
    prefix: str = "/stamp"
    model: str = ""
    tf: bool = field(default_factory=lambda: bool(_param("publish_tf")))
    """Write every object with 3D to ``/tf`` (the node's ``publish_tf``)."""
    tf_prefix: str = field(default_factory=lambda: str(_param("tf_prefix")))

    @property
    def continuous(self) -> bool:
        return self.query is not None

    def topic(self, name: str) -> str:
        return f"{self.prefix.rstrip('/')}/{name}"


@dataclass
class Summary:
    """What a run did; ``as_dict`` is the ``--json`` object."""

    mode: str
    frames_in_bag: int
    frames_read: int = 0
    frames_selected: int = 0
    results: int = 0
    errors: int = 0
    queries: int = 0
    interrupted: bool = False
    stopped_at_max_frames: bool = False
    read_error: str = ""
    first_error: str = ""
    wall_s: float = 0.0
    engine_s: float = 0.0
    last_answer: str = ""
    topics: dict[str, int] = field(default_factory=dict)
    video_frames: int = 0
    tracked_frames: int = 0
    """--track: frames whose tracks were written (frames before the first answer have none)."""

    @property
    def fps(self) -> float:
        return self.results / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "frames_in_bag": self.frames_in_bag,
            "frames_read": self.frames_read,
            "frames_selected": self.frames_selected,
            "results": self.results,
            "successes": self.results - self.errors,
            "errors": self.errors,
            "queries": self.queries,
            "interrupted": self.interrupted,
            "stopped_at_max_frames": self.stopped_at_max_frames,
            "read_error": self.read_error or None,
            "first_error": self.first_error or None,
            "last_answer": self.last_answer,
            "wall_s": round(self.wall_s, 3),
            "engine_s": round(self.engine_s, 3),
            "fps": round(self.fps, 4),
            "topics": dict(self.topics),
            "video_frames": self.video_frames,
            "tracked_frames": self.tracked_frames,
        }


class _Stopped(Exception):
    """Unwinds the replay when a stop was requested (Ctrl-C) mid-inference."""


class _BagFrame:
    """A camera message as read from the bag: raw CDR until a request uses it."""

    __slots__ = ("_decode", "_msg", "msgtype", "raw", "t_ns")

    def __init__(self, raw: bytes, msgtype: str, t_ns: int,
                 decode: Callable[[bytes, str], Any]) -> None:
        self.raw, self.msgtype, self.t_ns = raw, msgtype, t_ns
        self._decode = decode
        self._msg: Any = None

    def message(self) -> Any:
        if self._msg is None:
            self._msg = self._decode(self.raw, self.msgtype)
            self.raw = b""
        return self._msg


@dataclass
class _Work:
    """A frame to run a query on, once the bag has been read up to ``ready_ns``."""

    frame: Frame
    request_id: str
    query: str
    continuous: bool
    write_ns: int
    ready_ns: int
    wait_ms: float = 0.0
    frame_age_ms: float = 0.0
    """Age of the frame when the query was asked (negative: the query waited for it)."""


@dataclass
class _Answered:
    """A successful model answer of one frame: its message, the frame, the engine result."""

    seg: Any
    rgb: Any
    result: Any
    t_start: float
    """time.monotonic() when the frame's processing began (total_ms, the model's speed)."""


@dataclass
class _Pending:
    """A once-mode query that found no fresh frame and waits (bag time) for the next one."""

    request_id: str
    query: str
    asked_ns: int
    asked_s: float
    deadline_ns: int


class Replayer:
    """One pass over ``source``: results, masks and overlays into ``out`` (and ``video``)."""

    def __init__(self, source: InputBag, segmenter: Any, out: OutputBag, config: ReplayConfig,
                 *, video: VideoOut | None = None, progress: Any = None,
                 kit: RosbagsKit | None = None) -> None:
        self.source, self.segmenter, self.out, self.cfg = source, segmenter, out, config
        self.video = video
        self.progress = progress
        self.kit = kit or RosbagsKit(source.store)
        self.stop_requested = False
        self._t0 = source.start_ns
        self._now_s = 0.0
        self.frames = FrameCache(clock=lambda: self._now_s)
        self.reuse = AnswerReuse()
        self.depth: deque[Any] = deque(maxlen=DEPTH_HISTORY)
        self.camera_info: Any = None
        self._work: deque[_Work] = deque()
        self._pending: deque[_Pending] = deque()
        self._query_ids = 0
        self._depth_warned = False
        self.specs = self._topics()
        image = self.specs["image"]
        self.summary = Summary(mode="continuous" if config.continuous else "once",
                               frames_in_bag=image.count)
        self.tracking: TrackReplay | None = None
        if config.track is not None:
            if not config.continuous:
                raise InputError("--track needs --query (continuous mode)")
            self.tracking = TrackReplay(self, config.track)
        self.lookahead_ns = 0
        if config.depth_topic and config.camera_info_topic:
            self.lookahead_ns = int(min(config.depth_max_skew, MAX_LOOKAHEAD_S) * 1e9)

    # ------------------------------------------------------------------ setup
    def _topics(self) -> dict[str, TopicSpec]:
        cfg, src = self.cfg, self.source
        specs = {"image": src.topic("image", cfg.image_topic, (IMAGE, COMPRESSED_IMAGE))}
        if cfg.query_topic:
            specs["query"] = src.topic("query", cfg.query_topic, (STRING,))
        if cfg.depth_topic:
            specs["depth"] = src.topic("depth", cfg.depth_topic, (IMAGE,))
        if cfg.camera_info_topic:
            specs["camera_info"] = src.topic("camera_info", cfg.camera_info_topic, (CAMERA_INFO,))
        return specs

    def expected_results(self) -> int:
        """How many results a complete run writes (the progress total)."""
        cfg = self.cfg
        if cfg.continuous:
            total = math.ceil(self.specs["image"].count / max(1, cfg.every))
        else:
            total = self.specs["query"].count
        return min(total, cfg.max_frames) if cfg.max_frames else total

    def open_outputs(self) -> None:
        """Create the output topics: results, masks, overlays, then the copied inputs."""
        out, cfg = self.out, self.cfg
        out.open()
        out.add_topic(cfg.topic("result"), SEGMENTATION)
        out.add_topic(cfg.topic("mask"), IMAGE)
        groups = ["", "tracks/"] if self.tracking is not None else [""]
        if self.tracking is not None:
            out.add_topic(cfg.topic("tracks"), SEGMENTATION)
        vision = DETECTION_2D_ARRAY in out.store.types
        if not vision:
            logger.warning("no vision_msgs definitions found (interfaces/vision_msgs/msg or "
                           "share/vision_msgs/msg): the detection topics are not written")
        for group in groups:
            if vision:
                out.add_topic(cfg.topic(f"{group}detections"), DETECTION_2D_ARRAY)
                out.add_topic(cfg.topic(f"{group}detections_3d"), DETECTION_3D_ARRAY)
            out.add_topic(cfg.topic(f"{group}labels"), IMAGE)
        if cfg.tf:
            out.add_topic(TF_TOPIC, TF_MESSAGE)
        if cfg.overlay:
            out.add_topic(cfg.topic("overlay"), IMAGE)
        if cfg.copy_input:
            for spec in self.specs.values():
                out.add_copy(spec)

    # ------------------------------------------------------------------ the pass
    def run(self) -> Summary:
        """Read, answer and write until the bag ends, ``max_frames`` results were written or
        a stop was requested; the outputs are left open (the caller closes them)."""
        t_start = time.monotonic()
        try:
            self._run()
        except _Stopped:
            pass
        finally:
            s = self.summary
            s.interrupted = self.stop_requested
            s.wall_s = time.monotonic() - t_start
            s.topics = dict(self.out.counts)
            s.video_frames = self.video.frames if self.video else 0
        return self.summary

    def _run(self) -> None:
        copy = self.cfg.copy_input
        for spec, t_ns, raw in self.source.messages(list(self.specs.values())):
            self._advance(t_ns)
            if self._done():
                return
            self._now_s = (t_ns - self._t0) * 1e-9
            handler = getattr(self, f"_on_{spec.role}")
            handler(spec, t_ns, raw)
            if copy:
                self.out.write_raw(spec.topic, t_ns, raw)
        self._advance(None)
        if self.tracking is not None:
            self.tracking.finish()

    def _done(self) -> bool:
        if self.stop_requested:
            raise _Stopped
        limit = self.cfg.max_frames
        done = self.tracking.frames_done if self.tracking is not None else self.summary.results
        if limit and done >= limit:
            self.summary.stopped_at_max_frames = True
            return True
        return False

    def _advance(self, t_ns: int | None) -> None:
        """Everything due before bag time ``t_ns`` (None: the end of the bag), in order: queued
        frames whose depth look-ahead has passed and waiting queries whose timeout ran out."""
        while True:
            if self._done():
                return
            work = self._work[0] if self._work else None
            pend = self._pending[0] if self._pending else None
            if work is not None and (t_ns is None or work.ready_ns < t_ns) and (
                    pend is None or work.ready_ns <= pend.deadline_ns):
                self._process(self._work.popleft())
            elif pend is not None and (t_ns is None or pend.deadline_ns < t_ns):
                self._expire(self._pending.popleft())
            else:
                return

    # ------------------------------------------------------------------ inputs
    def _on_image(self, spec: TopicSpec, t_ns: int, raw: bytes) -> None:
        s = self.summary
        s.frames_read += 1
        if (s.frames_read - 1) % max(1, self.cfg.every):
            return
        s.frames_selected += 1
        frame = self.frames.put(_BagFrame(raw, spec.msgtype, t_ns, self.source.decode))
        ready = t_ns + self.lookahead_ns
        if self.cfg.continuous:
            self._work.append(_Work(frame, f"c{frame.seq}", self.cfg.query or "", True,
                                    write_ns=t_ns, ready_ns=ready))
            return
        while self._pending:  # queries waiting for a frame take this one, as in the node
            p = self._pending.popleft()
            waited_ms = (t_ns - p.asked_ns) * 1e-6
            self._work.append(_Work(frame, p.request_id, p.query, False, write_ns=t_ns,
                                    ready_ns=ready, wait_ms=waited_ms, frame_age_ms=-waited_ms))

    def _on_query(self, spec: TopicSpec, t_ns: int, raw: bytes) -> None:
        self._query_ids += 1
        self.summary.queries += 1
        request_id = f"q{self._query_ids}"
        try:
            query = str(self.source.decode(raw, spec.msgtype).data)
        except ValueError as exc:
            self._emit_error(request_id, "", str(exc), None, t_ns)
            return
        reason = query_refusal(query)
        if reason:
            self._emit_error(request_id, query, reason, None, t_ns)
            return
        try:
            frame = self.frames.fresh(self.cfg.max_frame_age, self.cfg.frame_timeout,
                                      asked_at=self._now_s, cancelled=lambda: True)
        except NoFreshFrame as exc:
            if self.cfg.frame_timeout > 0:
                self._pending.append(_Pending(request_id, query, t_ns, self._now_s,
                                              t_ns + int(self.cfg.frame_timeout * 1e9)))
            else:
                self._emit_error(request_id, query, str(exc), None, t_ns)
            return
        frame_ns = frame.msg.t_ns
        self._work.append(_Work(frame, request_id, query, False, write_ns=max(frame_ns, t_ns),
                                ready_ns=max(frame_ns + self.lookahead_ns, t_ns),
                                frame_age_ms=(self._now_s - frame.received) * 1000.0))

    def _on_depth(self, spec: TopicSpec, t_ns: int, raw: bytes) -> None:
        try:
            self.depth.append(self.source.decode(raw, spec.msgtype))
        except ValueError as exc:
            logger.warning("skipping a depth image: %s", exc)

    def _on_camera_info(self, spec: TopicSpec, t_ns: int, raw: bytes) -> None:
        try:
            self.camera_info = self.source.decode(raw, spec.msgtype)
        except ValueError as exc:
            logger.warning("skipping a CameraInfo: %s", exc)

    def _expire(self, p: _Pending) -> None:
        """The node's error for a query whose frame_timeout ran out: the same FrameCache call,
        made at the deadline, says how old the newest frame was."""
        self._now_s = (p.deadline_ns - self._t0) * 1e-9
        try:
            frame = self.frames.fresh(self.cfg.max_frame_age, self.cfg.frame_timeout,
                                      asked_at=p.asked_s, cancelled=lambda: True)
        except NoFreshFrame as exc:
            error = str(exc)
        else:  # unreachable: a frame arriving in time takes the query off the waiting list
            error = f"frame {frame.seq} arrived but was not used"
        self._emit_error(p.request_id, p.query, error, None, p.deadline_ns,
                         wait_ms=self.cfg.frame_timeout * 1000.0)

    # ------------------------------------------------------------------ one request
    def _process(self, work: _Work) -> None:
        """The node's request handling (pipeline.handle) for one frame, in bag time."""
        if self.tracking is not None:
            self.tracking.process(work)
            return
        answered = self.answer(work)
        if answered is not None:
            self.write_result(answered.seg, work.write_ns, answered.t_start, answered.rgb,
                        [inst.mask for inst in answered.result.instances])

    def answer(self, work: _Work) -> _Answered | None:
        """The model's answer for ``work`` as the node builds it (its Segmentation, frame and
        engine result); an error result is written at once and None returned."""
        cfg, kit = self.cfg, self.kit
        header = None
        t_start = time.monotonic()
        try:
            msg = work.frame.msg.message()
            header = msg.header
            rgb = (compressed_msg_to_rgb(msg) if work.frame.msg.msgtype == COMPRESSED_IMAGE
                   else image_msg_to_rgb(msg))
            convert_ms = (time.monotonic() - t_start) * 1000.0
            forced = self.reuse.forced_ids(work.query) if work.continuous else None
            result = self.segmenter.segment(
                rgb, work.query, should_cancel=lambda: self.stop_requested,
                forced_answer_ids=forced)
            if work.continuous:
                self.reuse.record(work.query, result.token_ids, cfg.reanswer_every,
                                  forced is not None)
            t_post = time.monotonic()
            lift = self.lift_3d(header, [inst.mask for inst in result.instances])
            seg = segmentation_msg(
                request_id=work.request_id, query=work.query, header=header, result=result,
                model=cfg.model, wait_ms=work.wait_ms, convert_ms=convert_ms,
                objects=lift.objects, frame_id_3d=lift.frame_id,
                reasons_3d=[r.text if r else "" for r in lift.reasons],
                depth_fractions=lift.fractions, kit=kit)
            seg.postprocess_ms += (time.monotonic() - t_post) * 1000.0
            seg.frame_age_ms = float(work.frame_age_ms)
            seg.answer_reused = forced is not None
        except InferenceCancelled as exc:
            if self.stop_requested:
                raise _Stopped from None
            self._emit_error(work.request_id, work.query, f"cancelled: {exc}", header,
                             work.write_ns, t_start=t_start, wait_ms=work.wait_ms)
            return None
        except (NoFreshFrame, ImageConversionError, EngineError, ValueError) as exc:
            self._emit_error(work.request_id, work.query, str(exc), header, work.write_ns,
                             t_start=t_start, wait_ms=work.wait_ms)
            return None
        except Exception as exc:  # as the node: report it and go on with the next frame
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self._emit_error(work.request_id, work.query,
                             f"{type(exc).__name__}: {text[:300]}".rstrip(": "), header,
                             work.write_ns, t_start=t_start, wait_ms=work.wait_ms)
            return None
        self.summary.engine_s += time.monotonic() - t_start
        return _Answered(seg, rgb, result, t_start)

    def lift_3d(self, header: Any, masks: list, max_pixels: int | None = None) -> Lift3D:
        """The node's 3D step (objects3d.ObjectLifter.lift_masks without tf2: camera frame),
        with the same per-object reasons when there is no 3D (answers and tracked frames;
        ``max_pixels`` as there)."""
        lift = lift_frame(header, masks, list(self.depth),
                          self.camera_info, depth_max_skew=self.cfg.depth_max_skew,
                          depth_scale=self.cfg.depth_scale, max_pixels=max_pixels)
        skewed = [r.text for r in lift.reasons if r is not None and r.kind == "depth_skew"]
        if skewed and not self._depth_warned:
            logger.warning("3D withheld: %s; results of such frames have no 3D", skewed[0])
            self._depth_warned = True
        return lift

    # ------------------------------------------------------------------ outputs
    def _emit_error(self, request_id: str, query: str, error: str, header: Any, t_ns: int, *,
                    t_start: float | None = None, wait_ms: float = 0.0) -> None:
        seg = error_msg(request_id=request_id, query=query, error=error, header=header,
                        model=self.cfg.model, wait_ms=wait_ms, kit=self.kit)
        self.write_result(seg, t_ns, t_start)

    def write_result(self, seg: Any, t_ns: int, t_start: float | None, rgb: Any = None,
               masks: list | None = None, overlay: bool = True) -> None:
        """~/result always; mask and overlay (and a video frame) for a success, as the node
        publishes them (with --track the overlay and video are per frame, from the tracks:
        ``overlay`` False); then count the result."""
        cfg, s = self.cfg, self.summary
        elapsed = (time.monotonic() - t_start) * 1000.0 if t_start is not None else 0.0
        seg.total_ms = float(seg.wait_ms + elapsed)
        self.out.write(cfg.topic("result"), t_ns, seg)
        if seg.success and rgb is not None:
            masks = masks or []
            union = union_mask(masks, rgb.shape[:2])
            self.out.write(cfg.topic("mask"), t_ns, self.kit.mono8(union, seg.header))
            # Tracking: the transforms come with every tracked frame (as in the node).
            self.write_detections(seg, t_ns, rgb.shape[:2], masks, tf=self.tracking is None)
            if overlay and (cfg.overlay or self.video is not None):
                image = render_overlay(rgb, masks, seg.answer)
                if cfg.overlay:
                    self.out.write(cfg.topic("overlay"), t_ns, self.kit.rgb8(image, seg.header))
                if self.video is not None:
                    self.video.write(image)
            s.last_answer = seg.answer
        s.results += 1
        if not seg.success:
            s.errors += 1
            s.first_error = s.first_error or seg.error
            logger.info("request %s failed: %s", seg.request_id, seg.error)
        if self.progress is not None and self.tracking is None:
            self.progress.update(s.results, s.errors)

    def write_detections(self, seg: Any, t_ns: int, size: tuple[int, int], masks: list | None,
                         *, group: str = "", tf: bool = True) -> None:
        """The node's ecosystem outputs of a successful Segmentation (``group`` "tracks/" for a
        tracked frame): detections, 3D detections (when an object has 3D), the label image,
        and with ``--tf`` the objects' transforms."""
        cfg, out, kit = self.cfg, self.out, self.kit
        if cfg.topic(f"{group}detections") in out.counts:
            out.write(cfg.topic(f"{group}detections"), t_ns, detections_2d(seg, kit))
            msg = detections_3d(seg, kit)
            if msg is not None:
                out.write(cfg.topic(f"{group}detections_3d"), t_ns, msg)
        out.write(cfg.topic(f"{group}labels"), t_ns, labels_msg(seg, kit, size, masks))
        if tf and cfg.tf:
            transforms = object_transforms(seg, kit, cfg.tf_prefix)
            if transforms:
                out.write(TF_TOPIC, t_ns, tf_message(transforms, kit))
