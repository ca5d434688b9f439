"""StampNode: camera frames + a sentence in; answer text, masks and 3D objects out.

A lifecycle node that configures and activates itself at start-up, so ``ros2 run`` and
``ros2 launch`` just work, while ``deactivate`` frees the model (and GPU memory) and
``activate`` loads it again. An inactive node stays reachable: a request that arrives while it
is inactive gets an error result naming the reason instead of no answer at all, because a
planner blocked on a call that never returns is worse than one told "inactive".

The model runs in separate inference processes (:mod:`stamp_ros.inference`, one per entry of
``devices``), started on activate and ended on deactivate (``free_on_deactivate``) or cleanup:
a crash of the model (a CUDA error, an abort in a kernel, the OOM killer) costs the requests it
was working on, answered with the reason, and a restart, never the node. This process keeps
everything ROS and never imports torch.

Callbacks never touch the model and never wait for it: frames are stored as they came off the
wire, requests go to the :class:`InferenceWorker` (one consumer thread per inference process),
and service and action callbacks are coroutines that yield their executor thread until the
worker answers. What happens to a request on a consumer thread is
:mod:`stamp_ros.ros.pipeline`; 3D outputs are :mod:`stamp_ros.ros.objects3d`; counters are
:mod:`stamp_ros.ros.diagnostics`; what is wrong with the inputs (QoS, silence,
depth units) is :mod:`stamp_ros.ros.input_watch`; boxes tracked between model answers are
:mod:`stamp_ros.ros.tracking`.
"""

from __future__ import annotations

import gc
import itertools
import time
from types import SimpleNamespace
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from diagnostic_msgs.srv import SelfTest
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from stamp_ros.action import Segment as SegmentAction
from stamp_ros.client.action_client import FEEDBACK_DEPTH
from stamp_ros.inference.pool import InferencePool
from stamp_ros.inference.protocol import LoadSpec
from stamp_ros.inference.proxy import InferenceProcess
from stamp_ros.msg import Segmentation
from stamp_ros.ros.calls import SegmentCalls
from stamp_ros.ros.camera import OUTPUTS, Camera, SerializedImage
from stamp_ros.ros.conversations import ConversationStore
from stamp_ros.ros.diagnostics import Stats, diagnostic_array, stats_line, status_3d
from stamp_ros.ros.input_watch import InputWatch, counted
from stamp_ros.ros.objects3d import ObjectLifter
from stamp_ros.ros.param_descriptors import parameter_descriptor
from stamp_ros.ros.params import BY_NAME, LIVE_PROCESS_SETTINGS, PARAMS, validate
from stamp_ros.ros.pipeline import RequestPipeline
from stamp_ros.ros.tracking import TrackStream
from stamp_ros.ros.worker import InferenceWorker, Job
from stamp_ros.srv import Segment, Track

OUTPUT_TYPES = dict(zip(OUTPUTS, (Segmentation, String, Image, Image, PointCloud2, MarkerArray,
                                  Segmentation), strict=True))
QUERY_HISTORY_DEPTH = 1000
"""Plain-text queries kept in the ``query`` subscription until the executor takes them: 100 s
of queries at 10 Hz, a few kB in all, so none is lost while a lifecycle transition holds the
executor (a depth of 100 lost queries in a 10-s activate at 10 Hz, test_robustness.py)."""
ACTION_RESULT_TIMEOUT_S = 60
"""How long a finished goal's result stays retrievable (Kilted's default is 10 s, Jazzy's 900 s):
long enough for a slow planner, short enough that results carrying full-size masks do not pile
up in memory."""


def request_history_depth(max_pending: int) -> int:
    """Reader history of the service and action servers: every caller of a burst of several
    times ``max_pending`` simultaneous calls must reach the node (and be answered, if only with
    "queue full"), never be overwritten in the DDS reader before the executor takes it."""
    return max(100, 10 * max_pending)


class StampNode(LifecycleNode):
    """The stamp_ros node (see the module docstring and the README's "ROS interface")."""

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
        self._pool: InferencePool | None = None
        self._restarts = 0
        self._last_failure = ""
        self._process_events = SimpleNamespace(on_down=self._on_process_down,
                                               on_up=self._on_process_up,
                                               on_warm=self._on_process_warm)
        self._cameras: dict[str, Camera] = {}
        self._query_ids = itertools.count(1)
        self._calls = SegmentCalls(self, self._submit, self._pipeline.reject,
                                   lambda: self._worker, self._pipeline.end_conversation)
        # Entities, created in on_configure and destroyed in on_cleanup.
        self._input_subscriptions: list[Any] = []
        self._output_publishers: list[Any] = []
        self._diagnostics_pub: Any = None
        self._service: Any = None
        self._track_service: Any = None
        self._action_server: ActionServer | None = None
        self._stats_timer: Any = None
        self._wake: Any = None
        self._watch: InputWatch | None = None
        self._health_timer: Any = None
        self._self_test: Any = None
        self._last_snap: dict[str, Any] | None = None

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

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
        calls_qos = QoSProfile(depth=request_history_depth(int(self._param("max_pending"))),
                               reliability=ReliabilityPolicy.RELIABLE)
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
        self._watch = InputWatch(self, self._param, self._publish_diagnostics)
        self._diagnostics_pub = self._publisher(DiagnosticArray, "/diagnostics", reliable,
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
        self._service = self.create_service(Segment, "~/segment", self._calls.on_service,
                                            qos_profile=calls_qos, callback_group=call_group)
        self._track_service = self.create_service(Track, "~/track", self._tracks.on_track,
                                                  callback_group=request_group)
        self._action_server = ActionServer(
            self, SegmentAction, "~/segment", self._calls.on_goal,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=self._calls.on_cancel, callback_group=call_group,
            goal_service_qos_profile=calls_qos, result_service_qos_profile=calls_qos,
            cancel_service_qos_profile=calls_qos, result_timeout=ACTION_RESULT_TIMEOUT_S,
            # One feedback per decoded token: keep a whole burst, the stages after it included.
            feedback_pub_qos_profile=QoSProfile(depth=FEEDBACK_DEPTH,
                                                reliability=ReliabilityPolicy.RELIABLE))
        if self._param("stats_period") > 0:
            self._stats_timer = self.create_timer(self._param("stats_period"),
                                                  self._on_stats_timer)
        timeout = float(self._param("input_timeout"))
        self._health_timer = self.create_timer(min(1.0, timeout / 2) if timeout > 0 else 1.0,
                                               self._watch.tick, callback_group=request_group)
        self._self_test = self.create_service(SelfTest, "~/self_test", self._on_self_test,
                                              callback_group=request_group)
        self._pipeline.publishing = True
        self.get_logger().info(f"configured: {len(self._cameras)} camera(s), mode "
                               f"{self._param('mode')}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start the inference process(es), wait until the model is loaded in each (they warm
        up on their own afterwards), and start serving."""
        try:
            pool = self._start_pool()
        except Exception as exc:  # a missing model must not kill the node: it answers errors
            self._pipeline.unavailable_reason = (
                f"model {self._param('model')!r} could not be loaded: {exc}")
            self.get_logger().error(self._pipeline.unavailable_reason)
            return TransitionCallbackReturn.FAILURE
        names = list(self._cameras)
        self._worker = InferenceWorker(
            self._pipeline.handle, self._pipeline.reject, int(self._param("max_pending")),
            lanes=pool.processes, pins={name: i for i, name in enumerate(names)})
        for lane, proc in enumerate(pool.processes):  # died between loading and now
            if proc.state != "ready":
                self._worker.lane_down(lane, proc.last_failure, proc.state == "restarting")
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
        self._close_pool()
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
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(reason)
        self._tracks.stop()
        if free:
            self._close_pool()
        for camera in self._cameras.values():
            camera.answer_reuse.clear()
        gc.collect()

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            self.get_logger().info("inference processes ended")

    def _destroy_entities(self) -> None:
        self._pipeline.publishing = False
        self._pipeline.conversations.clear()
        for timer in (self._stats_timer, self._health_timer):
            if timer is not None:
                self.destroy_timer(timer)
        if self._self_test is not None:
            self.destroy_service(self._self_test)
        if self._action_server is not None:
            self._action_server.destroy()
        if self._service is not None:
            self.destroy_service(self._service)
        if self._track_service is not None:
            self.destroy_service(self._track_service)
        for sub in self._input_subscriptions:
            self.destroy_subscription(sub)
        for pub in [*self._output_publishers, self._diagnostics_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        if self._wake is not None:
            self.destroy_guard_condition(self._wake)
        for camera in self._cameras.values():
            camera.outputs = {}
        self._input_subscriptions, self._output_publishers = [], []
        self._diagnostics_pub = self._service = self._action_server = None
        self._track_service = None
        self._stats_timer = self._wake = self._calls.wake = None
        self._health_timer = self._self_test = self._watch = self._last_snap = None

    def _load_spec(self) -> tuple[LoadSpec, list[str], int]:
        """What the inference processes load (the [reload] parameters), on which devices, with
        how many threads each."""
        refine = self._param("refine")
        device = str(self._param("device"))
        spec = LoadSpec(
            model=str(self._param("model")), device=device, dtype=self._param("dtype"),
            min_pixels=self._param("min_pixels"), max_pixels=self._param("max_pixels"),
            max_new_tokens=self._param("max_new_tokens"),
            mask_upsample=self._param("mask_upsample"),
            refine=None if refine == "none" else refine,
            sam_checkpoint=self._param("sam_checkpoint") or None,
            system_prompt=self._param("system_prompt"), nice=int(self._param("inference_nice")))
        devices = [str(d).strip() or device for d in self._param("devices")] or [device]
        return spec, devices, int(self._param("inference_threads"))

    def _start_pool(self) -> InferencePool:
        """The running pool when deactivate kept one for the same model, else a new one."""
        spec, devices, threads = self._load_spec()
        pool = self._pool
        if pool is not None:
            same = (pool.spec, pool.devices, pool.threads) == (spec, devices, threads)
            if same and all(p.state == "ready" for p in pool.processes):
                self._apply_live_settings(pool)
                return pool
            self._close_pool()
        t0 = time.monotonic()
        pool = InferencePool(spec, devices, threads, listener=self._process_events)
        self._apply_live_settings(pool)
        pool.start()
        self._pool = pool
        self.get_logger().info(
            f"loaded {spec.model} in {time.monotonic() - t0:.1f} s in "
            f"{len(devices)} inference process(es): {pool.describe()}")
        return pool

    def _apply_live_settings(self, pool: InferencePool) -> None:
        for proc in pool.processes:
            for param, attribute in LIVE_PROCESS_SETTINGS.items():
                setattr(proc, attribute, self._param(param))

    # ------------------------------------------------------------------ inference processes
    # Called on the processes' reader threads.
    def _on_process_down(self, proc: InferenceProcess, reason: str, restarting: bool) -> None:
        """A process ended: stop feeding it (with no process left, what waits gets ``reason``);
        count a crash for /diagnostics."""
        pool = self._pool
        if proc.state == "closed" or pool is None or proc not in pool.processes:
            return  # ended on purpose, or activate is starting it (and reports a failure)
        if restarting:
            self._restarts += 1
        self._last_failure = reason
        self.get_logger().error(f"inference process {proc.label} ({proc.device}, pid "
                                f"{proc.pid}): {reason}")
        worker = self._worker
        if worker is not None:
            worker.lane_down(int(proc.label), reason, coming_back=restarting)

    def _on_process_up(self, proc: InferenceProcess) -> None:
        """A restarted process has loaded the model: it serves again."""
        if proc.restarts == 0:
            return  # the first load: activate reports it
        self.get_logger().info(f"inference process {proc.label} ({proc.device}, pid "
                               f"{proc.pid}) serves again after restart {proc.restarts}")
        worker = self._worker
        if worker is not None:
            worker.lane_up(int(proc.label))

    def _on_process_warm(self, proc: InferenceProcess, times_ms: dict[str, float],
                         error: str) -> None:
        """First-request latency (kernel selection, allocator growth, lazy init) is paid by
        the warm-up in the process right after loading; a failure only costs speed."""
        if error:
            self.get_logger().warning(f"model warm-up failed: {error}")
        else:
            self.get_logger().info(f"warm-up done in {sum(times_ms.values()) / 1000.0:.1f} s "
                                   f"(inference process {proc.label})")

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
        pool = self._pool
        for param in params:
            if param.name in LIVE_PROCESS_SETTINGS:
                for proc in pool.processes if pool is not None else []:
                    setattr(proc, LIVE_PROCESS_SETTINGS[param.name], param.value)
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
        self._tracks.reset(camera)
        self.get_logger().info(f"continuous mode, camera {camera.label}: tracking "
                               f"{msg.data[:200]!r}")

    def _submit(self, job: Job) -> None:
        worker = self._worker
        reason = self._pipeline.refusal(job, worker is not None)
        if reason:
            self._pipeline.reject(job, reason)
        else:  # a worker stopped since the check rejects the job itself
            worker.submit(job)

    # ------------------------------------------------------------------ diagnostics
    def _on_stats_timer(self) -> None:
        """Every stats_period: one ``stats:`` log line and one /diagnostics status."""
        # rclpy's MultiThreadedExecutor can run a timer callback twice for one period; a second
        # report covering a few milliseconds would only show zero rates.
        if time.monotonic() - self._stats.since < 0.5 * float(self._param("stats_period")):
            return
        snap = self._snapshot(reset=True)
        self.get_logger().info(stats_line(snap))
        self._last_snap = snap
        self._publish_diagnostics()

    def _snapshot(self, reset: bool) -> dict[str, Any]:
        snap = self._stats.snapshot(reset=reset)
        worker = self._worker
        snap["queue_depth"] = worker.depth if worker else 0
        snap["dropped_frames"] = worker.dropped_frames if worker else 0
        snap["rejected_requests"] = worker.rejected if worker else 0
        pool = self._pool
        snap["inference_processes"] = pool.describe() if pool is not None else "none"
        snap["inference_restarts"] = self._restarts
        snap["inference_last_failure"] = self._last_failure
        return snap

    def _statuses(self, snap: dict[str, Any]) -> list[DiagnosticStatus]:
        """The node's status first (as /diagnostics always has it), then inputs, outputs, 3D."""
        name = self.get_name()
        down = None if self._active else self._pipeline.unavailable_reason
        pool = self._pool
        if down is None and pool is not None and all(
                p.state != "ready" for p in pool.processes):
            down = f"no inference process serves: {self._last_failure}"
        arr = diagnostic_array(f"{name}: stamp inference", str(self._param("model")), snap,
                               self.get_clock().now().to_msg(), down)
        watch = self._watch
        if watch is None:
            return list(arr.status)
        return [*arr.status, *watch.statuses(name),
                status_3d(f"{name}: 3d", snap, self._stats.last_reasons_3d,
                          watch.depth_in_use())]

    def _publish_diagnostics(self) -> None:
        """/diagnostics now: every stats_period, and at once when an input's state changes
        (nothing while stats_period is 0)."""
        if self._diagnostics_pub is None or float(self._param("stats_period")) <= 0:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = self._statuses(self._last_snap or self._snapshot(reset=False))
        self._diagnostics_pub.publish(arr)

    def _on_self_test(self, request: SelfTest.Request,
                      response: SelfTest.Response) -> SelfTest.Response:
        """diagnostic_msgs/SelfTest: the same statuses as /diagnostics, on demand (what
        ``stamp-ros doctor`` reads: the inputs with their resolved topics and roles)."""
        statuses = self._statuses(self._snapshot(reset=False))
        response.id = self.get_fully_qualified_name()
        response.passed = bytes([all(s.level == DiagnosticStatus.OK for s in statuses)])
        response.status = statuses
        return response
