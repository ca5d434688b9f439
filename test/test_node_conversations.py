"""Multi-round conversations through the real node's service and action.

The test checkpoint answers "Here <|seg|> and there <|seg|> done" to a fresh question; its
scripted decoding counts the <|seg|> tokens already in the prompt, so once earlier answers are in
the conversation it answers "Here <|seg|> done": the turn changes what is segmented, which is
what the history must do. Its context is short (1024 positions) so that an over-long
conversation can be provoked.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from node_harness import (
    image_msg,
    make_frame,
    ready_action_client,
    ready_service_client,
    start_node,
)

pytestmark = pytest.mark.ros

ANSWER = "Here <|seg|> and there <|seg|> done"
SRV = "/stamp_node/segment"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import TinyShape, make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-conv", seed=0,
                                answer=ANSWER, shape=TinyShape(max_position_embeddings=1024))


def request(query: str, conversation: str = "", **fields: Any) -> Any:
    from stamp_ros.srv import Segment

    req = Segment.Request()
    req.query, req.conversation = query, conversation
    for key, value in fields.items():
        setattr(req, key, value)
    return req


def logits(res: Any) -> list[np.ndarray]:
    return [np.asarray(inst.grid_logits, np.float32) for inst in res.instances]


def test_conversation_follows_up_on_its_first_frame_until_moved_or_ended(
        processes, ros_client, checkpoint):
    from ros_client import wait_future
    from sensor_msgs.msg import Image
    from stamp_ros.action import Segment as SegmentAction

    # max_frame_age 0: a request may only use a frame that arrives after it was asked, so which
    # frame a turn used is decided by the test, not by timing.
    node = start_node(processes, ros_client, checkpoint, max_frame_age=0.0, frame_timeout=4.0)
    service = ready_service_client(ros_client, SRV)
    img_pub = ros_client.publisher(Image, "/image")
    ros_client.wait_for_subscribers(img_pub)

    def call_while_streaming(req: Any, stamp_sec: int) -> Any:
        """Call, publishing frames with ``stamp_sec`` until the answer arrives (the camera)."""
        future = service.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        frame = image_msg(make_frame(120, 90, seed=stamp_sec), stamp_sec=stamp_sec)
        while not done.wait(0.1):
            img_pub.publish(frame)
        return future.result().result

    first = call_while_streaming(request("segment the horses", "c1"), stamp_sec=10)
    assert first.success, first.error
    assert (first.conversation, first.turn, first.header.stamp.sec) == ("c1", 1, 10)
    assert first.answer == "Here  and there  done" and len(first.instances) == 2

    # The camera has moved on (frame 20) and then stopped: follow-ups stay on frame 10.
    call_while_streaming(request("one-shot question"), stamp_sec=20)
    second = wait_future(service.call_async(request("now the one on the left", "c1")), 60)
    second = second.result
    assert second.success, second.error
    assert (second.turn, second.header.stamp.sec) == (2, 10)
    assert second.answer == "Here  done" and len(second.instances) == 1
    assert second.frame_age_ms > 0

    action = ready_action_client(ros_client, SRV)
    goal = SegmentAction.Goal(query="and the right one", conversation="c1")
    handle = wait_future(action.send_goal_async(goal), 60)
    third = wait_future(handle.get_result_async(), 60).result.result
    assert third.success, third.error
    assert (third.conversation, third.turn, third.header.stamp.sec) == ("c1", 3, 10)
    # Same answer text as turn 2, but a different context: the masks are computed anew.
    assert len(third.instances) == 1
    assert not np.allclose(logits(third)[0], logits(second)[0])

    # Moving to a new frame while the camera is silent: an error naming the reason, and the
    # conversation is still there, on its frame.
    moved = wait_future(service.call_async(request("look again", "c1", new_frame=True)), 60)
    assert not moved.result.success and "camera frame" in moved.result.error
    assert moved.result.conversation == "c1" and moved.result.turn == 0
    fourth = wait_future(service.call_async(request("and now?", "c1")), 60).result
    assert fourth.success and (fourth.turn, fourth.header.stamp.sec) == (4, 10), fourth.error

    # new_frame with the camera back: the conversation moves to frame 30, its turns stay.
    fifth = call_while_streaming(request("look again", "c1", new_frame=True), stamp_sec=30)
    assert fifth.success and (fifth.turn, fifth.header.stamp.sec) == (5, 30), fifth.error
    assert len(fifth.instances) == 1  # the earlier answers are still in the prompt

    # An inline image also moves it; end_conversation with an empty query forgets it.
    inline = image_msg(make_frame(64, 48, seed=7), stamp_sec=40, frame_id="inline")
    sixth = wait_future(service.call_async(request("this one", "c1", image=inline)), 60).result
    assert sixth.success and (sixth.turn, sixth.header.stamp.sec) == (6, 40), sixth.error
    ended = wait_future(service.call_async(request("", "c1", end_conversation=True)), 60)
    assert ended.result.success and ended.result.turn == 6, ended.result.error
    again = call_while_streaming(request("segment the horses", "c1"), stamp_sec=50)
    assert again.success and (again.turn, again.header.stamp.sec) == (1, 50), again.error
    assert len(again.instances) == 2  # a fresh conversation: no earlier answers
    assert node.poll() is None


def test_interleaved_conversations_from_two_clients_keep_their_own_turns_and_frames(
        processes, ros_client, checkpoint):
    from ros_client import wait_future

    node = start_node(processes, ros_client, checkpoint)
    clients = [ready_service_client(ros_client, SRV) for _ in range(2)]
    images = {"left": image_msg(make_frame(96, 64, seed=1), stamp_sec=100, frame_id="a"),
              "right": image_msg(make_frame(80, 60, seed=2), stamp_sec=200, frame_id="b")}
    seen: dict[str, list[Any]] = {"left": [], "right": []}
    for turn in range(1, 4):
        futures = {}
        for client, name in zip(clients, images, strict=True):
            extra = {"image": images[name]} if turn == 1 else {}
            futures[name] = client.call_async(request(f"turn {turn}", name, **extra))
        for name, future in futures.items():
            res = wait_future(future, 120).result
            assert res.success, res.error
            seen[name].append(res)
    for name, results in seen.items():
        assert [r.turn for r in results] == [1, 2, 3]
        assert {r.conversation for r in results} == {name}
        assert {r.header.stamp.sec for r in results} == {images[name].header.stamp.sec}
        assert [len(r.instances) for r in results] == [2, 1, 1]
    assert node.poll() is None


def test_over_long_and_unknown_cases_get_clear_errors_and_the_conversation_survives(
        processes, ros_client, checkpoint):
    from ros_client import wait_future

    node = start_node(processes, ros_client, checkpoint, conversation_max_turns=2)
    client = ready_service_client(ros_client, SRV)
    frame = image_msg(make_frame(96, 64), stamp_sec=5)

    def ask(req: Any) -> Any:
        return wait_future(client.call_async(req), 120).result

    assert ask(request("segment it", "long", image=frame)).turn == 1
    too_long = ask(request("describe " + "the horse " * 390, "long"))
    assert not too_long.success and "positions" in too_long.error, too_long.error
    assert too_long.conversation == "long" and too_long.turn == 0
    res = ask(request("and now?", "long"))
    assert res.success and res.turn == 2, res.error  # the failed turn was not recorded
    for turn in (3, 4, 5):  # only 2 earlier turns stay in the prompt: no growth, no error
        res = ask(request("again " * 20, "long"))
        assert res.success and res.turn == turn, res.error
    nothing = ask(request("", "never-started", end_conversation=True))
    assert nothing.success and nothing.turn == 0
    empty = ask(request("   ", "long"))
    assert not empty.success and "empty query" in empty.error
    assert node.poll() is None
