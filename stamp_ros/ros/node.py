"""StampNode: camera frames + a sentence in; answer text, masks and 3D objects out.

A lifecycle node that configures and activates itself at start-up, so ``ros2 run`` and
``ros2 launch`` just work; ``deactivate`` frees the model (and GPU memory), ``activate`` loads
it again, on a thread of its own (:mod:`stamp_ros.ros.activation`): frames, queries, calls and
parameters are taken meanwhile. An inactive node stays reachable: a request gets an error
result naming the reason, because a planner blocked on a call that never returns is worse than
one told "inactive".

The model runs in inference processes (:mod:`stamp_ros.inference`, one per entry of
``devices``; :mod:`stamp_ros.ros.model_processes`): a crash of the model (a CUDA error, an
abort in a kernel, the OOM killer) costs the requests it was working on, answered with the
reason, and a restart, never the node. This process keeps everything ROS, never torch.

Callbacks never touch the model and never wait for it: frames are stored as they came off the
wire, requests go to the :class:`InferenceWorker`, and service and action callbacks are
coroutines that yield their executor thread until it answers. A request on a consumer thread is
:mod:`stamp_ros.ros.requests`; 3D is :mod:`stamp_ros.ros.objects3d`; reports are
:mod:`stamp_ros.ros.health`; input problems :mod:`stamp_ros.ros.input_watch`; tracking between
model answers :mod:`stamp_ros.ros.tracking`.
"""
from __future__ import annotations

import gc
import itertools
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from diagnostic_msgs.srv import SelfTest
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from stamp_ros.inference.scheduler import InferenceWorker, Job
from stamp_ros.pipeline.conversations import ConversationStore
from stamp_ros.pipeline.params import BY_NAME, PARAMS, validate
from stamp_ros.ros.activation import ModelLoad, activate_in_background
from stamp_ros.ros.calls import SegmentCalls
from stamp_ros.ros.camera import OUTPUT_TYPES, Camera, SerializedImage
from stamp_ros.ros.diagnostics import Stats
from stamp_ros.ros.ecosystem import configure_tf
from stamp_ros.ros.health import NodeHealth
from stamp_ros.ros.input_watch import InputWatch, counted
from stamp_ros.ros.model_processes import ModelProcesses
from stamp_ros.ros.objects3d import ObjectLifter
from stamp_ros.ros.param_descriptors import parameter_descriptor
from stamp_ros.ros.requests import RequestPipeline
from stamp_ros.ros.tracking import TrackStream
from stamp_ros.srv import Track

QUERY_HISTORY_DEPTH = 1000
"""Plain-text queries kept until the executor takes them (100 s at 10 Hz, a few kB)."""
class StampNode(LifecycleNode):
    """The stamp_ros node (see the module docstring and docs/interface.md)."""

    def __init__(self, node_name: str = "stamp_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._active = False
        self._stats = Stats()
        conversations = ConversationStore(lambda: (
            int(self._param("conversation_max_turns")), int(self._param("max_conversations")),
            float(self._param("conversation_timeout"))))
        lifter = ObjectLifter(self)
        self._pipeline = RequestPipeline(self._param, self.get_logger(), lifter,
                                         self._stats, conversations)
        self._tracks = self._pipeline.tracking = TrackStream(self._param, self.get_logger(),
                                                             lifter)
        self._tracks.camera_of = lambda name: self._calls.camera(name)
        self._tracks.refusal = lambda job: self._pipeline.refusal(job, self._worker is not None)
        self._worker: InferenceWorker | None = None
        self._loading: ModelLoad | None = None
        self._model = ModelProcesses(self._param, self.get_logger(), lambda: self._worker)
        self._health = NodeHealth(self, self._param, self._stats, self._model,
                                  lambda: self._worker, self._down_reason)
        self._cameras: dict[str, Camera] = {}
        self._query_ids = itertools.count(1)
        self._calls = SegmentCalls(self, self._submit, self._pipeline.reject,
                                   lambda: self._worker, self._pipeline.end_conversation)
        # Entities, created in on_configure and destroyed in on_cleanup.
        self._input_subscriptions: list[Any] = []
        self._output_publishers: list[Any] = []
        self._service: Any = None
        self._track_service: Any = None
        self._action_server: ActionServer | None = None
        self._stats_timer: Any = None
        self._wake: Any = None
        self._watch: InputWatch | None = None
        self._health_timer: Any = None
        self._self_test: Any = None
        activate_in_background(self, self.load_model)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _down_reason(self) -> str | None:
        return None if self._active else self._pipeline.unavailable_reason

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate the parameters and create every topic, the service and the action."""
        try:
            return self._configure()
        except Exception as exc:  # rclpy would swallow it: say what went wrong
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            self._destroy_entities()
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        for spec in PARAMS:
            reason = validate(spec.name, self._param(spec.name))
            if reason:
                self.get_logger().error(f"bad parameter: {reason}")
                return TransitionCallbackReturn.FAILURE
        # run_node spins the node on one thread; should it run in a multi-threaded executor
        # (a component container), frames and requests are in separate groups so that a burst
        # of large images never delays a planner's query, and calls may overlap.
        image_group = MutuallyExclusiveCallbackGroup()
        request_group = MutuallyExclusiveCallbackGroup()
        call_group = ReentrantCallbackGroup()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # Queries are tiny and each one is owed an answer: keep every one that arrives while
        # the executor is held (activate waits for the inference process to load: ~10 s for
        # the tiny test model on 2 busy cores, far longer for a real one). Results come in
        # bursts (a deactivate answers every waiting request at once): more than max_pending.
        queries_qos = QoSProfile(depth=QUERY_HISTORY_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        results_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        image_qos = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE
            if self._param("image_reliability") == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        # camera_info follows the image's reliability, as image_transport's camera subscriber
        # does: drivers publish the two with the same QoS.
        info_qos = QoSProfile(depth=10, reliability=image_qos.reliability)
        image_type = CompressedImage if self._param("use_compressed") else Image
        image_topic = "image/compressed" if self._param("use_compressed") else "image"

        self._wake = self._calls.wake = self.create_guard_condition(lambda: None)
        self._watch = self._health.watch = InputWatch(self, self._param, self._health.publish)
        self._health.publisher = self._publisher(DiagnosticArray, "/diagnostics", reliable,
                                                 "diagnostics")
        names = [str(n).strip().strip("/") for n in self._param("cameras")] or [""]
        self._cameras = self._calls.cameras = {name: Camera(name) for name in names}
        for camera in self._cameras.values():
            camera.outputs = {
                key: self._publisher(
                    msg_type, camera.output_topic(key),
                    results_qos if key in ("result", "answer") else reliable, key, camera.label)
                for key, msg_type in OUTPUT_TYPES.items()}
            self._output_publishers += camera.outputs.values()
            image_sub = self._subscribe(
                camera, image_topic, image_type,
                lambda raw, c=camera, t=image_type: self._on_image(c, SerializedImage(raw, t)),
                image_qos, image_group, raw=True)
            self._input_subscriptions += [
                image_sub,
                self._subscribe(camera, "query", String, lambda m, c=camera: self._on_query(c, m),
                                queries_qos, request_group),
                self._subscribe(camera, "depth", Image, lambda m, c=camera: self._on_depth(c, m),
                                image_qos, image_group),
                self._subscribe(camera, "camera_info", CameraInfo,
                                lambda m, c=camera: setattr(c, "camera_info", m),
                                info_qos, image_group),
            ]
            self.get_logger().info(
                f"camera {camera.label}: image {image_sub.topic_name} "
                f"({self._param('image_reliability')}), query "
                f"{self.resolve_topic_name(camera.topic('query'))}, results on "
                f"{camera.outputs['result'].topic_name}")
        self._output_publishers += configure_tf(self.get_logger(), self._publisher,
                                                self._cameras.values())
        self._service, self._action_server = self._calls.create_servers(
            int(self._param("max_pending")), call_group)
        self._track_service = self.create_service(Track, "~/track", self._tracks.on_track,
                                                  callback_group=request_group)
        if self._param("stats_period") > 0:
            self._stats_timer = self.create_timer(self._param("stats_period"),
                                                  self._health.on_timer)
        timeout = float(self._param("input_timeout"))
        self._health_timer = self.create_timer(min(1.0, timeout / 2) if timeout > 0 else 1.0,
                                               self._watch.tick, callback_group=request_group)
        self._self_test = self.create_service(SelfTest, "~/self_test",
                                              self._health.on_self_test,
                                              callback_group=request_group)
        self._pipeline.publishing = True
        self.get_logger().info(f"configured: {len(self._cameras)} camera(s), mode "
                               f"{self._param('mode')}")
        return TransitionCallbackReturn.SUCCESS

    async def load_model(self) -> None:
        """Load the model for ``activate`` without holding the executor: requests queue and
        frames arrive meanwhile (:mod:`stamp_ros.ros.activation`). Nothing to load unless the
        node is configured and inactive (else the transition itself refuses)."""
        if self._wake is not None and not self._active:
            await self._begin_loading().finished(self._wake)

    def _begin_loading(self) -> ModelLoad:
        if self._loading is None:
            self._pipeline.unavailable_reason = f"the model {self._param('model')!r} is loading"
            pins = {name: i for i, name in enumerate(self._cameras)}
            self._loading = ModelLoad(self._model, lambda pool: InferenceWorker(
                self._pipeline.handle, self._pipeline.reject, int(self._param("max_pending")),
                lanes=pool.processes, pins=pins, loading=True))
            self._worker = self._loading.worker
        return self._loading

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Serve on the loaded model (:meth:`load_model` loaded it; a direct
        ``trigger_activate`` loads it here); FAILURE, and every waiting request answered with
        the reason, when it did not load."""
        loading = self._begin_loading()
        loading.wait()
        self._loading = None
        worker = loading.worker
        if loading.error:  # a missing model must not kill the node: it answers errors
            reason = f"model {self._param('model')!r} could not be loaded: {loading.error}"
            self._pipeline.unavailable_reason = reason
            self.get_logger().error(reason)
            self._worker = None
            worker.stop(reason)
            return TransitionCallbackReturn.FAILURE
        for lane, proc in enumerate(loading.pool.processes):  # died since it loaded: down
            if proc.state == "ready":
                worker.lane_up(lane)
            else:
                worker.lane_down(lane, proc.last_failure, proc.state == "restarting")
        self._tracks.start()
        self._active = True
        if self._watch is not None:
            self._watch.activate()
        self.get_logger().info(f"active: model {self._param('model')} ready")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop serving (waiting requests get error results) and, with free_on_deactivate, end
        the inference processes: every byte of the model and its caches is returned."""
        # The reason first: requests refused while the worker stops must not be told that the
        # node "has not been activated yet".
        self._pipeline.unavailable_reason = "the node is inactive (activate it to load the model)"
        self._stop_serving("the node was deactivated",
                           free=bool(self._param("free_on_deactivate")))
        if self._watch is not None:
            self._watch.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """End the inference processes (if deactivate kept them) and destroy every topic, the
        service and the action (configure creates them again)."""
        self._model.close()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Answer what is waiting, free the model and destroy every entity."""
        self.close()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the worker (waiting requests get error results) and drop the model. Used by
        the shutdown transition and by main() after SIGINT/SIGTERM, when the context is
        already gone and no transition can run."""
        self._stop_serving("the node is shutting down")

    def _stop_serving(self, reason: str, free: bool = True) -> None:
        self._active = False
        self._loading = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(reason)
        self._tracks.stop()
        if free:
            self._model.close()
        for camera in self._cameras.values():
            camera.answer_reuse.clear()
        gc.collect()

    def _destroy_entities(self) -> None:
        self._pipeline.publishing = False
        self._pipeline.conversations.clear()
        for timer in (self._stats_timer, self._health_timer):
            if timer is not None:
                self.destroy_timer(timer)
        for service in (self._self_test, self._service, self._track_service):
            if service is not None:
                self.destroy_service(service)
        if self._action_server is not None:
            self._action_server.destroy()
        for sub in self._input_subscriptions:
            self.destroy_subscription(sub)
        for pub in [*self._output_publishers, self._health.publisher]:
            if pub is not None:
                self.destroy_publisher(pub)
        if self._wake is not None:
            self.destroy_guard_condition(self._wake)
        for camera in self._cameras.values():
            camera.outputs = {}
        self._input_subscriptions, self._output_publishers = [], []
        self._service = self._action_server = self._track_service = None
        self._stats_timer = self._wake = self._calls.wake = None
        self._health_timer = self._self_test = self._watch = None
        self._health.publisher = self._health.watch = self._health.last_snap = None

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        """Refuse invalid values, and model parameters while a model is loaded (they only take
        effect on the next activate); apply the live ones that need more than a re-read."""
        for param in params:
            reason = validate(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            spec = BY_NAME.get(param.name)
            if spec is not None and spec.reload and self._active:
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} is read when the model loads: deactivate the node, "
                    "set it, then activate (the model is reloaded)")
        for param in params:
            self._model.set_live(param.name, param.value)
            if param.name == "mode":
                for camera in self._cameras.values():
                    camera.track("")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ topics
    def _subscribe(self, camera: Camera, role: str, msg_type: type, callback: Any,
                   qos: QoSProfile, group: Any, **kwargs: Any) -> Any:
        """A camera input: its arrival monitor and incompatible-QoS callbacks included."""
        endpoint = self._watch.input(role, camera.label, camera.topic(role), qos)
        camera.inputs[role] = endpoint
        sub = self.create_subscription(msg_type, camera.topic(role),
                                       counted(endpoint.monitor, callback), qos,
                                       callback_group=group,
                                       event_callbacks=self._watch.callbacks(endpoint), **kwargs)
        self._watch.bind(endpoint, sub.topic_name, camera.topic(role))
        return sub

    def _publisher(self, msg_type: type, topic: str, qos: QoSProfile, role: str,
                   camera: str = "") -> Any:
        """An output with incompatible-QoS callbacks (a subscriber that cannot match)."""
        endpoint = self._watch.output(role, camera, qos)
        pub = self.create_publisher(msg_type, topic, qos,
                                    event_callbacks=self._watch.callbacks(endpoint))
        self._watch.bind(endpoint, pub.topic_name)
        return pub

    def _on_depth(self, camera: Camera, msg: Image) -> None:
        """Keep the depth image for pairing by stamp; check its units."""
        camera.depth.append(msg)
        if self._watch is not None:
            self._watch.check_depth(camera.inputs["depth"], msg)

    def _on_image(self, camera: Camera, frame: SerializedImage) -> None:
        """Store the frame as received (decoded only if a request uses it); in continuous mode
        offer it to the worker, which keeps only the newest per camera."""
        self._stats.frame_received(frame.stamp_ns())
        cached = camera.frames.put(frame)
        query = camera.continuous_query
        worker = self._worker  # deactivate may set it to None under us
        if query and worker is not None and self._param("mode") == "continuous":
            worker.offer_continuous(Job(
                request_id=f"c{cached.seq}", query=query, source="continuous",
                asked_at=cached.received, frame=cached, camera=camera), key=camera.name)
            self._tracks.offer(camera, cached)

    def _on_query(self, camera: Camera, msg: String) -> None:
        """A plain-text request: answered once on a fresh frame, or in continuous mode tracked
        on every new frame until the next query."""
        job = Job(request_id=f"q{next(self._query_ids)}", query=msg.data, source="topic",
                  asked_at=time.monotonic(), camera=camera)
        if self._param("mode") != "continuous":
            self._submit(job)
            return
        reason = self._pipeline.refusal(job, self._worker is not None)
        if reason:
            self._pipeline.reject(job, reason)
            camera.track("")
            self._tracks.reset(camera)
            return
        camera.track(msg.data)
        kept = self._tracks.reset(camera)
        self.get_logger().info(f"continuous mode, camera {camera.label}: "
                               f"{'still tracking' if kept else 'tracking'} {msg.data[:200]!r}")

    def _submit(self, job: Job) -> None:
        worker = self._worker
        reason = self._pipeline.refusal(job, worker is not None)
        if reason:
            self._pipeline.reject(job, reason)
        else:  # a worker stopped since the check rejects the job itself
            worker.submit(job)
