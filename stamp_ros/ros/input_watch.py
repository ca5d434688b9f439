"""The node's own health checks on its topics: QoS mismatches, silent inputs, depth units.

An integrator's most common "the node publishes nothing" is not a model bug but an input that
never arrives: a camera whose QoS cannot match, a topic name that missed its namespace or remap,
a matched publisher that sends nothing. :class:`InputWatch` notices each of these itself and
says the fix in one line (the rules are :mod:`stamp_ros.diagnosis.input_verdict`):

* every subscription and publisher the node creates gets rclpy's incompatible-QoS event
  callback; the warning names the topic, the policy, both sides' values (the peer's from the
  graph) and the fix, and the topic's /diagnostics status stays WARN until the peer is gone;
* after activation, a camera input (image; depth and camera_info when configured) that delivers
  nothing for ``input_timeout`` seconds is reported once per interval with its resolved name,
  its publisher count and the likely cause (similar topic names that do exist, or QoS/transport);
* each depth image is checked against its encoding and ``depth_scale``
  (:mod:`stamp_ros.diagnosis.depth_units`).

Costs on the hot path: a clock read and a deque append per message, a ~4k-pixel median per
depth image; everything else runs on a timer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from stamp_ros.diagnosis.depth_units import check_depth
from stamp_ros.diagnosis.input_monitor import InputMonitor
from stamp_ros.diagnosis.input_verdict import MSG_TYPES, InputFacts, Verdict, diagnose, qos_fix
from stamp_ros.diagnosis.qos_compat import (
    EndpointQos,
    describe,
    infer_peer_mismatch,
    mismatches,
    policy_from_event_kind,
)
from stamp_ros.diagnosis.qos_graph import endpoint_qos, gid, node_fqn, peer, published_topics
from stamp_ros.diagnosis.similar_topics import similar_topics

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

DEPTH_WARN_PERIOD_S = 30.0
"""A depth unit problem that persists is logged again at most this often."""
PENDING = ("pending",)
"""Key of a QoS problem whose peer was not in the graph yet when the event came."""
PENDING_S = 5.0
"""How long after an event the graph may still lag (no peer, or its node not named yet)."""


def counted(monitor: InputMonitor, callback: Callable[[Any], None]) -> Callable[[Any], None]:
    """``callback`` that first records the arrival on ``monitor``."""
    def on_message(msg: Any) -> None:
        monitor.arrived()
        callback(msg)
    return on_message


class Endpoint:
    """One topic the node owns: its role, side, QoS, and the incompatible peers it has now."""

    def __init__(self, role: str, side: str, qos: EndpointQos, camera: str,
                 monitor: InputMonitor | None) -> None:
        self.role = role
        self.side = side
        """``subscription`` (an input) or ``publisher`` (an output)."""
        self.qos = qos
        self.camera = camera
        self.monitor = monitor
        self.topic = ""
        self.remapped = False
        self.problems: dict[tuple, str] = {}
        """Incompatible peer (endpoint gid) -> the warning about it."""
        self.pending_policy = ""
        self.pending_since = 0.0
        self.warned_keys: set[tuple] = set()
        self.verdict: Verdict | None = None
        self.depth_problem: str | None = None
        self.depth_warned = 0.0
        self.warned = 0.0


class InputWatch:
    """Health of one node's topics; created in configure, dropped in cleanup."""

    def __init__(self, node: Any, param: Callable[[str], Any],
                 on_change: Callable[[], None]) -> None:
        self._node = node
        self._param = param
        self._on_change = on_change
        self._log = node.get_logger()
        self._fqn = node_fqn(node.get_namespace(), node.get_name())
        self.endpoints: list[Endpoint] = []
        self.active = False
        self._lock = threading.RLock()
        """QoS events run in the topic's callback group, the tick in another: in a
        multi-threaded executor they may overlap."""

    # ------------------------------------------------------------------ registration
    def input(self, role: str, camera: str, remap_name: str, qos: Any) -> Endpoint:
        """An input endpoint (with its monitor); pass :meth:`callbacks` to the subscription
        and :meth:`bind` its resolved name."""
        monitor = InputMonitor(role, camera, remap_name, MSG_TYPES.get(role, ""))
        endpoint = Endpoint(role, "subscription", endpoint_qos(qos), camera, monitor)
        self.endpoints.append(endpoint)
        return endpoint

    def output(self, role: str, camera: str, qos: Any) -> Endpoint:
        endpoint = Endpoint(role, "publisher", endpoint_qos(qos), camera, None)
        self.endpoints.append(endpoint)
        return endpoint

    def callbacks(self, endpoint: Endpoint) -> Any:
        """The event callbacks for the endpoint's subscription or publisher."""
        def on_event(event: Any) -> None:
            self._on_incompatible(endpoint, event)
        if endpoint.side == "subscription":
            return SubscriptionEventCallbacks(incompatible_qos=on_event)
        return PublisherEventCallbacks(incompatible_qos=on_event)

    def bind(self, endpoint: Endpoint, topic: str, remap_name: str = "") -> None:
        """Record the resolved (remapped) topic name once the entity exists."""
        endpoint.topic = topic
        if endpoint.monitor is not None:
            endpoint.monitor.topic = topic
        if remap_name:
            endpoint.remapped = topic != self._node.resolve_topic_name(remap_name,
                                                                       only_expand=True)

    def inputs(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.side == "subscription"]

    # ------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        """Start timing silence: an input that stays silent ``input_timeout`` from now on is
        reported."""
        now = time.monotonic()
        for endpoint in self.inputs():
            endpoint.monitor.watch(now)
            endpoint.warned = 0.0
        self.active = True

    def deactivate(self) -> None:
        for endpoint in self.inputs():
            endpoint.monitor.unwatch()
        self.active = False

    # ------------------------------------------------------------------ QoS events
    def _graph_peers(self, endpoint: Endpoint) -> list[Any]:
        node = self._node
        infos = (node.get_publishers_info_by_topic(endpoint.topic)
                 if endpoint.side == "subscription"
                 else node.get_subscriptions_info_by_topic(endpoint.topic))
        return [i for i in infos if node_fqn(i.node_namespace, i.node_name) != self._fqn]

    def _describe(self, endpoint: Endpoint, mismatch: Any, peer_name: str) -> str:
        return describe(endpoint.topic, mismatch, our_side=endpoint.side, peer=peer_name,
                        fix=qos_fix(endpoint.role, mismatch, endpoint.side))

    def _culprits(self, endpoint: Endpoint, policy: str) -> dict[tuple, tuple[str, bool]]:
        """Per incompatible peer (gid): the warning and whether the peer's node is known.
        Peers the graph shows incompatible; when it cannot tell (a peer in the same process),
        every peer present is suspected and the mismatch inferred from the node's own value."""
        infos = self._graph_peers(endpoint)
        found: dict[tuple, tuple[str, bool]] = {}
        for info in infos:
            other = peer(info)
            pub, sub = ((other.qos, endpoint.qos) if endpoint.side == "subscription"
                        else (endpoint.qos, other.qos))
            for mismatch in mismatches(pub, sub):
                found.setdefault(gid(info), (self._describe(endpoint, mismatch, other.node),
                                             bool(other.node)))
        if found or not policy:
            return found
        mismatch = infer_peer_mismatch(policy, endpoint.qos, endpoint.side)
        for info in infos:
            other = peer(info)
            found[gid(info)] = (
                self._describe(endpoint, mismatch, other.node) if mismatch else
                f"incompatible QoS on {endpoint.topic} ({policy}) with {other.node or 'a peer'}",
                bool(other.node))
        return found

    def _on_incompatible(self, endpoint: Endpoint, event: Any) -> None:
        """rclpy's incompatible-QoS event: one warning per incompatible peer (once the graph
        names it), a WARN status until it is gone."""
        policy = policy_from_event_kind(event.last_policy_kind)
        with self._lock:
            endpoint.pending_policy, endpoint.pending_since = policy, time.monotonic()
            if not self._culprits(endpoint, policy):  # not in this process's graph yet
                mismatch = infer_peer_mismatch(policy, endpoint.qos, endpoint.side)
                endpoint.problems.setdefault(PENDING, self._describe(endpoint, mismatch, "")
                                             if mismatch else
                                             f"incompatible QoS on {endpoint.topic} ({policy})")
            self._refresh_qos(endpoint)
        self._on_change()

    def _refresh_qos(self, endpoint: Endpoint) -> bool:
        """Name the incompatible peers (warning once each, when the graph knows their node, or
        after PENDING_S without), drop those that left the graph; True when one cleared. Runs
        on every tick for a topic that has had an event, not before (graph look-ups)."""
        if not endpoint.problems and not endpoint.pending_policy:
            return False
        waited = time.monotonic() - endpoint.pending_since >= PENDING_S
        # Suspect every peer only right after an event (the graph may lag or, for a peer in
        # this process, misreport its QoS); later the graph alone decides.
        found = self._culprits(endpoint, "" if waited else endpoint.pending_policy)
        if found and PENDING in endpoint.problems:
            del endpoint.problems[PENDING]
        for key, (text, named) in found.items():
            endpoint.problems[key] = text
            if key not in endpoint.warned_keys and (named or waited):
                endpoint.warned_keys.add(key)
                self._log.warning(text)
        if PENDING in endpoint.problems and waited:
            text = endpoint.problems.pop(PENDING)
            if not endpoint.warned_keys:
                self._log.warning(text)
        gone = [key for key in endpoint.problems if key != PENDING and key not in found]
        for key in gone:
            text = endpoint.problems.pop(key)
            endpoint.warned_keys.discard(key)
            self._log.info(f"cleared: {text.split(': ', 1)[0]}: the incompatible peer is gone")
        return bool(gone)

    # ------------------------------------------------------------------ depth units
    def check_depth(self, endpoint: Endpoint, msg: Any) -> None:
        """Check one depth image against its encoding and ``depth_scale`` (a sparse median);
        warn when it looks wrong (again at most every DEPTH_WARN_PERIOD_S)."""
        from stamp_ros.msgs.convert import image_msg_to_array

        try:
            raw = image_msg_to_array(msg)
            problem = check_depth(msg.encoding, raw if raw.ndim == 2 else raw[..., 0],
                                  float(self._param("depth_scale"))).problem
        except ValueError as exc:
            problem = f"depth image unreadable: {exc}"
        now = time.monotonic()
        changed = problem != endpoint.depth_problem
        endpoint.depth_problem = problem
        if problem and (changed or now - endpoint.depth_warned >= DEPTH_WARN_PERIOD_S):
            endpoint.depth_warned = now
            self._log.warning(f"depth on {endpoint.topic}: {problem}")
        if changed:
            self._on_change()

    # ------------------------------------------------------------------ silence
    def _required(self, endpoint: Endpoint, publishers: int) -> bool:
        """The image always; depth and camera_info when configured (remapped, published, or
        received before; camera_info also when the camera's depth is); queries never stream."""
        if endpoint.role in ("image", "image/compressed"):
            return True
        if endpoint.role == "query":
            return False
        if endpoint.remapped or publishers or endpoint.monitor.last is not None:
            return True
        if endpoint.role == "camera_info":
            depth = next((e for e in self.inputs()
                          if e.camera == endpoint.camera and e.role == "depth"), None)
            return depth is not None and self._required(depth, self._node.count_publishers(
                depth.topic))
        return False

    def facts(self, endpoint: Endpoint, now: float, with_similar: bool = False) -> InputFacts:
        """What the graph and the monitor say about one input now."""
        monitor = endpoint.monitor
        infos = self._graph_peers(endpoint)
        publishers = self._node.count_publishers(endpoint.topic)
        similar: tuple[str, ...] = ()
        if with_similar:
            others = {e.topic for e in self.inputs()}
            similar = tuple(similar_topics(endpoint.topic, monitor.msg_type,
                                           published_topics(self._node, self._fqn), others))
        extra = (endpoint.depth_problem,) if endpoint.depth_problem else ()
        return InputFacts(
            role=endpoint.role, topic=endpoint.topic, remap_name=monitor.remap_name,
            msg_type=monitor.msg_type, node_qos=endpoint.qos,
            publishers=tuple(peer(info) for info in infos), received=monitor.total,
            silent_s=None if endpoint.role == "query" else monitor.silent_s(now),
            required=self._required(endpoint, publishers), similar=similar,
            input_timeout=float(self._param("input_timeout")), extra_problems=extra)

    def verdict(self, endpoint: Endpoint, now: float) -> Verdict:
        verdict = diagnose(self.facts(endpoint, now))
        if verdict.status in ("no publisher", "wrong type"):
            verdict = diagnose(self.facts(endpoint, now, with_similar=True))
        return verdict

    def tick(self) -> None:
        """Timer: clear QoS problems whose peer left; judge every input; warn about a silent
        one once per ``input_timeout``; report changes on /diagnostics at once."""
        now = time.monotonic()
        timeout = float(self._param("input_timeout"))
        changed = False
        for endpoint in self.endpoints:
            with self._lock:
                changed |= self._refresh_qos(endpoint)
            if endpoint.side != "subscription":
                continue
            before = endpoint.verdict
            endpoint.verdict = self.verdict(endpoint, now)
            changed |= before is None or (before.level, before.status) != (
                endpoint.verdict.level, endpoint.verdict.status)
            silent = endpoint.monitor.silent_s(now)
            if (self.active and timeout > 0 and not endpoint.verdict.ok
                    and silent is not None and silent >= timeout
                    and now - endpoint.warned >= timeout):
                endpoint.warned = now
                self._log.warning(f"input {endpoint.role} of camera {endpoint.camera}: "
                                  f"{endpoint.verdict.message}")
        if changed:
            self._on_change()

    # ------------------------------------------------------------------ reports
    def _level(self, endpoint: Endpoint) -> tuple[int, str]:
        with self._lock:
            problems = list(endpoint.problems.values())
        if problems:
            return DiagnosticStatus.WARN, problems[0]
        verdict = endpoint.verdict
        if endpoint.depth_problem:
            return DiagnosticStatus.WARN, f"depth units: {endpoint.depth_problem}"
        if verdict is not None and not verdict.ok:
            return DiagnosticStatus.WARN, verdict.message
        return DiagnosticStatus.OK, verdict.message if verdict else "not checked yet"

    def statuses(self, prefix: str) -> list[DiagnosticStatus]:
        """One status per input (rate, last-message age, publisher count, status) and one
        for all outputs (WARN while a subscriber's QoS cannot match)."""
        now = time.monotonic()
        out = []
        for endpoint in self.inputs():
            monitor = endpoint.monitor
            if endpoint.verdict is None:
                endpoint.verdict = self.verdict(endpoint, now)
            level, message = self._level(endpoint)
            age = monitor.age_s(now)
            status = DiagnosticStatus(level=level, name=f"{prefix}: input {endpoint.topic}",
                                      message=message[:400], hardware_id=endpoint.camera)
            values = {
                "role": endpoint.role, "camera": endpoint.camera, "topic": endpoint.topic,
                "type": monitor.msg_type, "rate_hz": f"{monitor.rate_hz(now):.1f}",
                "last_message_age_s": "never" if age is None else f"{age:.2f}",
                "publishers": str(self._node.count_publishers(endpoint.topic)),
                "status": "incompatible QoS" if endpoint.problems else endpoint.verdict.status,
                "received": str(monitor.total), "qos": endpoint.qos.short(),
                "required": str(endpoint.verdict.status != "not used").lower(),
            }
            status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
            out.append(status)
        outputs = [e for e in self.endpoints if e.side == "publisher"]
        with self._lock:
            problems = [text for e in outputs for text in e.problems.values()]
            per_output = [(e.topic, next(iter(e.problems.values()), "ok")) for e in outputs]
        status = DiagnosticStatus(name=f"{prefix}: outputs", hardware_id="outputs")
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = problems[0][:400] if problems else f"{len(outputs)} topics, QoS ok"
        status.values = [KeyValue(key=topic, value=text) for topic, text in per_output]
        out.append(status)
        return out

    def depth_in_use(self) -> bool:
        """Some camera's depth input is configured (so missing 3D is worth a WARN)."""
        return any(e.role == "depth" and (e.monitor.last is not None or (
            e.verdict is not None and e.verdict.status != "not used")) for e in self.inputs())
