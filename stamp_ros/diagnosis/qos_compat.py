"""Which QoS policies keep a publisher and a subscription apart, and the one line that says so.

DDS matches a publisher with a subscription only when what the publisher *offers* is at least
what the subscription *requests*, policy by policy (reliability, durability, deadline,
liveliness and its lease). When they do not match, nothing is delivered and nothing is said
unless someone listens for the incompatible-QoS event: the most common reason a perception node
"receives nothing" from a camera driver. The rules and the wording live here, free of rclpy, so
the node (at the event) and ``stamp-ros doctor`` (from the graph) say the same thing and the
rules are tested without DDS. :mod:`stamp_ros.diagnosis.qos_graph` converts rclpy's profiles to
:class:`EndpointQos`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EndpointQos", "Mismatch", "describe", "infer_peer_mismatch", "mismatches",
           "policy_from_event_kind"]

RELIABILITY_RANK = {"BEST_EFFORT": 0, "RELIABLE": 1}
DURABILITY_RANK = {"VOLATILE": 0, "TRANSIENT_LOCAL": 1}
LIVELINESS_RANK = {"AUTOMATIC": 0, "MANUAL_BY_TOPIC": 1}
"""Offered >= requested, in these orders (values outside them, such as SYSTEM_DEFAULT or
UNKNOWN, cannot be judged and are never reported as a mismatch)."""

POLICIES = ("reliability", "durability", "deadline", "liveliness", "lease_duration")


@dataclass(frozen=True)
class EndpointQos:
    """The policies that decide matching, as plain values: the names of rclpy's enums
    (``RELIABLE``, ``BEST_EFFORT``, ``VOLATILE``, ``TRANSIENT_LOCAL``, ``AUTOMATIC``,
    ``MANUAL_BY_TOPIC``, ...) and durations in nanoseconds, None meaning infinite."""

    reliability: str
    durability: str = "VOLATILE"
    deadline_ns: int | None = None
    liveliness: str = "AUTOMATIC"
    lease_ns: int | None = None
    depth: int = 0
    """History depth (0 when unknown); shown, never part of matching."""

    def short(self) -> str:
        """``RELIABLE, VOLATILE`` (+ deadline/liveliness/lease when not the defaults)."""
        parts = [self.reliability, self.durability]
        if self.deadline_ns is not None:
            parts.append(f"deadline {_duration(self.deadline_ns)}")
        if self.liveliness not in ("AUTOMATIC", "SYSTEM_DEFAULT"):
            parts.append(f"liveliness {self.liveliness}")
        if self.lease_ns is not None:
            parts.append(f"lease {_duration(self.lease_ns)}")
        if self.depth:
            parts.append(f"depth {self.depth}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Mismatch:
    """One policy on which the publisher offers less than the subscription requests."""

    policy: str
    publisher_value: str
    subscription_value: str


def _duration(ns: int | None) -> str:
    if ns is None:
        return "infinite"
    return f"{ns / 1e9:g} s"


def _ranked(policy: str, ranks: dict[str, int], offered: str, requested: str) -> list[Mismatch]:
    if offered in ranks and requested in ranks and ranks[offered] < ranks[requested]:
        return [Mismatch(policy, offered, requested)]
    return []


def _longer(offered: int | None, requested: int | None) -> bool:
    """A publisher's period (deadline, lease) is too long when it exceeds the requested one;
    infinite (None) exceeds every finite period."""
    if requested is None:
        return False
    return offered is None or offered > requested


def mismatches(publisher: EndpointQos, subscription: EndpointQos) -> list[Mismatch]:
    """Every policy that keeps ``publisher`` and ``subscription`` from matching (empty: they
    match, or a value is one that cannot be judged, such as SYSTEM_DEFAULT)."""
    found = _ranked("reliability", RELIABILITY_RANK, publisher.reliability,
                    subscription.reliability)
    found += _ranked("durability", DURABILITY_RANK, publisher.durability, subscription.durability)
    if _longer(publisher.deadline_ns, subscription.deadline_ns):
        found.append(Mismatch("deadline", _duration(publisher.deadline_ns),
                              _duration(subscription.deadline_ns)))
    found += _ranked("liveliness", LIVELINESS_RANK, publisher.liveliness,
                     subscription.liveliness)
    if _longer(publisher.lease_ns, subscription.lease_ns):
        found.append(Mismatch("lease_duration", _duration(publisher.lease_ns),
                              _duration(subscription.lease_ns)))
    return found


def policy_from_event_kind(kind: object) -> str:
    """The policy named by an incompatible-QoS event's ``last_policy_kind`` (rclpy's
    ``QoSPolicyKind`` or rmw's ``RMW_QOS_POLICY_RELIABILITY``), in this module's words."""
    name = getattr(kind, "name", str(kind)).upper()
    for policy in ("LIVELINESS_LEASE_DURATION", "RELIABILITY", "DURABILITY", "DEADLINE",
                   "LIVELINESS", "HISTORY", "LIFESPAN", "DEPTH"):
        if name.endswith(policy) or f"_{policy}" in name:
            return "lease_duration" if policy == "LIVELINESS_LEASE_DURATION" else policy.lower()
    return name.lower()


def infer_peer_mismatch(policy: str, ours: EndpointQos, our_side: str) -> Mismatch | None:
    """The mismatch an event reported when the peer's profile is not (yet) in the graph.

    For reliability and durability there is only one incompatible combination, so our own
    value determines the peer's: a RELIABLE subscription misses only BEST_EFFORT publishers, a
    VOLATILE publisher misses only TRANSIENT_LOCAL subscriptions. Other policies: None."""
    pairs = {"reliability": ("BEST_EFFORT", "RELIABLE"),
             "durability": ("VOLATILE", "TRANSIENT_LOCAL")}
    if policy not in pairs:
        return None
    low, high = pairs[policy]
    mine = getattr(ours, policy)
    if our_side == "subscription" and mine == high:
        return Mismatch(policy, low, high)
    if our_side == "publisher" and mine == low:
        return Mismatch(policy, low, high)
    return None


def describe(topic: str, mismatch: Mismatch, *, our_side: str, peer: str, fix: str) -> str:
    """One warning line: the topic, the policy, both sides' values and the fix, e.g.
    ``incompatible QoS on /cam/image_raw (reliability): /camera publishes BEST_EFFORT, the node
    subscribes RELIABLE: set image_reliability:=best_effort``."""
    if our_side == "subscription":
        sides = (f"{peer or 'a publisher'} publishes {mismatch.publisher_value}, the node "
                 f"subscribes {mismatch.subscription_value}")
    else:
        sides = (f"the node publishes {mismatch.publisher_value}, {peer or 'a subscriber'} "
                 f"subscribes {mismatch.subscription_value}")
    return f"incompatible QoS on {topic} ({mismatch.policy}): {sides}: {fix}"
