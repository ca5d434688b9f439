"""The model in its own process, observed from outside over real ROS 2 (issue 21): a kill -9 of
the inference process costs the requests it owed (answered with the reason) and a restart,
never the node; two inference processes answer two cameras at the same time; deactivate ends
the process and the node's memory stays bounded over lifecycle cycles.

Busy requests use a checkpoint that decodes a long answer (a fixed amount of work), so "during
a request" and "at the same time" are facts of the work, not of this machine's speed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from feature_helpers import Caller, change_state, get_state, inline, set_ok, wait_diag
from node_harness import (
    image_msg,
    inference_processes,
    make_frame,
    make_long_answer_checkpoint,
    ready_action_client,
    ready_service_client,
    rss_mb,
    start_node,
    tree_rss_mb,
)

pytestmark = pytest.mark.ros

LONG_WORDS = 400
ANSWER = "Sure, it is here: <|seg|>"
DIED = "inference process died: signal 9 (SIGKILL); restarting"


@pytest.fixture(scope="module")
def long_checkpoint(tmp_path_factory) -> Path:
    return make_long_answer_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-long",
                                       LONG_WORDS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny", answer=ANSWER)


def goal(stamp_sec: int, camera: str = "") -> Any:
    from stamp_ros.action import Segment as SegmentAction

    g = SegmentAction.Goal()
    g.query, g.camera = "segment the square", camera
    g.image = image_msg(make_frame(96, 64), stamp_sec=stamp_sec, frame_id=camera or "cam")
    return g


def decoding_with_queue(ros_client, diags, queued: int) -> tuple[Any, Any, list[Any]]:
    """A goal that is decoding and ``queued`` service calls waiting behind it for the only
    inference process: the action client (matched, for later goals), the goal's handle and
    the calls' futures (ids queued-N, stamps 10+N)."""
    from ros_client import wait_future
    from stamp_ros.srv import Segment

    action = ready_action_client(ros_client)
    service = ready_service_client(ros_client)
    decoding = threading.Event()
    running = wait_future(action.send_goal_async(
        goal(1), feedback_callback=lambda m: m.feedback.stage == "decode" and decoding.set()),
        60)
    assert decoding.wait(120), "no decode feedback"
    calls = []
    for i in range(queued):
        req = Segment.Request(query="segment the square", request_id=f"queued-{i}")
        req.image = inline(stamp_sec=10 + i)
        calls.append(service.call_async(req))
    wait_diag(diags, f"queue_depth {queued}", lambda v: v["queue_depth"] == str(queued))
    return action, running, calls


def test_kill_9_of_the_inference_process_answers_every_call_and_the_node_restarts_it(
        processes, ros_client, long_checkpoint):
    """A goal decoding, two service calls queued behind it; kill -9 of the inference process:
    all three get the error result naming the signal, /diagnostics counts the restart, and the
    next call is answered by the new process once it has loaded the model."""
    from action_msgs.msg import GoalStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_client import wait_future

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(500))
    node = start_node(processes, ros_client, long_checkpoint, max_new_tokens=LONG_WORDS + 50,
                      stats_period=0.5)
    (model,) = inference_processes(node.pid)
    assert model.nice() == 10  # inference_nice: the node's intake goes first
    # Both calls wait while the goal holds the only process: the kill lands during a request.
    action, running, queued = decoding_with_queue(ros_client, diags, 2)
    model.kill()

    result = wait_future(running.get_result_async(), 60)
    assert result.status == GoalStatus.STATUS_ABORTED
    assert result.result.result.error == DIED
    for i, future in enumerate(queued):
        res = wait_future(future, 60).result
        assert not res.success and res.error == DIED and res.request_id == f"queued-{i}"
        assert res.header.stamp.sec == 10 + i
    values = wait_diag(diags, "the restart", lambda v: v["inference_restarts"] == "1")
    assert values["inference_last_failure"] == DIED

    # The next request waits for the reload and succeeds on the new process.
    again = wait_future(action.send_goal_async(goal(3)), 60)
    final = wait_future(again.get_result_async(), 300)
    assert final.status == GoalStatus.STATUS_SUCCEEDED, final.result.result.error
    assert final.result.result.answer.endswith(f"w{LONG_WORDS - 1}")
    (new_model,) = inference_processes(node.pid)
    assert new_model.pid != model.pid
    values = wait_diag(diags, "the new process serving",
                       lambda v: f"pid {new_model.pid} ready" in v["inference_processes"])
    assert values["inference_restarts"] == "1"
    assert node.poll() is None
    out = processes.output(node)
    assert f"pid {model.pid}): {DIED}" in out and "serves again after restart 1" in out


def test_a_frozen_inference_process_is_killed_and_every_call_answered(
        processes, ros_client, long_checkpoint):
    """SIGSTOP of the inference process while a goal decodes and a call waits behind it (the
    process lives on, silent: a hang as the node sees it). With inference_stall_timeout set
    live to 5 s, both are answered with the stall reason, the process is killed and replaced,
    and the next goal succeeds."""
    import psutil
    from action_msgs.msg import GoalStatus
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_client import wait_future

    diags = ros_client.subscribe(DiagnosticArray, "/diagnostics", ros_client.reliable(500))
    node = start_node(processes, ros_client, long_checkpoint, max_new_tokens=LONG_WORDS + 50,
                      stats_period=0.5)
    set_ok(ros_client, inference_stall_timeout=5.0)  # live: the model stays loaded
    (model,) = inference_processes(node.pid)
    action, running, (queued,) = decoding_with_queue(ros_client, diags, 1)
    model.suspend()

    result = wait_future(running.get_result_async(), 120)
    assert result.status == GoalStatus.STATUS_ABORTED
    error = result.result.result.error
    assert error.startswith("inference process stalled: no sign of life for "), error
    assert error.endswith("(inference_stall_timeout 5 s); killed it, restarting"), error
    res = wait_future(queued, 60).result
    assert not res.success and res.error == error and res.request_id == "queued-0"
    model.wait(60)  # killed while stopped (the node reaps it; raises if it lives on)
    values = wait_diag(diags, "the restart", lambda v: v["inference_restarts"] == "1")
    assert values["inference_last_failure"] == error

    again = wait_future(action.send_goal_async(goal(3)), 60)
    final = wait_future(again.get_result_async(), 300)
    assert final.status == GoalStatus.STATUS_SUCCEEDED, final.result.result.error
    (new_model,) = inference_processes(node.pid)
    assert new_model.pid != model.pid and not psutil.pid_exists(model.pid)
    assert node.poll() is None


def test_two_inference_processes_answer_two_cameras_at_the_same_time(
        processes, ros_client, long_checkpoint):
    """devices [cpu, cpu]: a goal per camera; each one's decoding starts before the other's
    ends (one model would decode one answer after the other). Then continuous mode on both
    cameras keeps both processes working (each camera pinned to one)."""
    import psutil
    from action_msgs.msg import GoalStatus
    from ros_client import wait_future
    from sensor_msgs.msg import Image
    from stamp_ros.msg import Segmentation
    from std_msgs.msg import String

    node = start_node(processes, ros_client, long_checkpoint, devices="['cpu', 'cpu']",
                      cameras="['front', 'wrist']", max_new_tokens=LONG_WORDS + 50)
    models = inference_processes(node.pid)
    assert len(models) == 2
    action = ready_action_client(ros_client)
    order: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(camera: str):
        def on_feedback(msg: Any) -> None:
            with lock:
                order.append((camera, msg.feedback.stage))
        return on_feedback

    handles = {cam: wait_future(action.send_goal_async(goal(i, cam),
                                                       feedback_callback=record(cam)), 60)
               for i, cam in enumerate(("front", "wrist"))}
    results = {cam: wait_future(h.get_result_async(), 300) for cam, h in handles.items()}
    for cam, res in results.items():
        assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.result.error
        assert res.result.result.header.frame_id == cam
    decode = {cam: [i for i, (c, s) in enumerate(order) if c == cam and s == "decode"]
              for cam in ("front", "wrist")}
    assert decode["front"] and decode["wrist"], order[:20]
    assert decode["wrist"][0] < decode["front"][-1] and decode["front"][0] < decode["wrist"][-1], (
        "the two answers were decoded one after the other")

    # Continuous mode: each camera's frames go to its own process.
    set_ok(ros_client, mode="continuous", max_new_tokens=8, reanswer_every=1)
    before = [m.cpu_times() for m in models]
    results = {cam: ros_client.subscribe(Segmentation, f"/stamp_node/{cam}/result")
               for cam in ("front", "wrist")}
    pubs = {cam: ros_client.publisher(Image, f"/{cam}/image") for cam in ("front", "wrist")}
    queries = {cam: ros_client.publisher(String, f"/{cam}/query") for cam in ("front", "wrist")}
    for pub in (*pubs.values(), *queries.values()):
        ros_client.wait_for_subscribers(pub)
    for cam in ("front", "wrist"):
        queries[cam].publish(String(data="segment the square"))
    from node_harness import wait_output

    wait_output(processes, node, "tracking 'segment the square'", count=2)
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            for cam in ("front", "wrist"):
                pubs[cam].publish(image_msg(make_frame(96, 64, seed=i % 3), stamp_sec=100 + i,
                                            frame_id=cam))
            stop.wait(0.1)  # the cameras' rate

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        for cam in ("front", "wrist"):
            got = results[cam].wait_for(3, timeout=120)
            assert all(r.success and r.header.frame_id == cam for r in got), \
                [r.error for r in got]
    finally:
        stop.set()
        streamer.join(timeout=10)
    after = [m.cpu_times() for m in models]
    work = [(a.user + a.system) - (b.user + b.system) for a, b in zip(after, before,
                                                                    strict=True)]
    assert all(w > 0.05 for w in work), f"CPU seconds per inference process: {work}"
    assert all(isinstance(m, psutil.Process) and m.is_running() for m in models)
    assert node.poll() is None


def test_deactivate_ends_the_process_and_the_node_memory_stays_bounded(
        processes, ros_client, checkpoint):
    """Lifecycle cycles with the default free_on_deactivate: the inference process is gone
    while inactive and after cleanup, the node's own memory does not grow; with
    free_on_deactivate false the same process (the same model) serves again at once."""
    from lifecycle_msgs.msg import Transition

    node = start_node(processes, ros_client, checkpoint)
    segment = Caller(ros_client)

    def ask(stamp: int) -> None:
        res = segment(image=inline(stamp_sec=stamp))
        assert res.success, res.error

    ask(1)
    node_rss = [rss_mb(node.pid)]
    tree_rss = [tree_rss_mb(node.pid)]
    pids = []
    for cycle in range(4):
        (model,) = inference_processes(node.pid)
        pids.append(model.pid)
        assert change_state(ros_client, Transition.TRANSITION_DEACTIVATE)
        model.wait(30)
        assert inference_processes(node.pid) == []
        if cycle % 2:  # every other cycle also through unconfigured
            assert change_state(ros_client, Transition.TRANSITION_CLEANUP)
            assert get_state(ros_client) == "unconfigured"
            assert change_state(ros_client, Transition.TRANSITION_CONFIGURE)
        res = segment(image=inline(stamp_sec=50 + cycle))
        assert not res.success and "inactive" in res.error
        assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
        ask(10 + cycle)
        node_rss.append(rss_mb(node.pid))
        tree_rss.append(tree_rss_mb(node.pid))
    assert len(set(pids)) == 4, "each activation starts a new inference process"
    print(f"\n[lifecycle] node RSS {', '.join(f'{mb:.0f}' for mb in node_rss)} MB; with its "
          f"inference process {', '.join(f'{mb:.0f}' for mb in tree_rss)} MB")
    assert max(node_rss) - node_rss[0] < 50, node_rss
    assert max(tree_rss) - tree_rss[0] < 100, tree_rss

    # free_on_deactivate false: deactivate keeps the process, activate reuses it.
    set_ok(ros_client, free_on_deactivate=False)
    (model,) = inference_processes(node.pid)
    assert change_state(ros_client, Transition.TRANSITION_DEACTIVATE)
    assert [p.pid for p in inference_processes(node.pid)] == [model.pid]
    res = segment(image=inline(stamp_sec=90))
    assert not res.success and "inactive" in res.error
    assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
    ask(91)
    assert [p.pid for p in inference_processes(node.pid)] == [model.pid]
    # cleanup ends it whatever free_on_deactivate says.
    assert change_state(ros_client, Transition.TRANSITION_DEACTIVATE)
    assert change_state(ros_client, Transition.TRANSITION_CLEANUP)
    model.wait(30)
    assert inference_processes(node.pid) == []
    assert node.poll() is None
