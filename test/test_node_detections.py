"""The ecosystem outputs of the real node (issue 30), observed from outside: ``~/detections``,
``~/detections_3d``, ``~/labels`` and ``/tf`` for one-shot results, the ``~/tracks/`` twins and
TF at camera rate while tracking, and a node without vision_msgs/tf2_msgs.

Each node runs in its own process with a tiny scripted checkpoint answering two masks; every
output is matched to its ``~/result``/``~/tracks`` message by header stamp and compared with it
(the message builders themselves are unit-tested in test_detections.py).
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

import numpy as np
import pytest
from feature_helpers import Caller, inline, make_test_checkpoint, set_ok
from node_harness import image_msg, start_node, wait_output
from test_detections import check_2d, check_3d, check_labels, check_tf, stamp

pytestmark = pytest.mark.ros

ANSWER = "Here <|seg|> and <|seg|>"
QUERY = "segment the squares"
NODE = "/stamp_node"
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Two masks per answer, for any image."""
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-two", seed=0,
                                answer=ANSWER)


def needs_ecosystem() -> None:
    pytest.importorskip("vision_msgs.msg")
    pytest.importorskip("tf2_msgs.msg")


def tf_at(tf_msgs: list[Any], at: tuple[int, int]) -> list[Any]:
    return [t for m in tf_msgs for t in m.transforms if stamp(t) == at]


def camera_info(width: int, height: int) -> Any:
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.frame_id = "cam"
    info.width, info.height = width, height
    info.k = [100.0, 0.0, width / 2, 0.0, 100.0, height / 2, 0.0, 0.0, 1.0]
    return info


def depth_msg(width: int, height: int, sec: int, nanosec: int = 0) -> Any:
    from stamp_ros.testing.images import array_to_image_msg

    depth = array_to_image_msg(np.full((height, width), 1500, np.uint16), "16UC1")
    depth.header.frame_id = "cam"
    depth.header.stamp.sec, depth.header.stamp.nanosec = sec, nanosec
    return depth


class Outputs:
    """Collectors of one output family (``prefix`` "" or "tracks/") and of /tf."""

    def __init__(self, ros_client, prefix: str = "") -> None:
        from sensor_msgs.msg import Image
        from vision_msgs.msg import Detection2DArray, Detection3DArray

        def sub(msg_type: type, name: str):
            return ros_client.subscribe(msg_type, f"{NODE}/{prefix}{name}",
                                        ros_client.reliable(100))

        self.dets = sub(Detection2DArray, "detections")
        self.dets3d = sub(Detection3DArray, "detections_3d")
        self.labels = sub(Image, "labels")

    def wait(self, seg: Any, timeout: float = TIMEOUT) -> tuple[Any, Any, Any]:
        """The detections, labels and (with 3D) 3D detections of ``seg``."""
        at = stamp(seg)
        dets = self.dets.wait_for(1, timeout, where=lambda m: stamp(m) == at)[-1]
        labels = self.labels.wait_for(1, timeout, where=lambda m: stamp(m) == at)[-1]
        dets3d = None
        if any(inst.has_3d for inst in seg.instances):
            dets3d = self.dets3d.wait_for(1, timeout, where=lambda m: stamp(m) == at)[-1]
        return dets, labels, dets3d


def test_results_give_detections_labels_3d_and_tf_when_asked(processes, ros_client,
                                                             checkpoint):
    """Once mode with depth: each ~/result has its ~/detections, ~/labels and ~/detections_3d
    (same stamp, same objects); the outputs exist before anyone subscribes and start once
    someone does. /tf stays silent while publish_tf is false and carries the objects (with the
    live tf_prefix) once it is set."""
    needs_ecosystem()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from stamp_ros.msg import Segmentation
    from tf2_msgs.msg import TFMessage

    start_node(processes, ros_client, checkpoint, frame_timeout=30.0)
    for topic in ("detections", "detections_3d", "labels"):
        ros_client.wait_for_publishers(f"{NODE}/{topic}")  # created, not yet built
    ros_client.wait_for_publishers("/tf")
    results = ros_client.subscribe(Segmentation, f"{NODE}/result", ros_client.reliable(50))
    outputs = Outputs(ros_client)
    tf_msgs = ros_client.subscribe(TFMessage, "/tf",
                                   QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    depth_pub = ros_client.publisher(Image, "/depth")
    info_pub = ros_client.publisher(CameraInfo, "/camera_info")
    for pub in (depth_pub, info_pub):
        ros_client.wait_for_subscribers(pub)
    segment = Caller(ros_client)
    rgb = np.ascontiguousarray(np.random.default_rng(5).integers(0, 255, (120, 160, 3),
                                                                  dtype=np.uint8))

    def ask_with_3d(sec: int) -> Any:
        """A result with 3D on frame ``sec`` (depth travels on another topic than the request,
        and the node keeps only the newest depth message in its reader: repeat, each with its
        own stamp and depth image, until they were paired)."""
        for attempt in range(40):
            info_pub.publish(camera_info(160, 120))
            depth_pub.publish(depth_msg(160, 120, sec, attempt))
            res = segment(image=inline(rgb, stamp_sec=sec, stamp_nanosec=attempt))
            assert res.success and len(res.instances) == 2, (res.error, len(res.instances))
            if any(inst.has_3d for inst in res.instances):
                return res
        raise AssertionError(f"no result with 3D on frame {sec}")

    # Until every output's subscription is matched (discovery is asynchronous).
    for _ in range(20):
        try:
            outputs.wait(ask_with_3d(50), timeout=3)
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("no ~/detections, ~/labels and ~/detections_3d for a result with 3D")

    res = ask_with_3d(60)
    (published,) = results.wait_for(1, TIMEOUT, where=lambda m: stamp(m) == stamp(res))
    assert published.request_id == res.request_id
    dets, labels, dets3d = outputs.wait(published)
    check_2d(published, dets)
    check_labels(published, labels)
    check_3d(published, dets3d)
    assert dets3d.detections[0].results[0].pose.pose.position.z == pytest.approx(1.5, abs=1e-3)
    assert not tf_msgs.messages, "publish_tf is false: nothing may be on /tf"

    set_ok(ros_client, publish_tf=True, tf_prefix="robot/")
    res = ask_with_3d(61)
    at = stamp(res)
    tf_msgs.wait_for(1, TIMEOUT, where=lambda m: stamp(m.transforms[0]) == at)
    # One reliable publisher, in order: anything from the earlier results came before.
    assert {stamp(t) for m in tf_msgs.messages for t in m.transforms} == {at}
    check_tf(res, tf_at(tf_msgs.messages, at), "robot/")
    assert all(t.child_frame_id.startswith(f"robot/{res.request_id}_")
               for t in tf_at(tf_msgs.messages, at))


def test_tracking_gives_the_outputs_and_tf_for_every_tracked_frame(processes, ros_client,
                                                                   checkpoint):
    """Continuous mode with track and publish_tf, a panning camera with depth: every ~/tracks
    frame gets ~/tracks/detections, ~/tracks/labels, ~/tracks/detections_3d and its objects on
    /tf, named by track id; each model answer's ~/detections carry the track ids; /tf never
    carries one child twice at one stamp (the answers' transforms come with the tracks)."""
    needs_ecosystem()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from stamp_ros.testing.scenes import PanScene

    w, h, first = 320, 240, 1000
    node = start_node(processes, ros_client, checkpoint, mode="continuous", track=True,
                      publish_tf=True, reanswer_every=1)
    tracks = ros_client.subscribe(Segmentation, f"{NODE}/tracks", ros_client.reliable(100))
    results = ros_client.subscribe(Segmentation, f"{NODE}/result", ros_client.reliable(100))
    tracked_out, answer_out = Outputs(ros_client, "tracks/"), Outputs(ros_client)
    tf_msgs = ros_client.subscribe(TFMessage, "/tf",
                                   QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    pubs = {name: ros_client.publisher(t, f"/{name}") for name, t in (
        ("image", Image), ("depth", Image), ("camera_info", CameraInfo), ("query", String))}
    for pub in pubs.values():
        ros_client.wait_for_subscribers(pub)
    pubs["query"].publish(String(data=QUERY))
    wait_output(processes, node, "tracking", timeout=60)
    scene = PanScene(size=(w, h), velocity=(2, 0), frames=400, seed=1)

    def all_started() -> bool:
        return all(c.messages for c in (tracked_out.dets, tracked_out.labels,
                                        tracked_out.dets3d, answer_out.dets, tf_msgs))

    checked, start = 0, None
    for i in range(600):
        if not tracks.messages:
            time.sleep(1 / 30)  # a 30 Hz camera until the first answer (pacing, not a wait)
        # Depth (and intrinsics) before the frame: the tracking thread pairs on arrival.
        pubs["camera_info"].publish(camera_info(w, h))
        pubs["depth"].publish(depth_msg(w, h, first + i))
        pubs["image"].publish(image_msg(scene.frame(i), stamp_sec=first + i,
                                         stamp_nanosec=0, frame_id="cam"))
        if not tracks.messages:
            continue  # no answer yet: nothing is tracked
        # One frame at a time once tracks flow: no frame is skipped, each is checked.
        try:
            (msg,) = tracks.wait_for(1, TIMEOUT, where=lambda m, s=first + i: stamp(m) == (s, 0))
        except TimeoutError:
            raise AssertionError(f"no ~/tracks for frame {i} (the newest):\n"
                                 + processes.output(node)[-3000:]) from None
        if start is None:
            if not all_started():
                continue
            start = i
        dets, labels, dets3d = tracked_out.wait(msg)
        assert all(inst.track_id > 0 for inst in msg.instances)
        check_2d(msg, dets)
        check_labels(msg, labels)
        if dets3d is not None:
            check_3d(msg, dets3d)
            at = stamp(msg)
            tf_msgs.wait_for(1, TIMEOUT, where=lambda m, s=at: any(
                stamp(t) == s for t in m.transforms))
            check_tf(msg, tf_at(tf_msgs.messages, at), "stamp/")
            checked += 1
        if checked >= 15 and len([r for r in results.messages if r.success]) >= 2:
            break
    assert start is not None and checked >= 15, (
        f"tracked frames checked with 3D: {checked}\n" + processes.output(node)[-3000:])

    answered = [r for r in results.messages if r.success and stamp(r)[0] >= first + start]
    assert answered, "no model answer after the outputs started"
    for res in answered:
        assert all(inst.track_id > 0 for inst in res.instances), "answers carry track ids"
        at = stamp(res)
        dets = answer_out.dets.wait_for(1, TIMEOUT, where=lambda m, s=at: stamp(m) == s)
        check_2d(res, dets[-1])
    pairs = [(t.child_frame_id, stamp(t)) for m in tf_msgs.messages for t in m.transforms]
    assert len(pairs) == len(set(pairs)), "a child twice at one stamp on /tf"
    assert all(child.startswith("stamp/") and child[len("stamp/"):].isdigit()
               for child, _ in pairs), "while tracking TF children are track ids"


BLOCKER = textwrap.dedent('''
    """Test-only: vision_msgs and tf2_msgs cannot be imported in this process tree."""
    import sys


    class _Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("vision_msgs", "tf2_msgs"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None


    sys.meta_path.insert(0, _Blocked())
''')


def test_node_without_vision_msgs_and_tf2_msgs_runs_and_says_so(processes, ros_client, ros_env,
                                                                checkpoint, tmp_path):
    """Both packages missing: the node still answers, says once which outputs are off and
    why, creates no publisher for them, and still publishes ~/labels (sensor_msgs)."""
    import os

    from sensor_msgs.msg import Image

    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    node = start_node(processes, ros_client, checkpoint, env=env, publish_tf=True)
    out = wait_output(processes, node, "(publish_tf) is off")
    assert "~/detections and ~/detections_3d (also under ~/tracks/) are off: vision_msgs is " \
           "not importable" in out
    assert out.count("is not importable") == 2
    labels = ros_client.subscribe(Image, f"{NODE}/labels", ros_client.reliable(10))
    ros_client.wait_for_publishers(f"{NODE}/labels")
    assert ros_client.node.count_publishers(f"{NODE}/detections") == 0
    assert ros_client.node.count_publishers("/tf") == 0
    segment = Caller(ros_client)
    for attempt in range(20):
        res = segment(image=inline(stamp_sec=5, stamp_nanosec=attempt))
        assert res.success, res.error
        try:
            labels.wait_for(1, timeout=3, where=lambda m, a=attempt: stamp(m) == (5, a))
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("no ~/labels from a node without vision_msgs")
