"""``stamp-ros doctor``: what is wrong with a running node's inputs, from the outside.

Run it next to a live node (same ROS domain and discovery settings): it asks the node for its
inputs (``~/self_test``, the same statuses as /diagnostics), its lifecycle state and model,
looks at each input's publishers and both sides' QoS, measures rates, frame sizes, encodings
and the colour/depth stamp skew for a few seconds, and prints one verdict line per input with
the fix. The colour/depth skew is judged as the node pairs: each measured colour frame with its
nearest measured depth image (:func:`stamp_ros.spatial.depth3d.pair_stamp`, the rule the node's
3D lifting applies). Exit code 0 when the node is active and every input is fine, 1 otherwise
(usable as a bring-up check), 2 for bad usage.

This module is the command (report, JSON, exit code). What a probe measured and how each input
is judged is :mod:`stamp_ros.diagnosis.probe` (no rclpy; the verdicts come from
:mod:`stamp_ros.diagnosis.input_verdict`, the same rules as the node's own warnings); the
measurement is :mod:`stamp_ros.ros.doctor_probe`, imported when the command runs, so
``stamp-ros`` works without ROS for its other commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from stamp_ros.diagnosis.input_verdict import Verdict
from stamp_ros.diagnosis.probe import (
    DepthPairing,
    InputReport,
    Probe,
    ProbedInput,
    Sample,
    colour_sample,
    judge,
    node_verdict,
)
from stamp_ros.spatial.depth3d import nearest_stamp_skew, pair_stamp

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def _qos_line(item: ProbedInput) -> list[str]:
    lines = [f"    node subscribes {item.node_qos.short() if item.node_qos else '?'}"]
    if not item.publishers:
        lines.append("    publishers   none")
    for peer in item.publishers:
        qos = peer.qos.short() if peer.qos else "?"
        kind = "" if peer.msg_type == item.msg_type else f" [{peer.msg_type}]"
        lines.append(f"    publisher    {peer.node}{kind}: {qos}")
    return lines


def depth_pairing(item: ProbedInput, probe: Probe) -> DepthPairing | None:
    """How the node would pair the camera's measured colour frames with ``item``'s measured
    depth images: the node's own rule (depth3d.pair_stamp) on every colour frame the window
    brackets with depth stamps (one outside may have its nearest depth just outside the window:
    judging it against the window's edge would overstate its skew), or on every colour frame
    when the depth stamps bracket none. None when either stream has no stamps."""
    colour = colour_sample(item, probe)
    depth = item.sample.stamps if item.sample else []
    if colour is None or not colour.stamps or not depth:
        return None
    limit = float(probe.params.get("depth_max_skew", 0.05))
    first, last = min(depth), max(depth)
    frames = [t for t in colour.stamps if first <= t <= last] or list(colour.stamps)
    return DepthPairing(skews_s=[nearest_stamp_skew(t, depth) for t in frames],
                        withheld=sum(pair_stamp(t, depth, limit) is None for t in frames),
                        max_skew_s=limit)


def pair_depth_inputs(probe: Probe) -> None:
    """Fill ``depth_pairing`` of every measured depth input (what :func:`judge` reads)."""
    for item in probe.inputs:
        if item.role == "depth":
            item.depth_pairing = depth_pairing(item, probe)


def _sample_line(sample: Sample | None) -> str:
    if sample is None:
        return "    measured     not measured"
    text = f"    measured     {sample.messages} messages in {sample.seconds:.1f} s"
    if sample.latched:
        text += f" + {sample.latched} latched ({sample.durability}: kept by the publisher)"
    if sample.messages or sample.latched:
        if sample.messages:
            text += f" = {sample.rate_hz:.1f} Hz, {sample.frame_bytes / 1e6:.2f} MB each"
        if sample.width:
            text += f", {sample.width}x{sample.height}"
        if sample.encoding:
            text += f" {sample.encoding}"
        if sample.depth_median_m is not None:
            text += f", median depth {sample.depth_median_m:.2f} m"
    return text


def _pairing_line(pairing: DepthPairing) -> str:
    ms = sorted(s * 1000 for s in pairing.skews_s)
    return (f"    paired       {pairing.frames} colour frames with their nearest depth: "
            f"median {ms[len(ms) // 2]:.0f} ms, up to {ms[-1]:.0f} ms; {pairing.withheld} "
            f"beyond depth_max_skew {pairing.max_skew_s * 1000:.0f} ms (no 3D)")


def format_report(probe: Probe, reports: list[InputReport], node: Verdict) -> str:
    lines = [f"stamp-ros doctor: {probe.node} in ROS domain {probe.domain}"
             + (f", measured {probe.seconds:.1f} s" if probe.seconds else "")]
    lines.append(f"verdict node {probe.node}: {node.level.upper()} {node.message}")
    for report in reports:
        item = report.input
        lines.append(f"{item.role} ({item.camera}) {item.topic} [{item.msg_type}]")
        lines += _qos_line(item)
        lines.append(_sample_line(item.sample))
        if item.depth_pairing is not None:
            lines.append(_pairing_line(item.depth_pairing))
        if item.node_status:
            lines.append(f"    node says    {item.node_status}")
        verdict = report.verdict
        lines.append(f"verdict {item.role} {item.topic}: {verdict.level.upper()} "
                     f"{verdict.message}")
    problems = int(not node.ok) + sum(not r.verdict.ok for r in reports)
    lines.append("healthy" if not problems else f"{problems} problem(s)")
    return "\n".join(lines)


def run(probe: Probe) -> tuple[list[InputReport], Verdict, int]:
    """Verdicts and the exit code for a probe."""
    node = node_verdict(probe)
    pair_depth_inputs(probe)
    reports = [InputReport(item, judge(item, probe)) for item in probe.inputs]
    healthy = node.ok and all(r.verdict.ok for r in reports)
    return reports, node, EXIT_HEALTHY if healthy else EXIT_PROBLEMS


def to_json(probe: Probe, reports: list[InputReport], node: Verdict, code: int) -> str:
    return json.dumps({
        "node": probe.node, "domain": probe.domain, "state": probe.state, "model": probe.model,
        "verdict": asdict(node), "exit_code": code,
        "inputs": [{"role": r.input.role, "camera": r.input.camera, "topic": r.input.topic,
                    "type": r.input.msg_type, "verdict": asdict(r.verdict),
                    "publishers": [asdict(p) for p in r.input.publishers],
                    "node_qos": asdict(r.input.node_qos) if r.input.node_qos else None,
                    "rate_hz": r.input.sample.rate_hz if r.input.sample else None,
                    "frame_bytes": r.input.sample.frame_bytes if r.input.sample else None,
                    "encoding": r.input.sample.encoding if r.input.sample else None,
                    "latched": r.input.sample.latched if r.input.sample else None,
                    "depth_pairing": ({"frames": r.input.depth_pairing.frames,
                                       "withheld": r.input.depth_pairing.withheld,
                                       "largest_skew_s": max(r.input.depth_pairing.skews_s),
                                       "depth_max_skew": r.input.depth_pairing.max_skew_s}
                                      if r.input.depth_pairing else None)}
                   for r in reports]}, indent=2)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="diagnose a running stamp_ros node's inputs (needs ROS)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--node", default="/stamp_node", help="the node's name (default /stamp_node)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="how long to measure the input topics (default 3)")
    p.add_argument("--wait", type=float, default=10.0,
                   help="how long to wait for the node to be discovered (default 10 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--dds-profile", choices=("auto", "shipped", "default"), default="auto",
                   help="Fast DDS transports of the doctor itself: the shipped large-image "
                   "profile (auto: when the environment names none), or Fast DDS's defaults")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.wait < 0:
        print("stamp-ros doctor: --seconds must be > 0 and --wait >= 0", file=sys.stderr)
        return EXIT_USAGE
    from stamp_ros.cli.dds_profile import PROFILE_VARIABLES, large_image_env

    if args.dds_profile == "shipped" or (
            args.dds_profile == "auto" and not any(os.environ.get(v) for v in PROFILE_VARIABLES)):
        os.environ.update(large_image_env())  # read by Fast DDS when the probe starts
    try:
        from stamp_ros.ros.doctor_probe import probe_node
    except ImportError as exc:
        print(f"stamp-ros doctor: needs ROS 2 (rclpy and the stamp_ros interfaces): {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    name = args.node if args.node.startswith("/") else f"/{args.node}"
    probe = probe_node(name, seconds=args.seconds, wait=args.wait)
    reports, node, code = run(probe)
    print(to_json(probe, reports, node, code) if args.json
          else format_report(probe, reports, node))
    return code


__all__ = ["InputReport", "Probe", "ProbedInput", "Sample", "cmd_doctor", "depth_pairing",
           "format_report", "judge", "pair_depth_inputs", "register", "run"]
