"""The rclpy half of ``stamp-ros doctor``: find the node, ask it, measure its inputs.

A short-lived probe node in the same domain: it waits for the target to be discovered, reads
its lifecycle state (``~/get_state``), its parameters (``~/get_parameters``) and its inputs
(``~/self_test``: role, camera, resolved topic of each), takes both sides' QoS from the graph,
then subscribes to every streaming input (raw, so frames are counted without being
deserialised) for ``seconds`` and records rates, sizes, stamps, encodings and the depth units.
The result is a plain :class:`stamp_ros.diagnosis.probe.Probe`.

Each input is subscribed with the durability its publishers offer (:func:`subscription_qos`):
best effort + volatile matches any publisher, but never receives what a latched publisher
(TRANSIENT_LOCAL: a static camera's or a simulator's camera_info, published once) sent before
the subscription existed; where every publisher is RELIABLE + TRANSIENT_LOCAL the probe asks for
the same and gets the stored messages (a TRANSIENT_LOCAL reader matches no VOLATILE writer, and
Fast DDS hands the stored messages only to reliable readers).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.srv import SelfTest
from lifecycle_msgs.srv import GetState
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from stamp_ros.diagnosis.depth_units import check_depth
from stamp_ros.diagnosis.input_verdict import MSG_TYPES, STREAM_ROLES, Peer
from stamp_ros.diagnosis.probe import Probe, ProbedInput, Sample
from stamp_ros.diagnosis.qos_graph import endpoint_qos, node_fqn, peer, published_topics
from stamp_ros.diagnosis.similar_topics import similar_topics
from stamp_ros.msgs.convert import image_msg_to_array
from stamp_ros.ros.camera import SerializedImage

PARAMS = ("model", "depth_scale", "depth_max_skew", "image_reliability", "use_compressed")
DECODED = 5
"""Messages per input that are deserialised (sizes, encodings, depth units); the rest are only
counted."""
CALL_TIMEOUT_S = 10.0
TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
         "sensor_msgs/msg/CameraInfo": CameraInfo}


class _Recorder:
    """Counts one topic's raw messages and decodes the first few."""

    def __init__(self, msg_type: type, depth_scale: float, is_depth: bool,
                 durability: str = "VOLATILE") -> None:
        self.sample = Sample(durability=durability)
        self._type = msg_type
        self._scale = depth_scale
        self._depth = is_depth
        self._decoded = 0
        self._medians: list[float] = []

    def restart(self) -> None:
        """Start the measurement window (what was decoded so far is kept; on a TRANSIENT_LOCAL
        subscription, what arrived so far is the publishers' stored messages: counted as
        latched)."""
        if self.sample.durability == "TRANSIENT_LOCAL":
            self.sample.latched = self.sample.messages
        self.sample.messages = self.sample.bytes_total = 0
        self.sample.stamps = []

    def __call__(self, raw: bytes) -> None:
        sample = self.sample
        sample.messages += 1
        sample.bytes_total += len(raw)
        stamp = SerializedImage(raw, self._type).stamp_ns()
        if stamp is not None:
            sample.stamps.append(stamp / 1e9)
        if self._decoded < DECODED:
            self._decoded += 1
            self._decode(deserialize_message(raw, self._type))

    def _decode(self, msg: Any) -> None:
        sample = self.sample
        if isinstance(msg, CompressedImage):
            sample.encoding = msg.format
            return
        sample.width, sample.height = int(msg.width), int(msg.height)
        if isinstance(msg, CameraInfo):
            k = list(msg.k)
            sample.intrinsics_ok = len(k) == 9 and k[0] > 0 and k[4] > 0
            return
        sample.encoding = msg.encoding
        if self._depth:
            try:
                raw = image_msg_to_array(msg)
                check = check_depth(msg.encoding, raw if raw.ndim == 2 else raw[..., 0],
                                    self._scale)
            except ValueError as exc:
                sample.depth_problem = f"depth image unreadable: {exc}"
                return
            if check.median_m is not None:
                self._medians.append(check.median_m)
                sample.depth_median_m = sorted(self._medians)[len(self._medians) // 2]
            sample.depth_problem = sample.depth_problem or check.problem


def _call(node: Any, srv_type: type, name: str, request: Any, timeout: float) -> Any:
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{name} is not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"{name} did not answer within {timeout:.0f} s")
        return future.result()
    finally:
        node.destroy_client(client)


def _wait_for_node(node: Any, fqn: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        names = {node_fqn(ns, name) for name, ns in node.get_node_names_and_namespaces()}
        if fqn in names:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)  # polling discovery, not synchronising with a callback


def _parameters(node: Any, fqn: str) -> dict[str, Any]:
    reply = _call(node, GetParameters, f"{fqn}/get_parameters",
                  GetParameters.Request(names=list(PARAMS)), CALL_TIMEOUT_S)
    return {name: parameter_value_to_python(value)
            for name, value in zip(PARAMS, reply.values, strict=False)}


def _inputs(node: Any, fqn: str) -> list[ProbedInput]:
    """The node's inputs from its ~/self_test statuses (role, camera, resolved topic)."""
    reply = _call(node, SelfTest, f"{fqn}/self_test", SelfTest.Request(), CALL_TIMEOUT_S)
    found = []
    for status in reply.status:
        values = {kv.key: kv.value for kv in status.values}
        if "role" not in values or "topic" not in values:
            continue
        age = values.get("last_message_age_s")
        found.append(ProbedInput(
            role=values["role"], camera=values.get("camera", ""), topic=values["topic"],
            msg_type=values.get("type") or MSG_TYPES.get(values["role"], ""),
            required=values.get("required", "true") == "true", node_qos=None, publishers=[],
            node_status=status.message, node_publishers=int(values.get("publishers", "0")),
            node_ever_received=None if age is None else age != "never"))
    return found


def _wait_for_publishers(node: Any, inputs: list[ProbedInput], wait: float) -> None:
    """Until this process's graph has discovered the publishers the node reports (bounded)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(
            node.count_publishers(item.topic) < item.node_publishers for item in inputs):
        time.sleep(0.1)  # polling discovery


def _graph(node: Any, fqn: str, inputs: list[ProbedInput]) -> None:
    """Both sides' QoS from the graph: the target's own subscription and every publisher
    (read after the measurement, when discovery has named every participant's nodes)."""
    own = node_fqn(node.get_namespace(), node.get_name())
    for item in inputs:
        mine = [i for i in node.get_subscriptions_info_by_topic(item.topic)
                if node_fqn(i.node_namespace, i.node_name) == fqn]
        item.node_qos = endpoint_qos(mine[0].qos_profile) if mine else None
        item.publishers = [peer(i) for i in node.get_publishers_info_by_topic(item.topic)
                           if node_fqn(i.node_namespace, i.node_name) != own]


def subscription_qos(publishers: list[Peer]) -> QoSProfile:
    """The probe's QoS for a topic with these publishers: RELIABLE + TRANSIENT_LOCAL where every
    one offers both (latched: the stored messages are delivered), else best effort + volatile
    (matches any publisher; a TRANSIENT_LOCAL reader would match no VOLATILE writer, and the
    writer would log an incompatible-QoS warning about the doctor)."""
    offered = [p.qos for p in publishers if p.qos is not None]
    if offered and all(q.durability == "TRANSIENT_LOCAL" and q.reliability == "RELIABLE"
                       for q in offered):
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def _publishers_of(node: Any, item: ProbedInput) -> list[Peer]:
    """The topic's publishers of the input's type (of unknown type too) as the graph has them
    now (their nodes may not be named yet: only their QoS is read)."""
    return [p for p in map(peer, node.get_publishers_info_by_topic(item.topic))
            if not p.msg_type or p.msg_type == item.msg_type]


def _measure(node: Any, inputs: list[ProbedInput], seconds: float, depth_scale: float) -> float:
    """Subscribe to every streaming input that has a publisher, for ``seconds``."""
    subs, recorders = [], []
    for item in inputs:
        msg_type = TYPES.get(item.msg_type)
        if item.role not in STREAM_ROLES or msg_type is None:
            continue
        qos = subscription_qos(_publishers_of(node, item))
        durability = "TRANSIENT_LOCAL" if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL \
            else "VOLATILE"
        recorder = _Recorder(msg_type, depth_scale, item.role == "depth", durability)
        subs.append(node.create_subscription(msg_type, item.topic, recorder, qos, raw=True))
        recorders.append((item, recorder))
    # The window opens once every input the node hears from has reached the doctor too (or
    # after a bounded wait): discovery of a new subscription takes a moment, and a window
    # that includes it would understate the rates.
    expected = [r for item, r in recorders if item.node_publishers]
    deadline = time.monotonic() + max(2.0, seconds)
    while time.monotonic() < deadline and not all(r.sample.messages for r in expected):
        time.sleep(0.05)  # polling the counters the executor thread fills
    for _, recorder in recorders:
        recorder.restart()
    t0 = time.monotonic()
    time.sleep(seconds)  # the measurement window itself: messages arrive on the executor
    span = time.monotonic() - t0
    for sub in subs:
        node.destroy_subscription(sub)
    for item, recorder in recorders:
        recorder.sample.seconds = span
        item.sample = recorder.sample
    return span


def probe_node(fqn: str, *, seconds: float, wait: float) -> Probe:
    """Everything ``stamp-ros doctor`` judges, gathered from the live node ``fqn``."""
    probe = Probe(node=fqn, domain=os.environ.get("ROS_DOMAIN_ID", "0"))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"stamp_doctor_{os.getpid()}", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, context), daemon=True)
    spinner.start()
    try:
        probe.found = _wait_for_node(node, fqn, wait)
        if not probe.found:
            return probe
        try:
            state = _call(node, GetState, f"{fqn}/get_state", GetState.Request(), CALL_TIMEOUT_S)
            probe.state = state.current_state.label
            probe.params = _parameters(node, fqn)
            probe.model = str(probe.params.get("model", ""))
            if probe.state in ("unconfigured", "finalized"):
                return probe  # no topics to look at
            probe.inputs = _inputs(node, fqn)
            _wait_for_publishers(node, probe.inputs, wait)
        except TimeoutError as exc:
            probe.error = f"{exc}: is {fqn} a stamp_ros node, and is its executor running?"
            return probe
        probe.seconds = _measure(node, probe.inputs, seconds,
                                 float(probe.params.get("depth_scale") or 0.001))
        _graph(node, fqn, probe.inputs)
        published = published_topics(node, fqn)
        taken = {item.topic for item in probe.inputs}
        for item in probe.inputs:
            if not item.publishers:
                item.similar = similar_topics(item.topic, item.msg_type, published, taken)
        return probe
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)


def _spin(executor: Any, context: Any) -> None:
    try:
        while context.ok():
            executor.spin_once(timeout_sec=0.05)
    except Exception:  # the context shut down under us
        pass
