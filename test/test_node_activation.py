"""Loading the model holds nothing: the node serves while it loads (issue 29).

The inference process's load is held by a file (``STAMP_ROS_FAULT_LOAD_HOLD``, a test-tree
fault: test/faults), so "during the load" is a state the test decides, not a race against this
shared machine's speed. While it is held, the node answers ``get_state``, ``~/self_test`` and
parameter calls, counts camera frames, and keeps a ``~/segment`` call waiting; when the load
ends, the waiting call gets the model's answer, or the load's error when it failed, and the
lifecycle result of ``activate`` says which.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from feature_helpers import change_state, get_state, set_params, streaming, wait_state
from node_harness import fault_env, image_msg, make_frame, node_args, ready_service_client
from ros_client import wait_future

pytestmark = pytest.mark.ros

ANSWER = "Sure, it is here: <|seg|>"
NODE = "/stamp_node"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", answer=ANSWER)


def held_node(processes, tmp_path: Path, model: Path) -> tuple:
    """The node, configured, its model load held until the returned file is removed."""
    hold = tmp_path / "hold-the-load"
    hold.write_text("held by the test")
    env = dict(fault_env(processes.env), STAMP_ROS_FAULT_LOAD_HOLD=str(hold))
    node = processes.start(*node_args(model, stats_period=0.0, frame_timeout=30.0,
                                      max_frame_age=5.0), name="node", env=env)
    return node, hold


def segment_request(query: str, image=None):
    from stamp_ros.srv import Segment

    req = Segment.Request()
    req.query, req.request_id = query, "during-the-load"
    if image is not None:
        req.image = image
    return req


def self_test_inputs(ros_client) -> dict[str, dict[str, str]]:
    from diagnostic_msgs.srv import SelfTest

    res = ros_client.call(SelfTest, f"{NODE}/self_test", SelfTest.Request(), timeout=30)
    return {s.name: {kv.key: kv.value for kv in s.values} for s in res.status
            if ": input " in s.name}


def test_the_node_serves_while_the_model_loads_and_answers_the_waiting_call_after(
        processes, ros_client, checkpoint, tmp_path):
    from sensor_msgs.msg import Image

    node, hold = held_node(processes, tmp_path, checkpoint)
    wait_state(ros_client, processes, node, "inactive")  # configured; the load is held
    service = ready_service_client(ros_client)  # its pings are answered during the load
    pub = ros_client.publisher(Image, "/image")
    ros_client.wait_for_subscribers(pub)
    with streaming(pub, make_frame(96, 64), rate_hz=10.0):
        call = service.call_async(segment_request("segment the square"))

        def image_received() -> int:
            image = next(v for v in self_test_inputs(ros_client).values()
                         if v["role"] == "image")
            return int(image["received"])

        first = image_received()
        (ok,) = set_params(ros_client, max_new_tokens=20)  # a live parameter, taken now
        assert ok.successful, ok.reason
        while image_received() < first + 5:  # frames keep arriving while the model loads
            assert not call.done(), "the call was answered before the model loaded"
        assert get_state(ros_client) == "inactive" and not call.done()
        hold.unlink()  # the model may load now
        res = wait_future(call, 300).result
        assert res.success, res.error
        assert res.request_id == "during-the-load" and res.answer.startswith("Sure")
    wait_state(ros_client, processes, node, "active")
    assert node.poll() is None


def test_a_failed_load_answers_the_waiting_call_with_its_reason_and_activate_says_so(
        processes, ros_client, checkpoint, tmp_path):
    from lifecycle_msgs.msg import Transition

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    node, hold = held_node(processes, tmp_path, empty)
    wait_state(ros_client, processes, node, "inactive")
    service = ready_service_client(ros_client)
    call = service.call_async(segment_request("segment the square"))
    assert get_state(ros_client) == "inactive" and not call.done()
    hold.unlink()
    res = wait_future(call, 300).result
    assert not res.success and "could not be loaded" in res.error, res.error
    assert str(empty) in res.error
    # The lifecycle result says whether the model loaded: not this one...
    assert not change_state(ros_client, Transition.TRANSITION_ACTIVATE)
    assert get_state(ros_client) == "inactive"
    # ... and a good one, set while inactive, loads on the next activate.
    (ok,) = set_params(ros_client, model=str(checkpoint))
    assert ok.successful, ok.reason
    assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
    assert get_state(ros_client) == "active"
    inline = image_msg(make_frame(96, 64), stamp_sec=7)
    res = wait_future(service.call_async(segment_request("segment the square", inline)),
                      300).result
    assert res.success, res.error
    assert node.poll() is None
