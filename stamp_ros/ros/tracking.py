"""Tracking in the node: ``~/tracks`` on every camera frame, between the model's answers.

The tracker itself is ROS-free (:mod:`stamp_ros.tracking`); this is the node's thin layer:

* :class:`TrackStream` owns one thread that takes the newest unprocessed frame of each tracking
  camera (older ones are dropped, so it never builds a backlog), converts it, steps the
  camera's :class:`~stamp_ros.tracking.QueryTracker`, and publishes ``~/tracks`` (and, while
  someone subscribes, the per-frame ``~/overlay`` with track ids, and ``~/tracks/detections``,
  ``~/tracks/detections_3d``, ``~/tracks/labels``; with ``publish_tf`` each track on ``/tf``:
  :mod:`stamp_ros.ros.ecosystem`). It never runs on the executor
  thread and never waits for the model; it only takes the tracker's lock, which the inference
  thread holds for the few milliseconds of matching an answer.
* :meth:`TrackStream.ground` runs on the inference thread after each continuous-mode answer:
  it hands the answer's masks to the tracker and writes the track ids into the ``~/result``
  (an answer on a frame of another size than the tracks grounds nothing: the size rule of
  :mod:`stamp_ros.pipeline.tracking_step`). It never fails the answer: the request pipeline
  counts and logs a failure here and publishes the answer without track ids.
* A lost track or a scene change clears the camera's answer reuse, so the next model run writes
  its answer afresh instead of teacher-forcing the old one (``reanswer_every`` otherwise keeps
  its meaning).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cv2
from sensor_msgs.msg import CompressedImage

from stamp_ros.inference.scheduler import Job
from stamp_ros.msgs.compressed import compressed_msg_to_rgb
from stamp_ros.msgs.convert import image_msg_to_rgb
from stamp_ros.pipeline.frame_cache import Frame
from stamp_ros.pipeline.tracking_step import (
    ground_tracks,
    query_continues_tracks,
    track_frame,
    tracker_config,
)
from stamp_ros.ros.camera import Camera, as_message
from stamp_ros.ros.ecosystem import publish_detections
from stamp_ros.ros.kit import rclpy_kit, rgb_to_image_msg
from stamp_ros.ros.objects3d import ObjectLifter
from stamp_ros.tracking import QueryTracker, TrackIds

GIL_SWITCH_INTERVAL_S = 0.001
"""The tracking thread shares the node's Python process with the executor (intake, calls) and
the consumer threads that feed the inference processes: each of its OpenCV calls releases the
GIL, and getting it back from a thread busy in Python takes up to the interpreter's switch
interval (5 ms by default), several times per frame."""


def tune_process_for_tracking() -> None:
    """Process-wide settings for a frame thread beside the model (applied once, when a camera
    starts tracking; measured in bench/tracking.py, tiny model answering non-stop, 640x480 at
    30 Hz on the 2-core machine): the GIL switch interval at 1 ms (step p50 6.3 -> 2.5 ms), and
    OpenCV on one thread, since its worker threads only compete with torch's for the cores
    (tracks added latency p90 13.6 ms vs 29.8 ms with two OpenCV threads, and the model
    answered 11.1 vs 8.6 times a second). Both were measured while the model still ran in the
    node's process; they cost nothing now that it runs in its own. The node's other OpenCV work
    (colour conversion, JPEG decoding, the overlay) is small per frame."""
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    cv2.setNumThreads(1)


REFRESH_LOG_S = 5.0
"""Requests for a fresh answer (per camera) and tracking failures are logged at most this
often."""


class _CameraTracking:
    """The tracker of one camera and the query it tracks."""

    def __init__(self, query: str, tracker: QueryTracker) -> None:
        self.query = query
        self.tracker = tracker
        self.last_refresh_log = 0.0


class TrackStream:
    """Tracking for every camera of one node (see the module docstring)."""

    def __init__(self, param: Callable[[str], Any], logger: Any, lifter: ObjectLifter) -> None:
        self._param = param
        self._log = logger
        self._lifter = lifter
        self.ids = TrackIds()
        """Track ids of this node run: never reused, across queries and cameras."""
        self._cond = threading.Condition()
        self._slots: OrderedDict[str, tuple[Camera, Frame]] = OrderedDict()
        self._cameras: dict[str, _CameraTracking] = {}
        self._running = False
        self._thread: threading.Thread | None = None
        self.dropped_frames = 0
        self.published = 0
        self._last_error_log = 0.0
        self._tuned = False
        self.camera_of: Callable[[str], Camera | None] = lambda name: None
        """The camera a request names ("" = the first); set by the node."""
        self.refusal: Callable[[Job], str] = lambda job: ""
        """Why a query can never be answered ("" when it can); set by the node."""

    # ------------------------------------------------------------------ state
    def enabled(self) -> bool:
        """Tracking is on: continuous mode with ``track`` true."""
        return self._param("mode") == "continuous" and bool(self._param("track"))

    def tracking(self, camera: Camera) -> bool:
        """This camera has a tracked query (its ``~/overlay`` is then per tracked frame)."""
        return self.enabled() and bool(camera.continuous_query)

    def reset(self, camera: Camera, *, forget: bool = False) -> bool:
        """A query arrived for ``camera``: the same text as the one it tracks continues its
        tracks (same ids: a planner re-sending its standing query keeps them, issue 31);
        another text, or ``forget`` (grounding failed), forgets them and the next frame starts
        a tracker for the camera's query (ids go on counting, never reused). True when the
        tracks continue."""
        with self._cond:
            state = self._cameras.get(camera.name)
            if not forget and state is not None and query_continues_tracks(
                    state.query, camera.continuous_query):
                state.query = camera.continuous_query
                return True
            self._cameras.pop(camera.name, None)
            self._slots.pop(camera.name, None)
            return False

    def _state(self, camera: Camera, query: str) -> _CameraTracking | None:
        """The camera's tracking state if it tracks ``query`` now; created on first use, and
        dropped when tracking is off (``track``/``mode`` changed) or the query was cleared."""
        with self._cond:
            current = camera.continuous_query
            if not self._running or not current or not self.enabled():
                self._cameras.pop(camera.name, None)
                return None
            state = self._cameras.get(camera.name)
            if state is None or state.query != current:
                if not self._tuned:
                    tune_process_for_tracking()
                    self._tuned = True
                state = _CameraTracking(current, QueryTracker(self.ids,
                                                              tracker_config(self._param)))
                self._cameras[camera.name] = state
            return state if state.query == query else None

    def on_track(self, request: Any, response: Any) -> Any:
        """``~/track`` (stamp_ros/srv/Track): start tracking ``query`` on a camera (what a
        continuous-mode ``query`` message does, acknowledged), or stop with an empty query.
        Refused with the reason unless the node is active in continuous mode with track:=true,
        the camera exists and the query can be answered."""
        camera = self.camera_of(request.camera)
        response.success = False
        if camera is None:
            response.error = f"unknown camera {request.camera!r}"
            return response
        response.tracks_topic = camera.outputs["tracks"].topic_name if camera.outputs else ""
        if not self.enabled():
            response.error = ("tracking needs mode:=continuous and track:=true (now mode "
                              f"{self._param('mode')!r}, track {self._param('track')})")
            return response
        if request.query:
            reason = self.refusal(Job(request_id="track", query=request.query, source="topic",
                                      asked_at=time.monotonic(), camera=camera))
            if reason:
                response.error = reason
                return response
        camera.track(request.query)
        self.reset(camera)
        self._log.info(f"~/track, camera {camera.label}: " + (
            f"tracking {request.query[:200]!r}" if request.query else "stopped"))
        response.success = True
        return response

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True

        self._thread = threading.Thread(target=self._run, name="stamp-tracking", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running = False
            self._slots.clear()
            self._cameras.clear()
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def offer(self, camera: Camera, frame: Frame) -> None:
        """A new frame of ``camera`` (executor thread): kept as the camera's next frame to
        track; an unprocessed older one is dropped."""
        if self._state(camera, camera.continuous_query) is None:
            return
        with self._cond:
            if camera.name in self._slots:
                self.dropped_frames += 1
            self._slots[camera.name] = (camera, frame)
            self._cond.notify()

    def _next(self) -> tuple[Camera, Frame] | None:
        with self._cond:
            while self._running and not self._slots:
                self._cond.wait()
            if not self._running:
                return None
            _, item = self._slots.popitem(last=False)
            return item

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            camera, frame = item
            try:
                self.process(camera, frame)
            except Exception as exc:  # a bad frame must not end tracking for the others
                now = time.monotonic()
                if now - self._last_error_log >= REFRESH_LOG_S:
                    self._last_error_log = now
                    self._log.warning(f"tracking frame {frame.seq} of camera {camera.label} "
                                      f"failed: {type(exc).__name__}: {exc}")

    def process(self, camera: Camera, frame: Frame) -> None:
        """One frame (what the thread does with each): convert, track
        (:func:`~stamp_ros.pipeline.tracking_step.track_frame`), publish ``~/tracks`` (and the
        overlay)."""
        state = self._state(camera, camera.continuous_query)
        if state is None:
            return
        msg = as_message(frame.msg)
        rgb = (compressed_msg_to_rgb(msg) if isinstance(msg, CompressedImage)
               else image_msg_to_rgb(msg))
        state.tracker.config = tracker_config(self._param)

        def lift(header: Any, masks: list, max_pixels: int | None) -> Any:
            return self._lifter.lift_masks(
                camera, header, masks, depth_max_skew=float(self._param("depth_max_skew")),
                depth_scale=float(self._param("depth_scale")),
                target_frame=str(self._param("target_frame")), max_pixels=max_pixels)

        tracked = track_frame(state.tracker, frame.seq, rgb, msg.header, query=state.query,
                              model=str(self._param("model")), lift=lift, kit=rclpy_kit(),
                              received=frame.received)
        if tracked is None:
            return
        if tracked.tracks.refresh_reason:
            self._ask_fresh_answer(camera, state, tracked.tracks.refresh_reason)
        outputs = camera.outputs
        if self._state(camera, state.query) is not state or not outputs:
            return  # the query changed meanwhile: these tracks are no longer wanted
        outputs["tracks"].publish(tracked.message)
        self.published += 1
        publish_detections(outputs, tracked.message, rgb.shape[:2],
                           [o.mask for o in tracked.tracks.objects], self._param,
                           prefix="tracks/")
        overlay_pub = outputs["overlay"]
        if self._param("publish_overlay") and overlay_pub.get_subscription_count() > 0:
            overlay_pub.publish(rgb_to_image_msg(tracked.overlay(), msg.header))
        self._log_events(camera, tracked.tracks.events)

    def _log_events(self, camera: Camera, events: list) -> None:
        """An object back under its id is worth a line (an integrator checks re-identification
        there), a look-alike return a warning; losses and forgetting are on ``~/tracks``
        (``lost_track_ids``) and would flood the log."""
        for ev in events:
            if ev.kind != "returned":
                continue
            text = (f"camera {camera.label}: track {ev.track_id} is back after "
                    f"{ev.hidden_for:.1f} s ({ev.reason or 're-identified'})")
            if ev.ambiguous_with:
                self._log.warning(f"{text}; it looked as much like track(s) "
                                  f"{', '.join(map(str, ev.ambiguous_with))}: its position "
                                  "decided (track_ambiguous)")
            else:
                self._log.info(text)

    def _ask_fresh_answer(self, camera: Camera, state: _CameraTracking, reason: str) -> None:
        """A lost track or a scene change: the next model run writes its answer afresh."""
        camera.answer_reuse.clear()
        now = time.monotonic()
        if now - state.last_refresh_log >= REFRESH_LOG_S:
            state.last_refresh_log = now
            self._log.info(f"camera {camera.label}: {reason}; asking the model for a fresh "
                           "answer")

    # ------------------------------------------------------------------ model answers
    def ground(self, job: Any, rgb: Any, result: Any, seg: Any) -> None:
        """A continuous-mode answer (inference thread): ground the camera's tracks on it and
        fill the track ids of its ``~/result``
        (:func:`~stamp_ros.pipeline.tracking_step.ground_tracks`)."""
        camera: Camera = job.camera
        if job.source != "continuous" or job.frame is None or not self.enabled():
            return
        state = self._state(camera, job.query)
        if state is None:
            return
        state.tracker.config = tracker_config(self._param)
        ground_tracks(state.tracker, job.frame.seq, rgb, result, seg)
