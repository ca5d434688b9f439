"""``stamp-ros doctor``'s rules that need no running node: the depth pairing rule it shares with
the node (stamp_ros.spatial.depth3d), latched inputs in its verdicts, and the QoS its probe
subscribes with for each topic's publishers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stamp_ros.cli.doctor import format_report, run
from stamp_ros.diagnosis.input_verdict import Peer
from stamp_ros.diagnosis.probe import Probe, ProbedInput, Sample
from stamp_ros.diagnosis.qos_compat import EndpointQos
from stamp_ros.spatial.depth3d import nearest_skew, nearest_stamp_skew, pair_depth, pair_stamp

INFO = "sensor_msgs/msg/CameraInfo"
IMAGE = "sensor_msgs/msg/Image"
LATCHED = EndpointQos("RELIABLE", "TRANSIENT_LOCAL")
VOLATILE = EndpointQos("RELIABLE", "VOLATILE")


def _msg(sec: int, nanosec: int = 0):
    stamp = SimpleNamespace(sec=sec, nanosec=nanosec)
    return SimpleNamespace(stamp=stamp, header=SimpleNamespace(stamp=stamp), name=(sec, nanosec))


# ------------------------------------------------------------------ the pairing rule
def test_pair_depth_keeps_the_nodes_rule():
    """Nearest stamp within depth_max_skew (the limit itself included), the last of equally
    near ones, none beyond it; pair_stamp is the same rule on plain stamps."""
    depth = [_msg(10, 0), _msg(10, 100_000_000), _msg(10, 200_000_000)]
    assert pair_depth(_msg(10, 120_000_000), depth, 0.05).name == (10, 100_000_000)
    assert pair_depth(_msg(10, 150_000_000), depth, 0.05).name == (10, 200_000_000)  # a tie
    assert pair_depth(_msg(10, 240_000_000), depth, 0.05).name == (10, 200_000_000)
    assert pair_depth(_msg(10, 260_000_000), depth, 0.05) is None
    assert pair_depth(_msg(10), [], 0.05) is None
    assert nearest_skew(_msg(10, 260_000_000), depth) == pytest.approx(0.06)
    assert nearest_skew(_msg(10), []) is None
    stamps = [10.0, 10.1, 10.2]
    assert [pair_stamp(t, stamps, 0.05) for t in (10.12, 10.15, 10.26)] == [1, 2, None]
    assert pair_stamp(10.0, [10.0, 10.0], 0.0) == 1
    assert pair_stamp(10.0, [10.25], 0.25) == 0 and pair_stamp(10.0, [10.25], 0.125) is None
    assert nearest_stamp_skew(10.26, stamps) == pytest.approx(0.06)


# ------------------------------------------------------------------ latched inputs
def _probe(*inputs: ProbedInput) -> Probe:
    return Probe(node="/stamp_node", domain="7", found=True, state="active", model="m",
                 params={"depth_max_skew": 0.05}, inputs=list(inputs), seconds=2.0)


def _latched(role: str, msg_type: str, latched: int, messages: int = 0) -> ProbedInput:
    sample = Sample(messages=messages, seconds=2.0, bytes_total=100 * messages,
                    durability="TRANSIENT_LOCAL", latched=latched, width=160, height=120,
                    intrinsics_ok=True if msg_type == INFO else None)
    return ProbedInput(role=role, camera="default", topic=f"/{role}", msg_type=msg_type,
                       required=True, node_qos=EndpointQos("BEST_EFFORT"),
                       publishers=[Peer("/static_camera", msg_type, LATCHED)], sample=sample)


def test_a_latched_camera_info_needs_no_rate():
    """camera_info published once and latched is complete: OK although nothing arrived in
    the window; the report says it was the latched message."""
    info = _latched("camera_info", INFO, latched=1)
    p = _probe(info)
    reports, _node, code = run(p)
    assert code == 0 and reports[0].verdict.status == "receiving", reports[0].verdict
    assert "0 messages in 2.0 s + 1 latched (TRANSIENT_LOCAL" in format_report(p, reports, _node)


def test_a_latched_image_that_stopped_is_still_a_stopped_stream():
    """Colour frames are a stream: one latched frame and nothing since is a stall, not fine."""
    reports, _node, code = run(_probe(_latched("image", IMAGE, latched=1)))
    assert code == 1 and reports[0].verdict.status == "stopped", reports[0].verdict


def test_nothing_latched_and_nothing_sent_is_still_no_data():
    reports, _node, code = run(_probe(_latched("camera_info", INFO, latched=0)))
    assert code == 1 and reports[0].verdict.status == "no data", reports[0].verdict


# ------------------------------------------------------------------ the probe's QoS per topic
@pytest.mark.parametrize(("offered", "durability", "reliability"), [
    ([LATCHED], "TRANSIENT_LOCAL", "RELIABLE"),
    ([LATCHED, LATCHED], "TRANSIENT_LOCAL", "RELIABLE"),
    ([LATCHED, VOLATILE], "VOLATILE", "BEST_EFFORT"),  # TRANSIENT_LOCAL would miss the other
    ([EndpointQos("BEST_EFFORT", "TRANSIENT_LOCAL")], "VOLATILE", "BEST_EFFORT"),
    ([VOLATILE], "VOLATILE", "BEST_EFFORT"),
    ([], "VOLATILE", "BEST_EFFORT"),
])
def test_probe_subscribes_with_the_durability_the_publishers_offer(offered, durability,
                                                                    reliability):
    pytest.importorskip("rclpy")
    from stamp_ros.ros.doctor_probe import subscription_qos

    qos = subscription_qos([Peer("", INFO, q) for q in offered])
    assert (qos.durability.name, qos.reliability.name) == (durability, reliability)


def test_a_latched_message_the_node_missed_is_named():
    """The doctor got the latched camera_info, the node (VOLATILE) never did: it was published
    before the node subscribed and will not come again. A warning, with the fix."""
    info = _latched("camera_info", INFO, latched=1)
    info.node_qos = EndpointQos("BEST_EFFORT", "VOLATILE")
    info.node_ever_received = False
    reports, _node, code = run(_probe(info))
    verdict = reports[0].verdict
    assert code == 1 and verdict.level == "warn", verdict
    assert verdict.message.startswith("the node has no message on /camera_info: it was "
                                      "published once, latched (TRANSIENT_LOCAL), before the "
                                      "node subscribed"), verdict
    info.node_ever_received = True  # the node got it: fine
    assert run(_probe(info))[2] == 0
    info.node_ever_received, info.sample.messages = False, 3  # still published: it will come
    assert "no message on" not in run(_probe(info))[0][0].verdict.message
