"""What happens to one request on a worker thread: frame, conversion, model, messages.

:class:`RequestPipeline` is the worker's handler. It picks the frame a request is answered on
(an inline image, the continuous frame, or the newest fresh frame of its camera), converts it,
runs the engine (the job's inference process, else :attr:`segmenter`), lifts masks to 3D,
builds the Segmentation message, publishes the camera's outputs and hands the result to
whoever waits for it. Every path ends in exactly one result,
successful or an error naming the reason. It holds no rclpy entities of its own: publishers come
with the request's camera, so the rules are unit-tested by calling :meth:`handle` directly.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String

from stamp_ros.engine.errors import EngineError, InferenceCancelled
from stamp_ros.engine.prompt import query_refusal
from stamp_ros.inference.errors import describe_failure
from stamp_ros.inference.scheduler import Job
from stamp_ros.msg import Segmentation
from stamp_ros.msgs.compressed import compressed_msg_to_rgb
from stamp_ros.msgs.convert import ImageConversionError, image_msg_to_rgb
from stamp_ros.pipeline.conversations import Conversation, ConversationStore
from stamp_ros.pipeline.frame_cache import NoFreshFrame
from stamp_ros.pipeline.results import error_msg, segmentation_msg
from stamp_ros.ros.camera import Camera, as_message
from stamp_ros.ros.diagnostics import Stats
from stamp_ros.ros.ecosystem import publish_detections
from stamp_ros.ros.kit import mono8_to_image_msg, rclpy_kit, rgb_to_image_msg
from stamp_ros.ros.objects3d import ObjectLifter

TRACKING_LOG_S = 5.0
"""A failure to ground the tracks on an answer is logged at most this often (each is counted:
``tracking_failures`` on /diagnostics)."""


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def free_cuda_cache() -> None:
    """Give cached CUDA blocks back after a failure or a model release (no-op without CUDA, and
    without torch loaded: a node whose model runs in an inference process never imports it)."""
    with contextlib.suppress(Exception):
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


class RequestPipeline:
    """Answers requests with the current model; the node swaps :attr:`segmenter` on
    activate/deactivate and clears :attr:`publishing` when its publishers are destroyed."""

    def __init__(self, param: Callable[[str], Any], logger: Any, lifter: ObjectLifter,
                 stats: Stats, conversations: ConversationStore) -> None:
        self._param = param
        self._log = logger
        self._lifter = lifter
        self._stats = stats
        self.conversations = conversations
        self.segmenter: Any = None
        self.unavailable_reason = "the node has not been activated yet"
        """Why no model serves (the error result while :attr:`segmenter` is None)."""
        self.publishing = False
        self.tracking: Any = None
        """The node's :class:`~stamp_ros.ros.tracking.TrackStream` (grounds continuous answers)."""
        self._last_tracking_log = 0.0

    # ------------------------------------------------------------------ before the queue
    def refusal(self, job: Job, serving: bool) -> str:
        """Why ``job`` can never succeed ("" when it may): answered at once, never queued."""
        reason = job.refusal or query_refusal(job.query)
        if reason:
            return reason
        if not serving:
            return self.unavailable_reason
        return ""

    def reject(self, job: Job, reason: str) -> None:
        """Answer ``job`` with an error result without running it (the worker's reject hook)."""
        header = None
        if job.image_msg is not None:
            header = job.image_msg.header
        elif job.frame is not None:
            header = as_message(job.frame.msg).header
        self._finish(job, error_msg(request_id=job.request_id, query=job.query, error=reason,
                                    header=header, model=str(self._param("model")),
                                    kit=rclpy_kit()))

    # ------------------------------------------------------------------ on the worker thread
    def handle(self, job: Job) -> None:
        """Run ``job`` to exactly one result (the worker's handler)."""
        header = None
        model = str(self._param("model"))
        try:
            if job.cancelled is not None and job.cancelled():
                raise InferenceCancelled("cancelled before it started")
            if job.image_msg is None and job.frame is None and job.progress:
                job.progress("waiting_for_frame", "")
            conversation = (self.conversations.get(job.conversation) if job.conversation
                            else None)
            pinned = conversation is not None and not job.new_frame and job.image_msg is None
            if pinned:  # a follow-up: the conversation's own frame
                msg = conversation.frame_msg
                frame_age_s = job.asked_at - conversation.frame_received
            elif job.image_msg is not None:
                msg, frame_age_s = job.image_msg, 0.0
            else:
                msg, frame_age_s = self._frame_message(job)
            header = msg.header
            t_start = time.monotonic()
            wait_ms = _ms(t_start - job.asked_at)
            if job.progress:
                job.progress("convert", "")
            rgb = (compressed_msg_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else image_msg_to_rgb(msg))
            convert_ms = _ms(time.monotonic() - t_start)
            segmenter = job.segmenter if job.segmenter is not None else self.segmenter
            if segmenter is None:
                raise EngineError(self.unavailable_reason)
            camera: Camera = job.camera
            continuous = job.source == "continuous"
            forced = camera.answer_reuse.forced_ids(job.query) if continuous else None
            # Earlier turns stay with a conversation that moves to a new frame.
            history = self.conversations.history(conversation) if conversation else None
            result = segmenter.segment(
                rgb, job.query, history, progress=job.progress,
                should_cancel=job.cancelled, forced_answer_ids=forced,
                image_in_first_turn=bool(job.conversation))
            turn = self._record_turn(job, conversation, pinned, msg, frame_age_s, segmenter,
                                     result) if job.conversation else 0
            if continuous:
                camera.answer_reuse.record(job.query, result.token_ids,
                                           int(self._param("reanswer_every")), forced is not None)
            t_post = time.monotonic()
            lift = self._lifter.lift(
                camera, header, result, depth_max_skew=float(self._param("depth_max_skew")),
                depth_scale=float(self._param("depth_scale")),
                target_frame=str(self._param("target_frame")))
            self._stats.lifted(lift.reasons)
            seg = segmentation_msg(
                request_id=job.request_id, query=job.query, header=header, result=result,
                model=model, wait_ms=wait_ms, convert_ms=convert_ms, objects=lift.objects,
                frame_id_3d=lift.frame_id,
                reasons_3d=[r.text if r else "" for r in lift.reasons],
                depth_fractions=lift.fractions, kit=rclpy_kit())
            seg.turn = turn
            seg.frame_age_ms = float(_ms(frame_age_s))
            seg.answer_reused = forced is not None
            if continuous and self.tracking is not None:
                self._ground(job, rgb, result, seg)
            seg.postprocess_ms += float(_ms(time.monotonic() - t_post))
            self._finish(job, seg, rgb, [inst.mask for inst in result.instances])
        except InferenceCancelled as exc:
            self._finish(job, error_msg(request_id=job.request_id, query=job.query,
                                        error=f"cancelled: {exc}", header=header, model=model,
                                        kit=rclpy_kit()))
        except (NoFreshFrame, ImageConversionError, EngineError, ValueError) as exc:
            self._finish(job, error_msg(request_id=job.request_id, query=job.query,
                                        error=str(exc), header=header, model=model,
                                        kit=rclpy_kit()))
        except Exception as exc:  # CUDA OOM and anything unexpected: report, keep serving
            error = describe_failure(exc)
            self._log.error(f"inference failed for {job.request_id}: {error}")
            free_cuda_cache()
            self._finish(job, error_msg(request_id=job.request_id, query=job.query,
                                        error=error, header=header, model=model,
                                        kit=rclpy_kit()))

    def _ground(self, job: Job, rgb: Any, result: Any, seg: Segmentation) -> None:
        """Ground the camera's tracks on a continuous answer and write the track ids into it.
        Tracking never fails a model answer: whatever goes wrong here is counted
        (``tracking_failures``), logged at most every :data:`TRACKING_LOG_S`, the camera's
        tracks are dropped (the next answer grounds a fresh tracker) and the answer is
        published as the success it is, without track ids."""
        try:
            self.tracking.ground(job, rgb, result, seg)
        except Exception as exc:
            self._stats.tracking_failed()
            for inst in seg.instances:
                inst.track_id = 0
            with contextlib.suppress(Exception):
                self.tracking.reset(job.camera, forget=True)
            now = time.monotonic()
            if now - self._last_tracking_log >= TRACKING_LOG_S:
                self._last_tracking_log = now
                self._log.warning(
                    f"tracking could not use the answer to {job.request_id} (camera "
                    f"{job.camera.label}): "
                    f"{type(exc).__name__}: {exc}; published without track ids, the tracks "
                    "start again from the next answer")

    def _record_turn(self, job: Job, conversation: Conversation | None, pinned: bool,
                     msg: Any, frame_age_s: float, segmenter: Any, result: Any) -> int:
        """After a successful turn: start the conversation or move it to this frame, add the
        turn, and forget it if the request ends it. Returns the turn number."""
        if conversation is None:
            conversation = self.conversations.start(job.conversation, msg,
                                                    job.asked_at - frame_age_s)
        elif not pinned:
            conversation.frame_msg = msg
            conversation.frame_received = job.asked_at - frame_age_s
        turn = self.conversations.record(conversation, job.query,
                                         segmenter.history_answer(result))
        if job.end_conversation:
            self.conversations.end(job.conversation)
        return turn

    def end_conversation(self, job: Job) -> Segmentation:
        """A request that only ends its conversation (empty query): answered at once, on no
        frame; ``turn`` says how many turns the conversation had (0: there was none)."""
        conversation = self.conversations.get(job.conversation)
        self.conversations.end(job.conversation)
        msg = Segmentation(request_id=job.request_id, query=job.query, success=True,
                           conversation=job.conversation,
                           turn=conversation.turn_count if conversation else 0,
                           model=str(self._param("model")))
        msg.total_ms = float(_ms(time.monotonic() - job.asked_at))
        return msg

    def _frame_message(self, job: Job) -> tuple[Any, float]:
        """The frame a camera request is answered on and its age when the request was asked:
        the continuous frame it was made for, or the newest one no older than max_frame_age
        (waiting up to frame_timeout)."""
        if job.frame is not None:
            return as_message(job.frame.msg), 0.0
        try:
            frame = job.camera.frames.fresh(
                float(self._param("max_frame_age")), float(self._param("frame_timeout")),
                asked_at=job.asked_at, cancelled=job.cancelled)
        except NoFreshFrame:
            if job.cancelled is not None and job.cancelled():
                raise InferenceCancelled("cancelled while waiting for a camera frame") from None
            raise
        return as_message(frame.msg), job.asked_at - frame.received

    def _finish(self, job: Job, result: Segmentation, frame_rgb: Any = None,
                masks: list | None = None) -> None:
        result.total_ms = float(_ms(time.monotonic() - job.asked_at))
        result.conversation = job.conversation
        self._stats.answered(result.success, result.total_ms, result.error)
        if not result.success:
            self._log.warning(f"request {job.request_id} ({job.source}) failed: {result.error}")
        try:
            if job.camera is not None:
                self._publish(job.camera, result, frame_rgb, masks)
        except Exception as exc:  # publishers destroyed under us (cleanup during a request)
            self._log.warning(f"could not publish the result of {job.request_id}: {exc}")
        finally:
            if job.done is not None:
                job.done(result)

    def _publish(self, camera: Camera, result: Segmentation, frame_rgb: Any,
                 masks: list | None) -> None:
        """~/result always; ~/answer, ~/mask and the ecosystem's outputs (detections, labels,
        TF: :mod:`stamp_ros.ros.ecosystem`) on success; ~/overlay only while someone
        subscribes to it (rendering costs milliseconds per frame). While the camera tracks,
        the overlay and TF come per frame with ~/tracks instead."""
        outputs = camera.outputs
        if not self.publishing or not outputs:
            return
        outputs["result"].publish(result)
        if not result.success:
            return
        outputs["answer"].publish(String(data=result.answer))
        if frame_rgb is None:
            return
        from stamp_ros.render.overlay import render_overlay, union_mask

        union = union_mask(masks or [], frame_rgb.shape[:2])
        outputs["mask"].publish(mono8_to_image_msg(union, result.header))
        tracked = self.tracking is not None and self.tracking.tracking(camera)  # per frame there
        publish_detections(outputs, result, frame_rgb.shape[:2], masks, self._param,
                           tf=not tracked)
        overlay_pub = outputs["overlay"]
        if self._param("publish_overlay") and overlay_pub.get_subscription_count() > 0 \
                and not tracked:
            overlay = render_overlay(frame_rgb, masks or [], result.answer)
            overlay_pub.publish(rgb_to_image_msg(overlay, result.header))
