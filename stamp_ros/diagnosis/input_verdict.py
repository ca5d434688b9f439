"""What is wrong with one of the node's inputs, and the one-line fix.

The node's silent-input warnings, its per-input /diagnostics status and every verdict line of
``stamp-ros doctor`` come from :func:`diagnose`, so they always agree. It takes plain facts
(who publishes, with which type and QoS, what arrived, similar topics that exist) and applies
the rules an integrator would, in order: no publisher (a name, namespace or remap problem), a
publisher of another type, publishers whose QoS cannot match, a matched publisher that sends
nothing (driver or transport), a stream that stopped. No rclpy: the callers gather the facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stamp_ros.diagnosis.qos_compat import EndpointQos, Mismatch, describe, mismatches

__all__ = ["MSG_TYPES", "InputFacts", "Peer", "Verdict", "diagnose", "qos_fix", "qos_problems"]

MSG_TYPES = {
    "image": "sensor_msgs/msg/Image",
    "image/compressed": "sensor_msgs/msg/CompressedImage",
    "depth": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "query": "std_msgs/msg/String",
}
"""The node's inputs by role (the topic name relative to the camera) and their types."""

STREAM_ROLES = ("image", "image/compressed", "depth", "camera_info")
"""Inputs that follow the camera: subscribed with ``image_reliability``, expected to stream."""

LARGE_FRAMES_HINT = ("large frames over UDP: load config/fastdds_large_images.xml in both "
                     "processes")

OK, WARN, ERROR = "ok", "warn", "error"


@dataclass(frozen=True)
class Peer:
    """One publisher (or subscriber) on the topic: its node, message type and QoS."""

    node: str
    msg_type: str
    qos: EndpointQos | None = None


@dataclass(frozen=True)
class InputFacts:
    """What is known about one input when it is judged."""

    role: str
    """``image``, ``image/compressed``, ``depth``, ``camera_info`` or ``query``."""
    topic: str
    """Fully resolved (namespace and remaps applied) name the node subscribes to."""
    remap_name: str
    """The name as the node declares it (``image``, ``front/image``): what a remap replaces."""
    msg_type: str
    node_qos: EndpointQos | None
    publishers: tuple[Peer, ...] = ()
    received: int = 0
    """Messages received while watched (since activation, or during a doctor measurement)."""
    silent_s: float | None = None
    """Seconds without a message (since the last one, or since watching began); None when
    the input is not being timed."""
    required: bool = True
    """False for depth/camera_info that are not configured: no publisher is then fine."""
    similar: tuple[str, ...] = ()
    """Published topics of the same type with a similar name
    (:mod:`stamp_ros.diagnosis.similar_topics`)."""
    input_timeout: float = 0.0
    extra_problems: tuple[str, ...] = field(default_factory=tuple)
    """Other findings that make the input wrong although data arrives (depth units, ...)."""


@dataclass(frozen=True)
class Verdict:
    level: str
    """``ok``, ``warn`` (works, but something is wrong) or ``error`` (nothing usable)."""
    status: str
    """A few words: ``receiving``, ``not used``, ``no publisher``, ``wrong type``,
    ``incompatible QoS``, ``no data``, ``stopped``, ``depth problem``, ``waiting``."""
    message: str
    """One line: what is wrong, the likely cause and the fix."""

    @property
    def ok(self) -> bool:
        return self.level == OK


def qos_fix(role: str, mismatch: Mismatch, our_side: str) -> str:
    """The fix for one mismatch on one of the node's topics (``our_side``: ``subscription``
    for inputs, ``publisher`` for outputs)."""
    if our_side == "subscription":
        if role in STREAM_ROLES and mismatch.policy == "reliability":
            return "set image_reliability:=best_effort"
        if role == "query" and mismatch.policy == "reliability":
            return "publish queries RELIABLE (each one is owed an answer)"
        return f"make the publisher offer {mismatch.policy} {mismatch.subscription_value}"
    if mismatch.policy == "durability":
        return "subscribe with durability VOLATILE (the node's outputs are not latched)"
    if mismatch.policy == "deadline":
        return "subscribe without a deadline (the node publishes when it has a result)"
    if mismatch.policy in ("liveliness", "lease_duration"):
        return "subscribe with liveliness AUTOMATIC and no lease duration"
    return f"subscribe with {mismatch.policy} {mismatch.publisher_value}"


def _peer_mismatches(facts: InputFacts) -> list[tuple[Peer, Mismatch]]:
    if facts.node_qos is None:
        return []
    return [(peer, mismatch) for peer in facts.publishers
            if peer.qos is not None and (not peer.msg_type or peer.msg_type == facts.msg_type)
            for mismatch in mismatches(peer.qos, facts.node_qos)]


def qos_problems(facts: InputFacts) -> list[str]:
    """One warning line per publisher and policy whose QoS cannot match the node's
    subscription."""
    return [describe(facts.topic, mismatch, our_side="subscription", peer=peer.node,
                     fix=qos_fix(facts.role, mismatch, "subscription"))
            for peer, mismatch in _peer_mismatches(facts)]


def _names(peers: tuple[Peer, ...] | list[Peer]) -> str:
    return ", ".join(sorted({p.node or "?" for p in peers}))


def _no_publisher(facts: InputFacts) -> Verdict:
    text = (f"no publisher on {facts.topic} (count_publishers 0): wrong topic name, "
            "namespace or remap?")
    if facts.similar:
        text += (f" similar topics that exist: {', '.join(facts.similar)}; if it is "
                 f"{facts.similar[0]}: remap {facts.remap_name}:={facts.similar[0]}")
    else:
        text += f" no published {facts.msg_type} topic exists: is the driver running?"
    return Verdict(ERROR, "no publisher", text)


def _wrong_type(facts: InputFacts, others: list[Peer]) -> Verdict:
    types = ", ".join(sorted({p.msg_type for p in others}))
    text = (f"{facts.topic} is published as {types} by {_names(others)}, the node subscribes "
            f"{facts.msg_type}")
    if facts.role == "image" and "sensor_msgs/msg/CompressedImage" in types:
        text += ": set use_compressed:=true"
    elif facts.similar:
        text += f": remap {facts.remap_name}:={facts.similar[0]}"
    else:
        text += f": remap {facts.remap_name} to a {facts.msg_type} topic"
    return Verdict(ERROR, "wrong type", text)


def diagnose(facts: InputFacts) -> Verdict:
    """The verdict on one input (see the module docstring for the order of the rules)."""
    same_type = [p for p in facts.publishers if not p.msg_type or p.msg_type == facts.msg_type]
    other_type = [p for p in facts.publishers if p.msg_type and p.msg_type != facts.msg_type]
    qos_lines = qos_problems(facts)
    incompatible = [peer for peer, _ in _peer_mismatches(facts)]
    compatible = [p for p in same_type if not any(p is q for q in incompatible)]
    timed_out = (facts.silent_s is not None and facts.input_timeout > 0
                 and facts.silent_s >= facts.input_timeout)
    silent_for = f"{facts.silent_s:.1f} s" if facts.silent_s is not None else "a while"

    if not facts.publishers:
        if facts.role == "query":
            return Verdict(OK, "not used", f"no publisher on {facts.topic} (requests may come "
                           "through the ~/segment service or action)")
        if not facts.required:
            return Verdict(OK, "not used", f"no publisher on {facts.topic} (optional input, "
                           "not configured)")
        return _no_publisher(facts)
    if not same_type:
        return _wrong_type(facts, other_type)
    if not compatible:
        return Verdict(ERROR, "incompatible QoS", qos_lines[0])
    if facts.received and not timed_out:
        if facts.extra_problems:
            return Verdict(WARN, "depth problem" if facts.role == "depth" else "suspicious",
                           "; ".join(facts.extra_problems))
        if qos_lines:
            return Verdict(WARN, "incompatible QoS", qos_lines[0] + " (other publishers are "
                           "received)")
        return Verdict(OK, "receiving", f"receiving from {_names(compatible)}")
    if facts.received == 0 and not timed_out:
        return Verdict(OK, "waiting", f"{len(same_type)} publisher(s) ({_names(same_type)}), "
                       "no message yet")
    count = f"{len(compatible)} publisher(s) ({_names(compatible)})"
    if facts.received == 0:
        return Verdict(ERROR, "no data",
                       f"nothing on {facts.topic} for {silent_for} although {count} match the "
                       "node's QoS: the publisher sends nothing (a driver that waits for a "
                       "trigger, or publishes lazily) or the transport drops the messages ("
                       f"{LARGE_FRAMES_HINT})")
    return Verdict(WARN, "stopped", f"nothing on {facts.topic} for {silent_for}; {count} still "
                   "there: the publisher stopped or stalled")
