"""The input-diagnosis rules without ROS (issue 20): QoS compatibility and its wording, similar
topic names, the verdict rules the node's warnings and ``stamp-ros doctor`` share, arrival
monitoring, and the doctor's verdicts and exit codes on probes built by hand."""

from __future__ import annotations

import enum

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
    v = judge(depth, p)
    assert v.level == "warn" and "looks like millimetres" in v.message
    assert "depth stamps 200 ms from the colour frames (depth_max_skew 50 ms)" in v.message
    assert "K is zero" in judge(cinfo, p).message
    assert run(p)[2] == 1


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
