"""What ``stamp-ros doctor`` measured about a running node's inputs, and the verdict on each.

The data model (:class:`Probe`: the node, its parameters and one :class:`ProbedInput` per
input with the doctor's :class:`Sample` of it) is filled by :mod:`stamp_ros.ros.doctor_probe`
(rclpy) and judged here without ROS, with the node's own rules
(:func:`stamp_ros.diagnosis.input_verdict.diagnose`), so the doctor and the node's warnings
always agree; :mod:`stamp_ros.cli.doctor` prints the result.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from stamp_ros.diagnosis.input_verdict import InputFacts, Peer, Verdict, diagnose
from stamp_ros.diagnosis.qos_compat import EndpointQos

__all__ = ["InputReport", "Probe", "ProbedInput", "Sample", "depth_skew_s", "extra_problems",
           "judge", "node_verdict"]


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


def depth_skew_s(depth: Sample, image: Sample) -> float | None:
    """Median distance (s) from each depth stamp to the nearest colour stamp measured."""
    if not depth.stamps or not image.stamps:
        return None
    return statistics.median(min(abs(d - i) for i in image.stamps) for d in depth.stamps)


def extra_problems(item: ProbedInput, probe: Probe) -> list[str]:
    """Findings beyond "does data arrive": depth units, depth/colour skew, intrinsics."""
    sample = item.sample
    if sample is None or not sample.messages:
        return []
    found = []
    if item.role == "depth":
        if sample.depth_problem:
            found.append(sample.depth_problem)
        image = next((i.sample for i in probe.inputs if i.camera == item.camera
                      and i.role in ("image", "image/compressed") and i.sample), None)
        skew = depth_skew_s(sample, image) if image else None
        limit = float(probe.params.get("depth_max_skew", 0.05))
        if skew is not None and skew > limit:
            found.append(f"depth stamps {skew * 1000:.0f} ms from the colour frames "
                         f"(depth_max_skew {limit * 1000:.0f} ms): 3D is withheld; publish "
                         "aligned depth stamped like the colour frame, or raise depth_max_skew")
    if item.role == "camera_info" and sample.intrinsics_ok is False:
        found.append("camera_info has no intrinsics (K is zero): calibrate the camera or fix "
                     "the driver's camera_info_url")
    return found


def judge(item: ProbedInput, probe: Probe) -> Verdict:
    """The verdict on one input (the node's rules, with the doctor's measurement as the
    observation window)."""
    sample = item.sample
    measured = sample is not None
    facts = InputFacts(
        role=item.role, topic=item.topic, remap_name=_remap_name(item), msg_type=item.msg_type,
        node_qos=item.node_qos, publishers=tuple(item.publishers),
        received=sample.messages if measured else 0,
        silent_s=(probe.seconds if measured and not sample.messages else None),
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
