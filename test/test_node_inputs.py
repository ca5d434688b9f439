"""The node says what is wrong with its inputs (issue 20), observed over real ROS 2.

Every test starts ``stamp_ros`` in its own process and real camera stand-ins in others
(test/peers/camera_peer.py), then waits for what an integrator would see: log lines,
/diagnostics statuses, result fields, and ``stamp-ros doctor``'s verdicts and exit code.
Nothing waits on time: each step waits for an observable event, with a generous deadline.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from feature_helpers import Caller, make_test_checkpoint, set_ok, wait_until
from node_harness import start_node, wait_output

pytestmark = pytest.mark.ros

PEER = str(Path(__file__).resolve().parent / "peers" / "camera_peer.py")
ANSWER = "Sure, it is here: <|seg|>"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny", seed=0,
                                answer=ANSWER)


def camera(processes, *args: str, name: str = "camera"):
    """A camera driver stand-in in its own process, once its publishers exist."""
    proc = processes.start(PEER, *args, name=name)
    wait_output(processes, proc, "publishing", timeout=60)
    return proc


def stop(proc) -> None:
    """End one child process (SIGINT, as a user's Ctrl-C) and wait for it."""
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)


def statuses(arr) -> dict[str, object]:
    return {s.name: s for s in arr.status}


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def wait_status(diags, name: str, predicate, what: str, timeout: float = 60.0):
    """The first /diagnostics status called ``name`` for which ``predicate`` holds."""
    def hit(arr) -> bool:
        status = statuses(arr).get(name)
        return status is not None and predicate(status)
    try:
        arr = diags.wait_for(1, timeout=timeout, where=hit)[0]
    except TimeoutError:
        seen = [statuses(a).get(name) for a in diags.messages[-3:]]
        raise AssertionError(f"no /diagnostics status {name!r} with {what}; last: "
                             f"{[(s.level, s.message, values(s)) for s in seen if s]}") from None
    return statuses(arr)[name]


def test_best_effort_camera_against_a_reliable_subscription(processes, ros_client, checkpoint):
    """A best-effort camera and image_reliability:=reliable: one warning with the topic, the
    policy, both values and the fix; /diagnostics WARN on that input until the camera is gone.
    An output subscriber asking for a latched topic gets the same treatment."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from stamp_ros.msg import Segmentation

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(500))
    node = start_node(processes, ros_client, checkpoint, image_reliability="reliable",
                      stats_period=1.0, input_timeout=2.0)
    cam = camera(processes, "--reliability", "best_effort")
    # The event's own warning (the silent-input one after input_timeout says the same)
    out = wait_output(processes, node, "[stamp_node]: incompatible QoS on /image (reliability)")
    assert ("[stamp_node]: incompatible QoS on /image (reliability): /camera_peer publishes "
            "BEST_EFFORT, the node subscribes RELIABLE: set image_reliability:=best_effort") in out
    warn = wait_status(diags, "stamp_node: input /image",
                       lambda s: s.level == DiagnosticStatus.WARN and "reliability" in s.message,
                       "a QoS WARN")
    assert "/image" in warn.message and "BEST_EFFORT" in warn.message
    assert values(warn)["status"] == "incompatible QoS"
    assert values(warn)["publishers"] == "1"

    stop(cam)
    wait_output(processes, node, "cleared: incompatible QoS on /image (reliability)")
    cleared = wait_status(diags, "stamp_node: input /image",
                          lambda s: values(s)["status"] != "incompatible QoS",
                          "the QoS warning cleared")
    assert "BEST_EFFORT" not in cleared.message and values(cleared)["publishers"] == "0"

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ros_client.node.create_subscription(Segmentation, "/stamp_node/result", lambda _m: None,
                                        latched)
    out = wait_output(processes, node,
                      "[stamp_node]: incompatible QoS on /stamp_node/result (durability)")
    assert "subscribes TRANSIENT_LOCAL" in out and "durability VOLATILE" in out
    wait_status(diags, "stamp_node: outputs",
                lambda s: s.level == DiagnosticStatus.WARN and "/stamp_node/result" in s.message,
                "the output QoS WARN")


def test_camera_on_a_wrong_topic_name(processes, ros_client, checkpoint):
    """The camera publishes /camera/image_raw, the node listens on /image: after input_timeout
    the warning names the expected topic, its publisher count and the similar one that exists;
    /diagnostics shows rate, last-message age, publisher count and status per input, and
    follows once the right topic is published."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(500))
    node = start_node(processes, ros_client, checkpoint, stats_period=1.0, input_timeout=1.5,
                      image_reliability="best_effort")  # the default, against streams
    camera(processes, "--image-topic", "/camera/image_raw")
    out = wait_output(processes, node, "similar topics that exist: /camera/image_raw")
    line = next(x for x in out.splitlines() if "similar topics that exist" in x)
    assert "input image of camera default: no publisher on /image (count_publishers 0)" in line
    assert "wrong topic name, namespace or remap" in line
    assert "remap image:=/camera/image_raw" in line
    silent = wait_status(diags, "stamp_node: input /image",
                         lambda s: values(s)["status"] == "no publisher", "no publisher")
    assert silent.level == DiagnosticStatus.WARN
    v = values(silent)
    assert (v["publishers"], v["last_message_age_s"], v["rate_hz"]) == ("0", "never", "0.0")
    # depth and camera_info are not configured here: not a problem
    depth = wait_status(diags, "stamp_node: input /depth", lambda s: True, "a depth status")
    assert depth.level == DiagnosticStatus.OK and values(depth)["status"] == "not used"

    camera(processes, "--image-topic", "/image", "--ros-args", "-r", "__node:=camera_right",
           name="right")
    fine = wait_status(diags, "stamp_node: input /image",
                       lambda s: values(s)["status"] == "receiving"
                       and float(values(s)["rate_hz"]) > 0, "frames received")
    v = values(fine)
    assert fine.level == DiagnosticStatus.OK and v["publishers"] == "1"
    assert float(v["last_message_age_s"]) < 30


def _skew_ms(inst) -> int | None:
    match = re.fullmatch(r"depth (\d+) ms from the colour frame \(depth_max_skew 50 ms\)",
                         inst.status_3d)
    return int(match.group(1)) if match else None


def test_depth_units_skew_and_target_frame_reasons(processes, ros_client, checkpoint):
    """A 16UC1 millimetre camera declared as metres (depth_scale:=1.0) whose depth is stamped
    200 ms after its colour frames: a unit warning naming the parameter; 3D withheld with the
    skew as the reason (counted on /diagnostics); each fix changes the reason, until the object
    has 3D; a target frame without a transform withholds it again, with the tf reason."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(500))
    node = start_node(processes, ros_client, checkpoint, depth_scale=1.0, stats_period=1.0,
                      frame_timeout=10.0, image_reliability="best_effort")
    # 2 Hz: the colour frames around a depth image are 500 ms apart, so the nearest is the
    # one it was published with (200 ms) or, if the request ran in between, 300 ms.
    camera(processes, "--depth-topic", "depth", "--info-topic", "camera_info",
           "--depth-value", "1500", "--depth-offset-ms", "200", "--rate", "2")
    out = wait_output(processes, node, "depth on /depth: median valid depth")
    line = next(x for x in out.splitlines() if "depth on /depth: median valid depth" in x)
    assert "1.5e+03 m" in line and "16UC1" in line and "depth_scale 1" in line
    assert "look like millimetres, not metres: set depth_scale:=0.001" in line

    segment = Caller(ros_client)

    def first_instance(predicate, what: str):
        found = []

        def check() -> bool:
            res = segment()
            assert res.success, res.error
            found[:] = [res.instances[0]]
            return predicate(res.instances[0])
        wait_until(check, 90, what)
        return found[0]

    inst = first_instance(lambda i: _skew_ms(i) is not None, "the depth skew as status_3d")
    assert 190 <= _skew_ms(inst) <= 310, inst.status_3d
    assert not inst.has_3d and inst.valid_depth_fraction == 0.0
    diag3d = wait_status(diags, "stamp_node: 3d",
                         lambda s: any(k == "no 3D: depth_skew" for k in values(s)),
                         "the skew counted")
    assert diag3d.level == DiagnosticStatus.WARN
    assert "from the colour frame" in values(diag3d)["no 3D: depth_skew"]
    assert "3D withheld: depth" in processes.output(node)

    set_ok(ros_client, depth_max_skew=0.5)
    inst = first_instance(lambda i: "valid points <" in i.status_3d, "too few valid points")
    assert re.fullmatch(r"0 valid points < \d+", inst.status_3d), inst.status_3d
    assert inst.valid_depth_fraction == 0.0 and not inst.has_3d  # 1500 m is out of range

    set_ok(ros_client, depth_scale=0.001)
    inst = first_instance(lambda i: i.has_3d, "3D once both are fixed")
    assert inst.status_3d == "" and inst.valid_depth_fraction == pytest.approx(1.0)
    assert inst.centroid.z == pytest.approx(1.5, abs=1e-3)

    set_ok(ros_client, target_frame="base_link")
    inst = first_instance(lambda i: i.status_3d.startswith("tf:"), "the tf reason")
    assert not inst.has_3d and "'base_link'" in inst.status_3d
    try:
        import tf2_ros  # noqa: F401
        assert inst.status_3d == "tf: frame 'base_link' does not exist"
    except ImportError:  # no tf2_ros wheel: the reason says so
        assert inst.status_3d == ("tf: tf2_ros is not installed, no transform into "
                                  "target_frame 'base_link'")
    wait_status(diags, "stamp_node: 3d", lambda s: "no 3D: tf" in values(s), "the tf reason")


def wait_receiving(ros_client, *topics: str) -> None:
    """Until the node's ~/self_test says each topic is receiving (the camera discovered)."""
    from diagnostic_msgs.srv import SelfTest

    def receiving() -> bool:
        reply = ros_client.call(SelfTest, "/stamp_node/self_test", SelfTest.Request(), timeout=30)
        seen = {values(s).get("topic"): values(s).get("status") for s in reply.status}
        return all(seen.get(topic) == "receiving" for topic in topics)
    wait_until(receiving, 60, f"the node receiving {topics}")


def doctor(processes, *args: str) -> tuple[int, str]:
    proc = processes.start("-m", "stamp_ros.cli", "doctor", "--seconds", "2", "--wait", "30",
                           *args, name="doctor")
    code = proc.wait(timeout=180)
    return code, processes.output(proc)


def test_doctor_on_a_healthy_and_a_broken_setup(processes, ros_client, checkpoint):
    """Healthy: every input published with matching QoS -> exit 0 and OK verdicts with the
    measured rates. Broken: the camera moved to another name -> exit 1, the verdict names the
    missing topic and the remap that fixes it."""
    start_node(processes, ros_client, checkpoint, image_reliability="best_effort")
    cam = camera(processes, "--depth-topic", "depth", "--info-topic", "camera_info")
    wait_receiving(ros_client, "/image", "/depth", "/camera_info")
    code, out = doctor(processes)
    assert code == 0, out
    assert "node subscribes BEST_EFFORT, VOLATILE" in out and "/camera_peer: RELIABLE" in out
    assert "verdict node /stamp_node: OK active" in out
    for role, topic in (("image", "/image"), ("depth", "/depth"),
                        ("camera_info", "/camera_info")):
        assert f"verdict {role} {topic}: OK receiving from /camera_peer" in out, out
    assert "160x120 rgb8" in out and "160x120 16UC1, median depth 1.50 m" in out
    assert out.rstrip().endswith("healthy")

    stop(cam)
    camera(processes, "--image-topic", "/camera/image_raw", name="moved")
    ros_client.wait_for_publishers("/camera/image_raw")
    code, out = doctor(processes)
    assert code == 1, out
    assert "verdict image /image: ERROR no publisher on /image" in out, out
    assert "remap image:=/camera/image_raw" in out
    assert out.rstrip().endswith("problem(s)")
    code, out = doctor(processes, "--node", "/no_such_node", "--wait", "3")
    assert code == 1 and "verdict node /no_such_node: ERROR no node" in out, out
