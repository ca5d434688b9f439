"""StampNode: camera frames + a sentence in; answer text, masks and 3D objects out.

A lifecycle node that configures and activates itself at start-up, so ``ros2 run`` and
``ros2 launch`` just work, while ``deactivate`` frees the model (and GPU memory) and
``activate`` loads it again. Callbacks never touch the model: they hand requests to one
:class:`InferenceWorker` thread that owns it, so image streams keep flowing while the GPU works.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from stamp_ros.action import Segment as SegmentAction
from stamp_ros.msg import Segmentation
from stamp_ros.ros.pairing import Frame, FrameCache, NoFreshFrame
from stamp_ros.ros.params import BY_NAME, PARAMS, validate
from stamp_ros.ros.worker import InferenceWorker, Job
from stamp_ros.srv import Segment

FAULT_INJECTION = os.environ.get("STAMP_ROS_FAULT_INJECTION") == "1"
"""Test hook (off unless that variable is "1"): a query containing "[[raise]]" or "[[oom]]"
fails inside the engine, between decoding and the mask pass, with a RuntimeError or a
torch.cuda.OutOfMemoryError, so fault tests exercise the real recovery path."""

MAX_QUERY_CHARS = 4000
"""Longer queries are refused before they reach the model (they would only be truncated)."""


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class _Stats:
    """Counters for ~/stats and /diagnostics; cheap enough to update in every callback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames = 0
        self.results = 0
        self.errors = 0
        self.last_error = ""
        self.latencies: deque[float] = deque(maxlen=200)
        self.since = time.monotonic()

    def snapshot_and_reset(self) -> dict[str, Any]:
        with self.lock:
            span = max(1e-6, time.monotonic() - self.since)
            lat = sorted(self.latencies)
            snap = {
                "input_rate_hz": self.frames / span,
                "result_rate_hz": self.results / span,
                "errors": self.errors,
                "last_error": self.last_error,
                "latency_p50_ms": lat[len(lat) // 2] if lat else 0.0,
                "latency_p90_ms": lat[min(len(lat) - 1, int(len(lat) * 0.9))] if lat else 0.0,
            }
            self.frames = self.results = self.errors = 0
            self.since = time.monotonic()
            return snap


class Channel:
    """One camera: its input topics, frame and depth caches, output publishers and the query
    it tracks in continuous mode. The model and the worker are shared by all channels."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames = FrameCache()
        self.depth: deque[Any] = deque(maxlen=30)
        self.camera_info: CameraInfo | None = None
        self.continuous_query = ""
        self.reuse: dict[str, Any] = {}
        self.pubs: dict[str, Any] = {}

    def topic(self, base: str) -> str:
        """Input topic: ``image`` for the unnamed camera, ``front/image`` for "front"."""
        return f"{self.name}/{base}" if self.name else base

    def out(self, base: str) -> str:
        """Output topic: ``~/result``, or ``~/front/result`` for camera "front"."""
        return f"~/{self.name}/{base}" if self.name else f"~/{base}"

    @property
    def label(self) -> str:
        return self.name or "default"


class StampNode(LifecycleNode):
    def __init__(self, node_name: str = "stamp_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._active = False
        self._segmenter: Any = None
        self._load_error = "the node has not been activated yet"
        self._worker: InferenceWorker | None = None
        self._channels: dict[str, Channel] = {}
        self._ids = itertools.count(1)
        self._stats = _Stats()
        self._io: list[Any] = []
        self._timers: list[Any] = []

    # ------------------------------------------------------------------ parameters
    def p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for param in params:
            reason = validate(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            spec = BY_NAME.get(param.name)
            if spec is not None and spec.reload and self._active:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} is read when the model loads: deactivate the node, "
                    "set it, then activate (the model is reloaded)",
                )
            if param.name == "system_prompt" and self._segmenter is not None:
                self._segmenter.system_prompt = param.value
            if param.name == "mode":
                for channel in self._channels.values():
                    channel.continuous_query = ""
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception as exc:  # rclpy would swallow it: say what went wrong
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            self._destroy_io()
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        for spec in PARAMS:
            reason = validate(spec.name, self.p(spec.name))
            if reason:
                self.get_logger().error(f"bad parameter: {reason}")
                return TransitionCallbackReturn.FAILURE
        # Frames and requests in separate groups: a burst of large images must never delay
        # (or, through a full reader history, drop) a planner's query.
        image_group = MutuallyExclusiveCallbackGroup()
        request_group = MutuallyExclusiveCallbackGroup()
        call_group = ReentrantCallbackGroup()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # Queries are tiny and each one is owed an answer: keep many; results come in bursts
        # (a deactivate answers every waiting request at once), so keep more than max_pending.
        requests_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        results_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        image_qos = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE
            if self.p("image_reliability") == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self._io = [self._pub_diag]
        names = [str(n).strip().strip("/") for n in self.p("cameras")] or [""]
        self._channels = {}
        for name in names:
            channel = self._channels[name] = Channel(name)
            for key, msg_type in (("result", Segmentation), ("answer", String), ("mask", Image),
                                  ("overlay", Image), ("points", PointCloud2),
                                  ("markers", MarkerArray)):
                qos = results_qos if key in ("result", "answer") else reliable
                channel.pubs[key] = self.create_publisher(msg_type, channel.out(key), qos)
            if self.p("use_compressed"):
                image_sub = self.create_subscription(
                    CompressedImage, channel.topic("image/compressed"),
                    lambda m, c=channel: self._on_image(c, m), image_qos,
                    callback_group=image_group)
            else:
                image_sub = self.create_subscription(
                    Image, channel.topic("image"), lambda m, c=channel: self._on_image(c, m),
                    image_qos, callback_group=image_group)
            self._io += [*channel.pubs.values(), image_sub]
            self._io += [
                self.create_subscription(String, channel.topic("query"),
                                         lambda m, c=channel: self._on_query(c, m),
                                         requests_qos, callback_group=request_group),
                self.create_subscription(Image, channel.topic("depth"),
                                         lambda m, c=channel: c.depth.append(m),
                                         image_qos, callback_group=image_group),
                self.create_subscription(CameraInfo, channel.topic("camera_info"),
                                         lambda m, c=channel: setattr(c, "camera_info", m),
                                         reliable, callback_group=image_group),
            ]
            self.get_logger().info(
                f"camera {channel.label}: image {image_sub.topic_name} "
                f"({self.p('image_reliability')}), query "
                f"{self.resolve_topic_name(channel.topic('query'))}, results on "
                f"{channel.pubs['result'].topic_name}")
        self._io.append(self.create_service(Segment, "~/segment", self._on_service,
                                            callback_group=call_group))
        self._action = ActionServer(
            self, SegmentAction, "~/segment", self._on_action,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=call_group,
        )
        if self.p("stats_period") > 0:
            self._timers.append(self.create_timer(self.p("stats_period"), self._report_stats))
        self.get_logger().info(f"configured: {len(self._channels)} camera(s), mode "
                               f"{self.p('mode')}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._segmenter = self._load_model()
        except Exception as exc:  # a missing model must not kill the node: it answers errors
            self._load_error = f"model {self.p('model')!r} could not be loaded: {exc}"
            self.get_logger().error(self._load_error)
            return TransitionCallbackReturn.FAILURE
        self._worker = InferenceWorker(self._handle, self._reject, self.p("max_pending"),
                                       on_start=self._warmup)
        self._active = True
        self.get_logger().info(f"active: model {self.p('model')} ready")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        # The reason first: requests refused while the worker stops must not be told that the
        # node "has not been activated yet".
        self._load_error = "the node is inactive (activate it to load the model)"
        self._active = False
        if self._worker is not None:
            self._worker.stop("the node was deactivated")
            self._worker = None
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._destroy_io()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the worker (waiting requests get error results) and drop the model. Used by
        the shutdown transition and by main() after SIGINT/SIGTERM, when the context is
        already gone and no transition can run."""
        self._active = False
        if self._worker is not None:
            self._worker.stop("the node is shutting down")
            self._worker = None
        self._release_model()

    def _destroy_io(self) -> None:
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        for entity in self._io:
            if hasattr(entity, "topic_name") and hasattr(entity, "publish"):
                self.destroy_publisher(entity)
            elif hasattr(entity, "srv_name"):
                self.destroy_service(entity)
            else:
                self.destroy_subscription(entity)
        self._io = []
        if getattr(self, "_action", None) is not None:
            self._action.destroy()
            self._action = None

    def _load_model(self) -> Any:
        from stamp_ros.engine.segmenter import StampSegmenter

        t0 = time.monotonic()
        refine = self.p("refine")
        segmenter = StampSegmenter.from_pretrained(
            self.p("model"),
            device=self.p("device"),
            dtype=self.p("dtype"),
            min_pixels=self.p("min_pixels"),
            max_pixels=self.p("max_pixels"),
            max_new_tokens=self.p("max_new_tokens"),
            mask_upsample=self.p("mask_upsample"),
            refine=None if refine == "none" else refine,
            sam_checkpoint=self.p("sam_checkpoint") or None,
            system_prompt=self.p("system_prompt"),
        )
        self.get_logger().info(f"loaded {self.p('model')} in {time.monotonic() - t0:.1f} s")
        return segmenter

    def _warmup(self) -> None:
        """First-request latency (kernel selection, allocator growth, lazy init) is paid here,
        on the worker thread, before the first queued request; a failure only costs speed."""
        segmenter = self._segmenter
        if segmenter is None or not hasattr(segmenter, "warmup"):
            return
        try:
            t0 = time.monotonic()
            segmenter.warmup()
            self.get_logger().info(f"warm-up done in {time.monotonic() - t0:.1f} s")
        except Exception as exc:
            self.get_logger().warning(f"model warm-up failed: {exc}")

    def _release_model(self) -> None:
        self._segmenter = None
        for channel in self._channels.values():
            channel.reuse.clear()
        gc.collect()
        _free_cuda_cache()

    # ------------------------------------------------------------------ inputs
    def _on_image(self, channel: Channel, msg: Any) -> None:
        frame = channel.frames.put(msg)
        with self._stats.lock:
            self._stats.frames += 1
        query = channel.continuous_query
        worker = self._worker  # deactivate may set it to None under us
        if query and self._active and self.p("mode") == "continuous" and worker:
            worker.offer_continuous(Job(
                request_id=f"c{frame.seq}", query=query, source="continuous",
                asked_at=frame.received, frame=frame, channel=channel), key=channel.name)

    def _on_query(self, channel: Channel, msg: String) -> None:
        job = Job(request_id=f"q{next(self._ids)}", query=msg.data, source="topic",
                  asked_at=time.monotonic(), channel=channel)
        if self.p("mode") == "continuous":
            if self._refuse_early(job):
                channel.continuous_query = ""
                return
            channel.continuous_query = msg.data
            channel.reuse.clear()
            self.get_logger().info(f"continuous mode, camera {channel.label}: tracking "
                                   f"{msg.data[:200]!r}")
            return
        self._submit(job)

    def _refuse_early(self, job: Job) -> bool:
        """Answer at once (no queueing) what can never succeed."""
        reason = job.extra.get("refuse", "")
        if reason:
            pass
        elif not job.query.strip():
            reason = "empty query"
        elif len(job.query) > MAX_QUERY_CHARS:
            reason = f"query too long: {len(job.query)} characters (max {MAX_QUERY_CHARS})"
        elif not self._active or self._worker is None:
            reason = self._load_error
        if reason:
            self._reject(job, reason)
        return bool(reason)

    def _submit(self, job: Job) -> None:
        if self._refuse_early(job):
            return
        worker = self._worker
        if worker is None:  # deactivated since the check: an exception here would kill spin()
            self._reject(job, self._load_error)
        else:  # a worker stopped since the check rejects the job itself
            worker.submit(job)

    def _request_job(self, request: Any, source: str) -> tuple[Job, threading.Event, list]:
        done = threading.Event()
        box: list[Segmentation] = []

        def finish(result: Segmentation) -> None:
            box.append(result)
            done.set()

        image = request.image if request.image.width and request.image.height else None
        if image is None and len(request.image.data):
            image = request.image  # declared 0x0 but carries data: let conversion reject it
        job = Job(request_id=request.request_id or f"{source[0]}{next(self._ids)}",
                  query=request.query, source=source, asked_at=time.monotonic(),
                  image_msg=image, done=finish,
                  channel=self._channels.get(request.camera.strip("/")))
        if job.channel is None:
            job.extra["refuse"] = (
                f"unknown camera {request.camera!r}: this node serves "
                f"{', '.join(repr(c) for c in self._channels) or 'no cameras (not configured)'}")
        return job, done, box

    def _on_service(self, request: Any, response: Any) -> Any:
        job, done, box = self._request_job(request, "service")
        self._submit(job)
        done.wait()
        response.result = box[0]
        return response

    def _on_action(self, goal_handle: Any) -> Any:
        job, done, box = self._request_job(goal_handle.request, "action")
        t0 = time.monotonic()

        def progress(stage: str, text: str) -> None:
            fb = SegmentAction.Feedback()
            fb.stage, fb.partial_answer = stage, text
            fb.elapsed_ms = _ms(time.monotonic() - t0)
            goal_handle.publish_feedback(fb)

        job.progress = progress
        job.cancelled = lambda: goal_handle.is_cancel_requested
        progress("queued", "")
        self._submit(job)
        done.wait()
        result = SegmentAction.Result()
        result.result = box[0]
        if goal_handle.is_cancel_requested and not box[0].success:
            goal_handle.canceled()
        elif box[0].success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    # ------------------------------------------------------------------ the worker side
    def _reject(self, job: Job, reason: str) -> None:
        from stamp_ros.ros.results import error_msg

        header = job.image_msg.header if job.image_msg is not None else None
        if header is None and job.frame is not None:
            header = job.frame.msg.header
        self._finish(job, error_msg(request_id=job.request_id, query=job.query, error=reason,
                                    header=header, model=str(self.p("model"))))

    def _finish(self, job: Job, result: Segmentation, frame_rgb: Any = None,
                masks: list | None = None) -> None:
        result.total_ms = float(_ms(time.monotonic() - job.asked_at))
        with self._stats.lock:
            if result.success:
                self._stats.results += 1
                self._stats.latencies.append(result.total_ms)
            else:
                self._stats.errors += 1
                self._stats.last_error = result.error
        if not result.success:
            self.get_logger().warning(
                f"request {job.request_id} ({job.source}) failed: {result.error}")
        try:
            if job.channel is not None:
                self._publish(job.channel, result, frame_rgb, masks)
        finally:
            if job.done is not None:
                job.done(result)

    def _publish(self, channel: Channel, result: Segmentation, frame_rgb: Any,
                 masks: list | None) -> None:
        if not self._io:  # cleaned up or shut down while the request ran
            return
        pubs = channel.pubs
        pubs["result"].publish(result)
        if not result.success:
            return
        pubs["answer"].publish(String(data=result.answer))
        if frame_rgb is None:
            return
        from stamp_ros.overlay import render_overlay, union_mask
        from stamp_ros.ros.convert import mono8_to_image_msg, rgb_to_image_msg

        union = union_mask(masks or [], frame_rgb.shape[:2])
        pubs["mask"].publish(mono8_to_image_msg(union, result.header))
        if self.p("publish_overlay") and pubs["overlay"].get_subscription_count() > 0:
            overlay = render_overlay(frame_rgb, masks or [], result.answer)
            pubs["overlay"].publish(rgb_to_image_msg(overlay, result.header))

    def _frame_for(self, job: Job) -> Frame:
        from stamp_ros.engine import InferenceCancelled

        if job.frame is not None:
            return job.frame
        try:
            return job.channel.frames.fresh(
                float(self.p("max_frame_age")), float(self.p("frame_timeout")),
                asked_at=job.asked_at, cancelled=job.cancelled)
        except NoFreshFrame:
            if job.cancelled is not None and job.cancelled():
                raise InferenceCancelled("cancelled while waiting for a camera frame") from None
            raise

    def _handle(self, job: Job) -> None:
        from stamp_ros.engine import EngineError, InferenceCancelled
        from stamp_ros.ros.convert import (
            ImageConversionError,
            compressed_msg_to_rgb,
            image_msg_to_rgb,
        )
        from stamp_ros.ros.results import error_msg, segmentation_msg

        header = None
        model = str(self.p("model"))
        try:
            if job.cancelled is not None and job.cancelled():
                raise InferenceCancelled("cancelled before it started")
            if job.image_msg is None and job.frame is None and job.progress:
                job.progress("waiting_for_frame", "")
            msg = job.image_msg if job.image_msg is not None else self._frame_for(job).msg
            header = msg.header
            t_start = time.monotonic()
            wait_ms = _ms(t_start - job.asked_at)
            if job.progress:
                job.progress("convert", "")
            rgb = (compressed_msg_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else image_msg_to_rgb(msg))
            convert_ms = _ms(time.monotonic() - t_start)
            segmenter = self._segmenter
            if segmenter is None:
                raise EngineError(self._load_error)
            channel = job.channel
            forced = channel.reuse.get(job.query) if job.source == "continuous" else None
            progress = job.progress
            if FAULT_INJECTION:
                progress = _fault_injector(job.query, job.progress)
            result = segmenter.segment(
                rgb, job.query, progress=progress, should_cancel=job.cancelled,
                forced_answer_ids=forced["ids"] if forced else None)
            if job.source == "continuous":
                self._remember_answer(channel, job.query, result, forced)
            t_post = time.monotonic()
            objects, frame_3d = self._objects_3d(channel, header, result)
            seg = segmentation_msg(
                request_id=job.request_id, query=job.query, header=header, result=result,
                model=model, wait_ms=wait_ms, convert_ms=convert_ms, objects=objects,
                frame_id_3d=frame_3d)
            seg.postprocess_ms += float(_ms(time.monotonic() - t_post))
            self._finish(job, seg, rgb, [inst.mask for inst in result.instances])
        except InferenceCancelled as exc:
            self._finish(job, error_msg(request_id=job.request_id, query=job.query,
                                        error=f"cancelled: {exc}", header=header, model=model))
        except (NoFreshFrame, ImageConversionError, EngineError, ValueError) as exc:
            self._finish(job, error_msg(request_id=job.request_id, query=job.query,
                                        error=str(exc), header=header, model=model))
        except Exception as exc:  # CUDA OOM and anything unexpected: report, keep serving
            error = _describe_failure(exc)
            self.get_logger().error(f"inference failed for {job.request_id}: {error}")
            _free_cuda_cache()
            self._finish(job, error_msg(request_id=job.request_id, query=job.query,
                                        error=error, header=header, model=model))

    def _remember_answer(self, channel: Channel, query: str, result: Any,
                         forced: dict | None) -> None:
        """Continuous mode re-uses (teacher-forces) the last answer for reanswer_every frames:
        the mask pass then runs without autoregressive decoding."""
        every = int(self.p("reanswer_every"))
        if forced is None:
            if every > 1 and result.token_ids:
                channel.reuse = {query: {"ids": list(result.token_ids), "left": every - 1}}
            return
        forced["left"] -= 1
        if forced["left"] <= 0:
            channel.reuse.pop(query, None)

    def _objects_3d(self, channel: Channel, header: Any, result: Any
                    ) -> tuple[list | None, str]:
        """Pair the frame with a depth image by stamp and lift each mask to 3D points."""
        if not result.instances or not channel.depth or channel.camera_info is None:
            return None, ""
        from stamp_ros.ros.depth3d import lift_instances, pair_depth

        depth = pair_depth(header, list(channel.depth), float(self.p("depth_max_skew")))
        if depth is None:
            self.get_logger().warning(
                "depth is subscribed but no depth image is within depth_max_skew of the frame",
                throttle_duration_sec=10.0)
            return None, ""
        objects, points = lift_instances(
            [inst.mask for inst in result.instances], depth, channel.camera_info,
            float(self.p("depth_scale")))
        frame_id = header.frame_id
        target = str(self.p("target_frame"))
        if target and target != frame_id:
            objects, points, frame_id = self._to_target_frame(objects, points, header, target)
        self._publish_3d(channel, header, frame_id, objects, points, result)
        return objects, frame_id

    def _to_target_frame(self, objects: list, points: list, header: Any,
                         target: str) -> tuple[list, list, str]:
        """Transform through tf2 when it is installed and has the transform; else keep the
        camera frame and say why (once per 10 s)."""
        from stamp_ros.ros.depth3d import transform_objects

        buffer = self._tf_buffer()
        if buffer is None:
            self.get_logger().warning(
                f"target_frame {target!r} set but tf2_ros is not installed: 3D stays in "
                f"{header.frame_id!r}", throttle_duration_sec=10.0)
            return objects, points, header.frame_id
        try:
            tf = buffer.lookup_transform(target, header.frame_id, rclpy.time.Time.from_msg(
                header.stamp), timeout=rclpy.duration.Duration(seconds=0.1))
        except Exception as exc:
            self.get_logger().warning(
                f"no transform {header.frame_id!r} -> {target!r}: {exc}; 3D stays in the "
                "camera frame", throttle_duration_sec=10.0)
            return objects, points, header.frame_id
        t, q = tf.transform.translation, tf.transform.rotation
        objects, points = transform_objects(objects, points, (q.x, q.y, q.z, q.w),
                                            (t.x, t.y, t.z))
        return objects, points, target

    def _tf_buffer(self) -> Any:
        if getattr(self, "_tf", None) is None:
            try:
                from tf2_ros import Buffer, TransformListener
            except ImportError:
                return None
            buffer = Buffer()
            self._tf = (buffer, TransformListener(buffer, self))
        return self._tf[0]

    def _publish_3d(self, channel: Channel, header: Any, frame_id: str, objects: list,
                    points: list, result: Any) -> None:
        from stamp_ros.ros.cloud import objects_to_markers, points_to_cloud

        h = type(header)()
        h.stamp, h.frame_id = header.stamp, frame_id
        channel.pubs["points"].publish(points_to_cloud(points, h))
        labels = [f"{result.text[:40]} #{i}" for i in range(len(objects))]
        channel.pubs["markers"].publish(objects_to_markers(objects, labels, h))

    # ------------------------------------------------------------------ diagnostics
    def _report_stats(self) -> None:
        # rclpy's MultiThreadedExecutor can run a timer callback twice for one period; a second
        # report covering a few milliseconds would only show zero rates.
        now = time.monotonic()
        if now - self._stats.since < 0.5 * float(self.p("stats_period")):
            return
        snap = self._stats.snapshot_and_reset()
        worker = self._worker
        snap["queue_depth"] = worker.depth if worker else 0
        snap["dropped_frames"] = worker.dropped_frames if worker else 0
        snap["rejected_requests"] = worker.rejected if worker else 0
        self.get_logger().info(
            "stats: " + ", ".join(
                f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in snap.items()
            )
        )
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: stamp inference"
        status.hardware_id = str(self.p("model"))
        if not self._active:
            status.level, status.message = DiagnosticStatus.ERROR, self._load_error[:200]
        elif snap["errors"]:
            status.level, status.message = DiagnosticStatus.WARN, "errors in the last period"
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in snap.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._pub_diag.publish(arr)


def _descriptor(spec: Any) -> ParameterDescriptor:
    """What `ros2 param describe` shows: the meaning, the allowed values and the range."""
    desc = ParameterDescriptor(description=spec.description)
    notes = []
    if spec.choices:
        notes.append(f"one of: {', '.join(map(str, spec.choices))}")
    if spec.reload:
        notes.append("read when the model loads: change it while the node is inactive")
    desc.additional_constraints = "; ".join(notes)
    if spec.min_value is not None or spec.max_value is not None:
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min_value or 0.0),
                to_value=float(spec.max_value if spec.max_value is not None else 1e9))]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(
                from_value=int(spec.min_value or 0),
                to_value=int(spec.max_value if spec.max_value is not None else 2**31 - 1))]
    return desc


def _fault_injector(query: str, progress: Any) -> Any:
    def hook(stage: str, text: str) -> None:
        if stage == "mask" and "[[raise]]" in query:
            raise RuntimeError("injected failure in the middle of inference")
        if stage == "mask" and "[[oom]]" in query:
            import torch

            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if progress is not None:
            progress(stage, text)

    return hook


def _describe_failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "out of memory" in str(exc).lower():
        return f"CUDA out of memory: {text[:300]} (request dropped, the node keeps serving)"
    return f"{type(exc).__name__}: {text[:300]}"


def _free_cuda_cache() -> None:
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _return_large_buffers_to_the_os() -> None:
    """Pin glibc's mmap threshold at 1 MiB.

    A camera node allocates and frees a multi-megabyte buffer per frame from several executor
    threads. glibc raises its mmap threshold after the first such free, so later frames come
    from per-thread heap arenas, which keep freed blocks: resident memory then creeps up by
    tens of megabytes under a 30 Hz 1080p stream. A fixed threshold keeps every large buffer
    in its own mapping, returned to the OS when freed. No-op where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        m_mmap_threshold = -3
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, 1 << 20)


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    _return_large_buffers_to_the_os()
    rclpy.init(args=sys.argv if args is None else args)
    try:
        node = StampNode()
    except (InvalidParameterValueException, ParameterException) as exc:  # bad --ros-args -p
        logging.getLogger("stamp_ros.node").critical(f"bad parameter: {exc}")
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=6)
    executor.add_node(node)
    code = 0
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal("configuration failed (see above); exiting")
            code = 1
        else:
            # A model that fails to load leaves the node inactive but serving: every request
            # is answered with an error result naming the cause, and `activate` can retry.
            node.trigger_activate()
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
