"""The input-diagnosis rules without ROS (issue 20): QoS compatibility and its wording, similar
topic names, the verdict rules the node's warnings and ``stamp-ros doctor`` share, arrival
monitoring, and the doctor's verdicts and exit codes on probes built by hand; the ``ros`` tests
run the doctor against a real node (inputs the rules alone cannot show: latched topics)."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from stamp_ros.cli.doctor import format_report, run
from stamp_ros.diagnosis.input_monitor import MAX_ARRIVALS, RATE_WINDOW_S, InputMonitor
from stamp_ros.diagnosis.input_verdict import InputFacts, Peer, diagnose, qos_fix, qos_problems
from stamp_ros.diagnosis.probe import Probe, ProbedInput, Sample, judge
from stamp_ros.diagnosis.qos_compat import (
    EndpointQos,
    Mismatch,
    describe,
    infer_peer_mismatch,
    mismatches,
    policy_from_event_kind,
)
from stamp_ros.diagnosis.similar_topics import name_similarity, similar_topics

RELIABLE = EndpointQos("RELIABLE")
BEST_EFFORT = EndpointQos("BEST_EFFORT")
IMAGE = "sensor_msgs/msg/Image"


# ------------------------------------------------------------------ QoS compatibility
@pytest.mark.parametrize(("pub", "sub", "policies"), [
    (BEST_EFFORT, RELIABLE, ["reliability"]),
    (RELIABLE, BEST_EFFORT, []),
    (RELIABLE, RELIABLE, []),
    (EndpointQos("RELIABLE", "VOLATILE"), EndpointQos("RELIABLE", "TRANSIENT_LOCAL"),
     ["durability"]),
    (EndpointQos("RELIABLE", "TRANSIENT_LOCAL"), EndpointQos("RELIABLE", "VOLATILE"), []),
    (EndpointQos("RELIABLE", deadline_ns=None), EndpointQos("RELIABLE", deadline_ns=10**8),
     ["deadline"]),
    (EndpointQos("RELIABLE", deadline_ns=5 * 10**7), EndpointQos("RELIABLE", deadline_ns=10**8),
     []),
    (EndpointQos("RELIABLE", deadline_ns=2 * 10**8), EndpointQos("RELIABLE",
                                                                  deadline_ns=10**8),
     ["deadline"]),
    (EndpointQos("RELIABLE", liveliness="AUTOMATIC"),
     EndpointQos("RELIABLE", liveliness="MANUAL_BY_TOPIC"), ["liveliness"]),
    (EndpointQos("RELIABLE", lease_ns=None), EndpointQos("RELIABLE", lease_ns=10**9),
     ["lease_duration"]),
    (EndpointQos("BEST_EFFORT", "VOLATILE"), EndpointQos("RELIABLE", "TRANSIENT_LOCAL"),
     ["reliability", "durability"]),
    # Values that cannot be judged are never called a mismatch.
    (EndpointQos("SYSTEM_DEFAULT"), RELIABLE, []),
    (EndpointQos("UNKNOWN", "UNKNOWN"), EndpointQos("RELIABLE", "TRANSIENT_LOCAL"), []),
])
def test_mismatches_follow_offered_vs_requested(pub, sub, policies):
    assert [m.policy for m in mismatches(pub, sub)] == policies


def test_mismatch_values_and_the_warning_line_name_both_sides():
    (m,) = mismatches(BEST_EFFORT, RELIABLE)
    assert (m.publisher_value, m.subscription_value) == ("BEST_EFFORT", "RELIABLE")
    line = describe("/cam/image_raw", m, our_side="subscription", peer="/camera",
                    fix=qos_fix("image", m, "subscription"))
    assert line == ("incompatible QoS on /cam/image_raw (reliability): /camera publishes "
                    "BEST_EFFORT, the node subscribes RELIABLE: set image_reliability:=best_effort")
    out = describe("/stamp_node/result", Mismatch("durability", "VOLATILE", "TRANSIENT_LOCAL"),
                   our_side="publisher", peer="/rviz", fix="subscribe VOLATILE")
    assert out.startswith("incompatible QoS on /stamp_node/result (durability): the node "
                          "publishes VOLATILE, /rviz subscribes TRANSIENT_LOCAL")
    (d,) = mismatches(EndpointQos("RELIABLE"), EndpointQos("RELIABLE", deadline_ns=10**8))
    assert (d.publisher_value, d.subscription_value) == ("infinite", "0.1 s")


def test_fixes_name_the_parameter_or_the_peer_setting():
    rel = Mismatch("reliability", "BEST_EFFORT", "RELIABLE")
    for role in ("image", "image/compressed", "depth", "camera_info"):
        assert qos_fix(role, rel, "subscription") == "set image_reliability:=best_effort"
    assert "publish queries RELIABLE" in qos_fix("query", rel, "subscription")
    dur = Mismatch("durability", "VOLATILE", "TRANSIENT_LOCAL")
    assert "durability VOLATILE" in qos_fix("result", dur, "publisher")
    assert "without a deadline" in qos_fix("result", Mismatch("deadline", "infinite", "1 s"),
                                           "publisher")


def test_event_policy_kinds_are_read_from_rmw_and_rclpy_names():
    class RmwKind(enum.Enum):
        RMW_QOS_POLICY_RELIABILITY = 1
        RMW_QOS_POLICY_LIVELINESS_LEASE_DURATION = 2

    class RclpyKind(enum.IntEnum):
        DURABILITY = 2
        DEADLINE = 4

    assert policy_from_event_kind(RmwKind.RMW_QOS_POLICY_RELIABILITY) == "reliability"
    assert policy_from_event_kind(RmwKind.RMW_QOS_POLICY_LIVELINESS_LEASE_DURATION) == \
        "lease_duration"
    assert policy_from_event_kind(RclpyKind.DURABILITY) == "durability"
    assert policy_from_event_kind(RclpyKind.DEADLINE) == "deadline"


def test_peer_value_is_inferred_only_where_it_is_unique():
    assert infer_peer_mismatch("reliability", RELIABLE, "subscription") == Mismatch(
        "reliability", "BEST_EFFORT", "RELIABLE")
    assert infer_peer_mismatch("durability", EndpointQos("RELIABLE", "VOLATILE"),
                               "publisher") == Mismatch("durability", "VOLATILE",
                                                        "TRANSIENT_LOCAL")
    assert infer_peer_mismatch("reliability", BEST_EFFORT, "subscription") is None
    assert infer_peer_mismatch("deadline", RELIABLE, "subscription") is None


# ------------------------------------------------------------------ similar topics
def test_similar_topics_rank_by_name_and_prefer_the_type():
    published = [("/camera/image_raw", [IMAGE]), ("/camera/depth/image_raw", [IMAGE]),
                 ("/robot/image", [IMAGE]), ("/image_info", ["std_msgs/msg/String"]),
                 ("/rosout", ["rcl_interfaces/msg/Log"]), ("/_hidden/image", [IMAGE])]
    found = similar_topics("/image", IMAGE, published)
    assert found[0] == "/robot/image"  # same name in another namespace
    assert "/camera/image_raw" in found and "/image_info" not in found
    assert "/_hidden/image" not in found and "/rosout" not in found
    assert similar_topics("/image", IMAGE, published, exclude=["/robot/image"])[0] != \
        "/robot/image"


def test_similar_topics_fall_back_to_any_topic_of_the_type():
    published = [("/cam0/rgb", [IMAGE]), ("/chatter", ["std_msgs/msg/String"])]
    assert similar_topics("/image", IMAGE, published) == ["/cam0/rgb"]
    assert similar_topics("/image", IMAGE, [("/chatter", ["std_msgs/msg/String"])]) == []
    assert name_similarity("/a/image", "/b/image") == 1.0
    assert name_similarity("/image", "/totally/else") < 0.4


# ------------------------------------------------------------------ verdicts
def facts(**overrides) -> InputFacts:
    base = dict(role="image", topic="/image", remap_name="image", msg_type=IMAGE,
                node_qos=RELIABLE, input_timeout=5.0)
    base.update(overrides)
    return InputFacts(**base)


def test_no_publisher_names_similar_topics_and_the_remap():
    v = diagnose(facts(silent_s=6.0, similar=("/camera/image_raw",)))
    assert (v.level, v.status) == ("error", "no publisher")
    assert "no publisher on /image (count_publishers 0)" in v.message
    assert "wrong topic name, namespace or remap" in v.message
    assert "/camera/image_raw" in v.message and "remap image:=/camera/image_raw" in v.message
    assert "is the driver running" in diagnose(facts(silent_s=6.0)).message


def test_optional_inputs_without_publisher_are_fine():
    for role in ("depth", "camera_info"):
        v = diagnose(facts(role=role, topic=f"/{role}", required=False, silent_s=60.0))
        assert v.ok and v.status == "not used"
    v = diagnose(facts(role="query", topic="/query", msg_type="std_msgs/msg/String"))
    assert v.ok and "~/segment" in v.message


def test_incompatible_publishers_are_an_error_even_when_data_is_seen():
    peers = (Peer("/camera", IMAGE, BEST_EFFORT),)
    v = diagnose(facts(publishers=peers, silent_s=6.0))
    assert (v.level, v.status) == ("error", "incompatible QoS")
    assert "set image_reliability:=best_effort" in v.message
    # the doctor sees the frames (it subscribes best effort): still the node cannot
    assert diagnose(facts(publishers=peers, received=30)).status == "incompatible QoS"
    both = (*peers, Peer("/camera2", IMAGE, RELIABLE))
    v = diagnose(facts(publishers=both, received=30, silent_s=0.1))
    assert (v.level, v.status) == ("warn", "incompatible QoS") and "/camera " in v.message
    assert len(qos_problems(facts(publishers=both))) == 1


def test_wrong_type_suggests_compressed():
    peers = (Peer("/camera", "sensor_msgs/msg/CompressedImage", RELIABLE),)
    v = diagnose(facts(publishers=peers, silent_s=6.0))
    assert v.status == "wrong type" and "use_compressed:=true" in v.message


def test_matched_publisher_without_data_and_a_stream_that_stopped():
    peers = (Peer("/camera", IMAGE, RELIABLE),)
    assert diagnose(facts(publishers=peers, silent_s=1.0)).status == "waiting"
    v = diagnose(facts(publishers=peers, silent_s=6.0))
    assert v.status == "no data" and "fastdds_large_images.xml" in v.message
    assert "1 publisher(s) (/camera)" in v.message
    v = diagnose(facts(publishers=peers, received=100, silent_s=6.0))
    assert (v.level, v.status) == ("warn", "stopped")
    v = diagnose(facts(publishers=peers, received=100, silent_s=0.05))
    assert v.ok and v.status == "receiving"


# ------------------------------------------------------------------ monitor
def test_monitor_rate_age_and_silence():
    m = InputMonitor("image", "default", "image", IMAGE)
    assert m.silent_s(100.0) is None and m.age_s(100.0) is None
    m.watch(100.0)
    assert m.silent_s(103.0) == pytest.approx(3.0)
    for i in range(50):  # 10 Hz for 5 s
        m.arrived(103.0 + i * 0.1)
    now = 103.0 + 4.9
    assert m.rate_hz(now) == pytest.approx(50 / RATE_WINDOW_S)
    assert m.age_s(now + 1) == pytest.approx(1.0)
    assert m.silent_s(now + 7) == pytest.approx(7.0)
    assert m.rate_hz(now + 60) == 0.0
    fast = InputMonitor("image", "default", "image", IMAGE)
    for i in range(MAX_ARRIVALS + 100):  # 1 kHz: more than the deque holds
        fast.arrived(10.0 + i * 0.001)
    assert fast.rate_hz(10.0 + (MAX_ARRIVALS + 100) * 0.001) == pytest.approx(1000, rel=0.01)


def test_monitor_rate_counts_from_the_first_arrival_in_the_first_window():
    """An input that starts arriving in the middle of the first window (the monitor was
    created, or watching began, before): its rate is over the time it has been observed, from
    its first arrival until now, not over the whole window."""
    m = InputMonitor("image", "default", "image", IMAGE)
    m.watch(100.0)
    assert m.rate_hz(102.0) == 0.0, "nothing arrived"
    for i in range(5):  # 8 Hz from 102.0 (exact in binary)
        m.arrived(102.0 + i * 0.125)
    assert m.rate_hz(102.5) == pytest.approx(8.0)
    for i in range(5, 17):
        m.arrived(102.0 + i * 0.125)
    assert m.rate_hz(104.0) == pytest.approx(8.0)
    assert m.rate_hz(104.0625) == pytest.approx(16 / 2.0625), "until now, not the last arrival"
    for i in range(17, 57):  # past one window: the window's count over the window
        m.arrived(102.0 + i * 0.125)
    assert m.rate_hz(109.0625) == pytest.approx(40 / RATE_WINDOW_S)
    one = InputMonitor("image", "default", "image", IMAGE)
    one.arrived(50.0)
    assert one.rate_hz(50.0) == 0.0, "one message: no interval yet"
    assert one.rate_hz(52.0) == 0.0


def test_monitor_rate_after_watching_began_counts_from_then():
    """A stream already arriving when watching began (activation): the rate counts what
    arrived since then, over the time since then (``received`` restarts there too)."""
    m = InputMonitor("image", "default", "image", IMAGE)
    for i in range(40):  # 8 Hz from 95.0, before activation, then a pause
        m.arrived(95.0 + i * 0.125)
    m.watch(101.0)
    for i in range(1, 9):  # 4 Hz after it
        m.arrived(101.0 + i * 0.25)
    assert m.total == 8
    assert m.rate_hz(103.0) == pytest.approx(4.0)


# ------------------------------------------------------------------ doctor rules
def probe(*inputs: ProbedInput, state: str = "active", **kw) -> Probe:
    return Probe(node="/stamp_node", domain="7", found=True, state=state, model="m",
                 params={"depth_max_skew": 0.05, "depth_scale": 0.001}, inputs=list(inputs),
                 seconds=3.0, **kw)


def item(role: str, topic: str, msg_type: str = IMAGE, publishers=(), sample=None,
         required=True) -> ProbedInput:
    return ProbedInput(role=role, camera="default", topic=topic, msg_type=msg_type,
                       required=required, node_qos=BEST_EFFORT, publishers=list(publishers),
                       sample=sample)


def stream(stamps: list[float], **kw) -> Sample:
    return Sample(messages=len(stamps), seconds=3.0, bytes_total=1000 * len(stamps),
                  stamps=stamps, **kw)


def test_doctor_healthy_setup_exits_zero():
    cam = Peer("/camera", IMAGE, RELIABLE)
    p = probe(item("image", "/image", publishers=[cam], sample=stream([1.0, 1.1, 1.2],
                                                                        width=640, height=480,
                                                                        encoding="rgb8")),
              item("depth", "/depth", required=False, sample=Sample(seconds=3.0)))
    reports, node, code = run(p)
    assert code == 0 and node.ok and all(r.verdict.ok for r in reports)
    text = format_report(p, reports, node)
    assert "verdict image /image: OK receiving from /camera" in text
    assert "1.0 Hz" in text and "640x480 rgb8" in text and text.endswith("healthy")


def test_doctor_problems_exit_non_zero_with_the_fix():
    p = probe(item("image", "/image", sample=Sample(seconds=3.0)))
    p.inputs[0].similar = ["/camera/image_raw"]
    reports, _node, code = run(p)
    assert code == 1 and "remap image:=/camera/image_raw" in reports[0].verdict.message
    _, node, code = run(probe(state="inactive"))
    assert code == 1 and "activate" in node.message
    _, node, code = run(Probe(node="/stamp_node", domain="7"))
    assert code == 1 and node.status == "not found" and "ROS_DOMAIN_ID" in node.message


def test_doctor_checks_depth_skew_units_and_intrinsics():
    cam = Peer("/camera", IMAGE, RELIABLE)
    info = Peer("/camera", "sensor_msgs/msg/CameraInfo", RELIABLE)
    image = item("image", "/image", publishers=[cam], sample=stream([1.0, 2.0, 3.0]))
    depth = item("depth", "/depth", publishers=[cam],
                 sample=stream([1.2, 2.2, 3.2], depth_problem="looks like millimetres"))
    cinfo = item("camera_info", "/camera_info", "sensor_msgs/msg/CameraInfo", [info],
                 stream([1.0], intrinsics_ok=False))
    p = probe(image, depth, cinfo)
    reports, _node, code = run(p)  # pairs the depth as the node does, then judges
    v = reports[1].verdict
    assert v.level == "warn" and "looks like millimetres" in v.message
    assert ("3D withheld on 100% of the colour frames (2 of 2): depth stamps up to 200 ms from "
            "the colour frames (median 200 ms, depth_max_skew 50 ms)") in v.message
    assert v == judge(depth, p)
    assert "K is zero" in judge(cinfo, p).message
    assert code == 1


def test_stamp_ros_works_without_rclpy_and_doctor_says_it_needs_ros():
    """The doctor is registered without importing rclpy (the other subcommands work on a
    machine without ROS); run there, it exits 2 with a one-line reason."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['rclpy'] = None\n"
            "from stamp_ros.cli.main import build_parser, main\n"
            "build_parser().parse_args(['segment', '--image', 'x', '--query', 'q'])\n"
            "assert 'rclpy' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "sys.exit(main(['doctor', '--seconds', '1']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "stamp-ros doctor: needs ROS 2" in proc.stderr


def _stamped(t: float):
    """A message (or header) of the duck type depth3d reads: header.stamp.sec/nanosec."""
    from types import SimpleNamespace

    sec, nanosec = divmod(round(t * 1e9), 10**9)
    stamp = SimpleNamespace(sec=sec, nanosec=nanosec)
    return SimpleNamespace(stamp=stamp, header=SimpleNamespace(stamp=stamp))


def _rgbd_probe(colour_hz: float, depth_hz: float, seconds: float = 3.0) -> Probe:
    """Colour and depth from one camera, stamped on a common clock (depth aligned with every
    n-th colour frame), as a doctor's measurement would record them."""
    cam = Peer("/camera", IMAGE, RELIABLE)
    colour = [100.0 + k / colour_hz for k in range(round(seconds * colour_hz))]
    depth = [100.0 + k / depth_hz for k in range(round(seconds * depth_hz))]
    return probe(item("image", "/image", publishers=[cam], sample=stream(colour)),
                 item("depth", "/depth", publishers=[cam], sample=stream(depth)))


def test_doctor_judges_depth_skew_the_way_the_node_pairs():
    """30 Hz colour with 5 Hz depth: every depth image has a colour frame at its stamp (the old
    depth -> nearest colour measure said ~0 ms, OK), but the node pairs each colour frame with
    its nearest depth image and withholds 3D on the half of them more than depth_max_skew
    (50 ms) away. The doctor says so, with the node's own rule frame by frame."""
    from stamp_ros.spatial.depth3d import pair_depth

    p = _rgbd_probe(30.0, 5.0)
    reports, _node, code = run(p)
    depth = next(r.verdict for r in reports if r.input.role == "depth")
    assert code == 1 and depth.level == "warn", depth
    share = re.search(r"3D withheld on (\d+)% of the colour frames \((\d+) of (\d+)\)",
                      depth.message)
    assert share, depth.message
    assert 45 <= int(share[1]) <= 55
    assert ("depth stamps up to 100 ms from the colour frames (median 33 ms, depth_max_skew "
            "50 ms)") in depth.message
    # The same frames, through the node's pairing (depth3d.pair_depth, as lift_frame does):
    # the frames the doctor judged are those the window brackets with depth stamps.
    colour, depth_stamps = p.inputs[0].sample.stamps, p.inputs[1].sample.stamps
    judged = [t for t in colour if min(depth_stamps) <= t <= max(depth_stamps)]
    msgs = [_stamped(t) for t in depth_stamps]
    withheld = sum(pair_depth(_stamped(t), msgs, 0.05) is None for t in judged)
    assert (int(share[2]), int(share[3])) == (withheld, len(judged))
    assert "3D withheld" in format_report(p, reports, _node)


def test_doctor_depth_at_half_the_colour_rate_is_fine():
    """30 Hz colour with aligned 15 Hz depth: every colour frame has depth within 34 ms, and
    the colour frames at the window's edges (their nearest depth may lie outside it) do not
    make a false alarm."""
    reports, _node, code = run(_rgbd_probe(30.0, 15.0))
    assert code == 0, [r.verdict for r in reports]


# ------------------------------------------------------------------ doctor against a real node
PEERS = Path(__file__).resolve().parent / "peers"


def _self_test_values(ros_client, topic: str) -> dict[str, str]:
    """The node's own ~/self_test values for its input ``topic`` ({} while it has none)."""
    from diagnostic_msgs.srv import SelfTest

    reply = ros_client.call(SelfTest, "/stamp_node/self_test", SelfTest.Request(), timeout=30)
    for status in reply.status:
        values = {kv.key: kv.value for kv in status.values}
        if values.get("topic") == topic:
            return values
    return {}


def _run_doctor(processes) -> tuple[int, str, str]:
    """Exit code, report and the camera_info verdict line of one doctor run."""
    doctor = processes.start("-m", "stamp_ros.cli", "doctor", "--seconds", "2", "--wait", "30",
                             name="doctor")
    code = doctor.wait(timeout=180)
    out = processes.output(doctor)
    verdict = next((line for line in out.splitlines()
                    if line.startswith("verdict camera_info /camera_info:")), "")
    return code, out, verdict


@pytest.mark.ros
def test_doctor_receives_a_latched_camera_info(processes, ros_client, tmp_path):
    """A static camera's camera_info published once, TRANSIENT_LOCAL, before the doctor starts:
    the doctor subscribes with the durability the publisher offers and gets the stored message
    (a VOLATILE probe got nothing and said "no data"). Published before the node subscribed,
    the node (VOLATILE) never has it: the doctor says so. Published once the node's
    subscription matched: one message is all camera_info needs, OK without a rate."""
    import os
    import signal

    from feature_helpers import make_test_checkpoint, wait_until
    from node_harness import start_node, wait_output

    checkpoint = make_test_checkpoint(tmp_path / "stamp-tiny", seed=0)
    info = processes.start(str(PEERS / "latched_info_peer.py"), "--topic", "camera_info",
                           name="info")
    wait_output(processes, info, "published", timeout=60)
    # The node's camera_info subscription follows image_reliability: reliable, so the message
    # published on its match below cannot be lost.
    start_node(processes, ros_client, checkpoint, image_reliability="reliable")
    cam = processes.start(str(PEERS / "camera_peer.py"), name="camera")  # colour only
    wait_output(processes, cam, "publishing", timeout=60)
    wait_until(lambda: _self_test_values(ros_client, "/camera_info").get("publishers") == "1",
               60, "the node seeing the camera_info publisher")

    code, out, verdict = _run_doctor(processes)
    assert "publisher    /latched_info_peer: RELIABLE, TRANSIENT_LOCAL" in out, out
    assert "+ 1 latched (TRANSIENT_LOCAL" in out and "K is zero" not in out, out
    assert "no data" not in verdict, out
    assert verdict.startswith("verdict camera_info /camera_info: WARN the node has no message "
                              "on /camera_info: it was published once, latched"), out
    assert code == 1, out

    os.killpg(info.pid, signal.SIGINT)
    info.wait(timeout=30)
    wait_until(lambda: _self_test_values(ros_client, "/camera_info").get("publishers") == "0",
               60, "the node seeing the camera_info publisher gone")
    info = processes.start(str(PEERS / "latched_info_peer.py"), "--topic", "camera_info",
                           "--wait-for-subscriber", name="info")
    wait_output(processes, info, "published", timeout=60)
    wait_until(lambda: _self_test_values(ros_client, "/camera_info").get(
        "last_message_age_s", "never") != "never", 60, "the node receiving the camera_info")

    code, out, verdict = _run_doctor(processes)
    assert "+ 1 latched (TRANSIENT_LOCAL" in out, out
    assert verdict == ("verdict camera_info /camera_info: OK receiving from "
                       "/latched_info_peer"), out
    assert code == 0, out

