"""What ``stamp-ros doctor`` measured about a running node's inputs, and the verdict on each.

The data model (:class:`Probe`: the node, its parameters and one :class:`ProbedInput` per
input with the doctor's :class:`Sample` of it) is filled by :mod:`stamp_ros.ros.doctor_probe`
(rclpy) and judged here without ROS, with the node's own rules
(:func:`stamp_ros.diagnosis.input_verdict.diagnose`), so the doctor and the node's warnings
always agree; :mod:`stamp_ros.cli.doctor` prints the result. How the node would pair the
measured colour frames with the measured depth images (:class:`DepthPairing`) is worked out by
:mod:`stamp_ros.cli.doctor` with the node's own rule (:func:`stamp_ros.spatial.depth3d.pair_stamp`:
spatial is on this package's layer, so it is not imported here) and judged here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from stamp_ros.diagnosis.input_verdict import InputFacts, Peer, Verdict, diagnose
from stamp_ros.diagnosis.qos_compat import EndpointQos

__all__ = ["DepthPairing", "InputReport", "Probe", "ProbedInput", "Sample", "colour_sample",
           "extra_problems", "judge", "node_verdict"]


@dataclass
class Sample:
    """What the doctor received on one input while measuring."""

    messages: int = 0
    seconds: float = 0.0
    bytes_total: int = 0
    stamps: list[float] = field(default_factory=list)
    """Header stamps (seconds) of the messages received."""
    width: int = 0
    height: int = 0
    encoding: str = ""
    """Image encoding, CompressedImage format, or "" for other types."""
    depth_median_m: float | None = None
    depth_problem: str | None = None
    intrinsics_ok: bool | None = None
    """camera_info: K has positive focal lengths (None: not a camera_info input)."""
    durability: str = "VOLATILE"
    """The doctor's subscription: TRANSIENT_LOCAL where every publisher offers it (latched)."""
    latched: int = 0
    """Messages a TRANSIENT_LOCAL subscription received before the window opened: the
    publishers' stored (latched) messages; not part of ``messages`` or the rate."""

    @property
    def rate_hz(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def frame_bytes(self) -> int:
        return self.bytes_total // self.messages if self.messages else 0


@dataclass
class ProbedInput:
    """One of the node's inputs as the doctor found it."""

    role: str
    camera: str
    topic: str
    msg_type: str
    required: bool
    node_qos: EndpointQos | None
    publishers: list[Peer]
    similar: list[str] = field(default_factory=list)
    sample: Sample | None = None
    node_status: str = ""
    """The node's own status message for this input (from ~/self_test)."""
    node_publishers: int = 0
    """Publishers the node itself sees on the topic (from ~/self_test)."""
    node_ever_received: bool | None = None
    """Whether the node has received any message on it (~/self_test ``last_message_age_s`` is
    not "never"); None when the node does not say."""
    depth_pairing: DepthPairing | None = None
    """depth: how the node would pair the camera's measured colour frames with it."""


@dataclass
class DepthPairing:
    """The node's pairing rule applied to what the doctor measured on one camera: for each
    colour frame judged, the distance to its nearest depth stamp, and how many of them have no
    depth image within ``depth_max_skew`` (the node withholds their 3D)."""

    skews_s: list[float]
    """Per colour frame judged: seconds to the nearest depth stamp."""
    withheld: int
    """Colour frames the node pairs with no depth image (3D withheld)."""
    max_skew_s: float
    """The node's ``depth_max_skew``."""

    @property
    def frames(self) -> int:
        return len(self.skews_s)

    @property
    def withheld_share(self) -> float:
        return self.withheld / self.frames if self.frames else 0.0


@dataclass
class Probe:
    """Everything the doctor learnt about the node."""

    node: str
    domain: str
    found: bool = False
    state: str = ""
    model: str = ""
    params: dict = field(default_factory=dict)
    inputs: list[ProbedInput] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


@dataclass
class InputReport:
    input: ProbedInput
    verdict: Verdict


def _remap_name(item: ProbedInput) -> str:
    return f"{item.camera}/{item.role}" if item.camera not in ("", "default") else item.role


def colour_sample(item: ProbedInput, probe: Probe) -> Sample | None:
    """The measured colour stream of ``item``'s camera (what its depth is paired with)."""
    return next((i.sample for i in probe.inputs if i.camera == item.camera
                 and i.role in ("image", "image/compressed") and i.sample), None)


def _skew_problem(pairing: DepthPairing) -> str | None:
    if not pairing.withheld:
        return None
    ms = [s * 1000 for s in pairing.skews_s]
    return (f"3D withheld on {pairing.withheld_share:.0%} of the colour frames "
            f"({pairing.withheld} of {pairing.frames}): depth stamps up to {max(ms):.0f} ms "
            f"from the colour frames (median {statistics.median(ms):.0f} ms, depth_max_skew "
            f"{pairing.max_skew_s * 1000:.0f} ms); the node pairs each colour frame with its "
            "nearest depth image: publish depth aligned with and stamped like every colour "
            "frame (depth at the colour rate), or raise depth_max_skew")


def _missed_latched(item: ProbedInput) -> str | None:
    """The doctor got only a latched message the node never received: it was published before
    the node's VOLATILE subscription existed, and will not come again."""
    sample = item.sample
    if (sample is None or not sample.latched or sample.messages
            or item.node_ever_received is not False
            or (item.node_qos is not None and item.node_qos.durability != "VOLATILE")):
        return None
    return (f"the node has no message on {item.topic}: it was published once, latched "
            "(TRANSIENT_LOCAL), before the node subscribed, and the node subscribes VOLATILE "
            "(it receives only what is published after it subscribed): start the publisher "
            "after the node (or restart it), or have it publish periodically")


def extra_problems(item: ProbedInput, probe: Probe) -> list[str]:
    """Findings beyond "does data arrive": depth units, depth/colour skew (as the node pairs:
    ``item.depth_pairing``), a latched message the node missed, intrinsics."""
    sample = item.sample
    if sample is None or not (sample.messages or sample.latched):
        return []
    found = []
    if item.role == "depth":
        if sample.depth_problem:
            found.append(sample.depth_problem)
        skew = _skew_problem(item.depth_pairing) if item.depth_pairing else None
        if skew:
            found.append(skew)
    missed = _missed_latched(item)
    if missed:
        found.append(missed)
    if item.role == "camera_info" and sample.intrinsics_ok is False:
        found.append("camera_info has no intrinsics (K is zero): calibrate the camera or fix "
                     "the driver's camera_info_url")
    return found


def judge(item: ProbedInput, probe: Probe) -> Verdict:
    """The verdict on one input (the node's rules, with the doctor's measurement as the
    observation window)."""
    sample = item.sample
    measured = sample is not None
    # A latched camera_info (published once, TRANSIENT_LOCAL: static cameras, simulators) is
    # complete with its one message: no rate is expected of it.
    latched_info = measured and item.role == "camera_info" and sample.latched > 0
    facts = InputFacts(
        role=item.role, topic=item.topic, remap_name=_remap_name(item), msg_type=item.msg_type,
        node_qos=item.node_qos, publishers=tuple(item.publishers),
        received=sample.messages + sample.latched if measured else 0,
        silent_s=(probe.seconds if measured and not sample.messages and not latched_info
                  else None),
        required=item.required, similar=tuple(item.similar),
        input_timeout=probe.seconds if measured else 0.0,
        extra_problems=tuple(extra_problems(item, probe)))
    return diagnose(facts)


def node_verdict(probe: Probe) -> Verdict:
    if not probe.found:
        return Verdict("error", "not found", probe.error or (
            f"no node {probe.node} in ROS domain {probe.domain}: is it running, with the same "
            "ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE as this shell?"))
    if probe.error:
        return Verdict("error", "no answer", probe.error)
    if probe.state != "active":
        return Verdict("error", probe.state or "unknown",
                       f"lifecycle state {probe.state or 'unknown'}: the node serves only when "
                       f"active (ros2 lifecycle set {probe.node} activate; a failed configure "
                       "or model load is in its log)")
    return Verdict("ok", "active", f"active, model {probe.model}")
