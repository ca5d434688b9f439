"""rclpy's view of the ROS graph as the plain facts the ROS-free rules take.

``QoSProfile`` -> :class:`stamp_ros.diagnosis.qos_compat.EndpointQos`, ``TopicEndpointInfo``
-> :class:`stamp_ros.diagnosis.input_verdict.Peer`, and the topics that have a publisher. Used
by the node (ros/input_watch.py) and by ``stamp-ros doctor`` (ros/doctor_probe.py). Duck-typed:
it reads what rclpy returns and imports nothing of ROS.
"""

from __future__ import annotations

from typing import Any

from stamp_ros.diagnosis.input_verdict import Peer
from stamp_ros.diagnosis.qos_compat import EndpointQos
from stamp_ros.diagnosis.similar_topics import hidden

_LONGEST_FINITE_NS = 2**62
"""Durations at or above this are rmw's "infinite" / "best available" markers."""


def _ns(duration: Any) -> int | None:
    ns = int(getattr(duration, "nanoseconds", 0) or 0)
    return None if ns <= 0 or ns >= _LONGEST_FINITE_NS else ns


def _name(policy: Any) -> str:
    return getattr(policy, "name", str(policy)).upper()


def endpoint_qos(profile: Any) -> EndpointQos:
    """The matching-relevant policies of an rclpy QoSProfile (0 / infinite durations: None)."""
    return EndpointQos(
        reliability=_name(profile.reliability), durability=_name(profile.durability),
        deadline_ns=_ns(profile.deadline), liveliness=_name(profile.liveliness),
        lease_ns=_ns(profile.liveliness_lease_duration), depth=int(profile.depth or 0))


def node_fqn(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


UNKNOWN_NODE = "_NODE_NAME_UNKNOWN_"
"""rmw's node name for an endpoint discovered before its participant's node list."""


def peer(info: Any) -> Peer:
    """A TopicEndpointInfo as a Peer (node, type, QoS); node "" while rmw does not know it."""
    known = info.node_name != UNKNOWN_NODE
    return Peer(node=node_fqn(info.node_namespace, info.node_name) if known else "",
                msg_type=info.topic_type, qos=endpoint_qos(info.qos_profile))


def gid(info: Any) -> tuple[int, ...]:
    """The endpoint's global id: stays the same while it exists."""
    return tuple(info.endpoint_gid)


def published_topics(node: Any, exclude_node: str = "") -> list[tuple[str, list[str]]]:
    """(name, types) of every visible topic that has a publisher other than ``exclude_node``
    (the node's own outputs are not candidates for its inputs)."""
    found = []
    for name, types in node.get_topic_names_and_types():
        if hidden(name):
            continue
        publishers = [info for info in node.get_publishers_info_by_topic(name)
                      if node_fqn(info.node_namespace, info.node_name) != exclude_node]
        if publishers:
            found.append((name, list(types)))
    return found
