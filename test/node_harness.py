"""Helpers for the node tests: a tiny checkpoint, frames, and a started node process."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

NODE_MODULE = ["-m", "stamp_ros.cli.run_node", "--ros-args"]
SMALL_PIXELS = 16 * 28 * 28
"""Node tests keep the image small (a 4x4-ish merged grid) so the tiny model is fast on CPU."""
FAULTS_DIR = Path(__file__).resolve().parent / "faults"


def fault_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a node or inference process whose engine fails on
    queries naming a fault (``[[raise]]``, ``[[crash]]``, ...: test/faults/injected_faults.py).
    The package itself has no such hook: Python loads test/faults/sitecustomize.py because the
    folder is on the child's PYTHONPATH, and the child's own children inherit it."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(FAULTS_DIR), env.get("PYTHONPATH", "")) if p)
    env["STAMP_ROS_FAULT_INJECTION"] = "1"
    return env


def node_args(model: str | Path, **params: Any) -> list[str]:
    base = {
        "model": str(model),
        "device": "cpu",
        "min_pixels": SMALL_PIXELS,
        "max_pixels": SMALL_PIXELS,
        "stats_period": 0.0,
        "max_new_tokens": 24,
        # Tests publish single frames right after the subscription matched: a best-effort
        # reader (the node's default) can lose such a frame before it has matched the writer
        # (no repair without reliability). Streams lose nothing; tests of the default set
        # image_reliability explicitly (test_node_inputs.py, test_node_features.py).
        "image_reliability": "reliable",
    }
    base.update(params)
    args = list(NODE_MODULE)
    for key, value in base.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["-p", f"{key}:={value}"]
    return args


def make_frame(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    img[height // 4: height // 2, width // 4: width // 2] = (250, 30, 30)
    return img


def image_msg(rgb: np.ndarray, stamp_sec: int = 1234, frame_id: str = "cam",
              stamp_nanosec: int = 5678):
    from stamp_ros.ros.kit import rgb_to_image_msg

    msg = rgb_to_image_msg(rgb)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_sec, stamp_nanosec
    return msg


class PacedCamera:
    """A test's camera on ``/image``: frame i is :meth:`message` (i), published at most once per
    ``period`` seconds (pacing a camera, not synchronising: the tests wait for what the node
    publishes)."""

    def __init__(self, ros_client, period: float = 1.0 / 30) -> None:
        from sensor_msgs.msg import Image

        self.period = period
        self.pub = ros_client.publisher(Image, "/image")
        ros_client.wait_for_subscribers(self.pub)
        self.sent = 0
        self._last = 0.0

    def message(self, i: int) -> Any:
        raise NotImplementedError

    def publish(self) -> int:
        """The next frame; returns its index."""
        wait = self._last + self.period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        i = self.sent
        self.pub.publish(self.message(i))
        self._last = time.monotonic()
        self.sent += 1
        return i


def wait_ready(client, processes, proc, timeout: float = 300.0) -> None:
    """The node is ready when its service answers (it is created once configured) and its
    lifecycle state is active. One GetState client is asked again and again: the node drops a
    response to a client whose reader it has not matched yet, and on a slow machine a fresh
    client per attempt can lose every answer."""
    from lifecycle_msgs.srv import GetState
    from ros_client import wait_future

    get_state = client.node.create_client(GetState, "/stamp_node/get_state")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError("node exited early:\n" + processes.output(proc)[-4000:])
            if get_state.wait_for_service(timeout_sec=1.0):
                try:
                    state = wait_future(get_state.call_async(GetState.Request()), 5.0)
                    if state.current_state.label == "active":
                        return
                except TimeoutError:
                    pass
            time.sleep(0.2)  # between polls of the node's state, not a synchronisation
        raise AssertionError("node not active in time:\n" + processes.output(proc)[-4000:])
    finally:
        client.node.destroy_client(get_state)


def start_node(processes, ros_client, checkpoint: str | Path, env: dict[str, str] | None = None,
               **params: Any):
    """The node in its own process with ``params`` (see node_args), once it is active."""
    proc = processes.start(*node_args(checkpoint, **params), name="node", env=env)
    wait_ready(ros_client, processes, proc)
    return proc


def wait_output(processes, proc, text: str, timeout: float = 60.0, count: int = 1) -> str:
    """Wait until the process's output holds ``text`` at least ``count`` times; return the
    output. Fails at once when the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        out = processes.output(proc)
        if out.count(text) >= count:
            return out
        if proc.poll() is not None:
            raise AssertionError(f"process exited before {text!r}:\n{out[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} after {timeout} s:\n{out[-4000:]}")
        time.sleep(0.05)  # polling the log file between checks, not a synchronisation


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


INFERENCE_MODULE = "stamp_ros.inference.process"


def inference_processes(pid: int) -> list:
    """The node's inference processes (psutil.Process), oldest first."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if INFERENCE_MODULE in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return sorted(found, key=lambda p: p.create_time())


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the node and every process it started (its inference processes), in
    MiB: where the model's memory is, wherever it lives."""
    import psutil

    total = 0.0
    node = psutil.Process(pid)
    for proc in (node, *node.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20

def make_long_answer_checkpoint(directory: Path, words: int) -> Path:
    """A test checkpoint that writes ``words`` tokens and then one ``<|seg|>`` for any input.

    Decoding a long answer is a fixed amount of work per request, far more than a camera frame
    period or a cancel round trip on any CPU: tests that need a request to be busy rely on that
    instead of on this machine being slow. (The scripted answer needs one control dimension
    per token, hence the wider model.)"""
    from stamp_ros.testing.checkpoint import TinyShape, make_test_checkpoint

    answer = " ".join(f"w{i}" for i in range(words)) + " <|seg|>"
    hidden = 64 * max(1, -(-2 * (words + 8) // 64))
    shape = TinyShape(hidden_size=hidden, intermediate_size=256)
    return make_test_checkpoint(directory, seed=0, answer=answer, shape=shape)



def _ping(msg: Any) -> Any:
    """A request the node answers at once on any state: end a conversation that never was."""
    msg.conversation, msg.end_conversation = "__ping__", True
    return msg


def ready_action_client(ros_client, name: str = "/stamp_node/segment",
                        timeout: float = 60.0) -> Any:
    """A Segment action client whose every direction is matched: goal response, feedback and
    result. ``wait_for_server`` only shows that *this* side sees the server; a server that has
    not yet matched the client's readers drops its first answers ("failed to send response"),
    so ping until one goal comes back whole."""
    from ros_client import wait_future
    from stamp_ros.action import Segment as SegmentAction

    client = ros_client.action_client(SegmentAction, name)
    assert client.wait_for_server(timeout_sec=timeout), f"no action server {name}"
    deadline = time.monotonic() + timeout
    while True:
        queued = threading.Event()
        try:
            handle = wait_future(client.send_goal_async(
                _ping(SegmentAction.Goal()), feedback_callback=lambda _m, q=queued: q.set()),
                2.0)
            if queued.wait(2.0):
                wait_future(handle.get_result_async(), 2.0)
                return client
        except TimeoutError:
            pass
        assert time.monotonic() < deadline, f"action {name} never answered a ping"


def ready_service_client(ros_client, name: str = "/stamp_node/segment",
                         timeout: float = 60.0) -> Any:
    """A Segment service client the node has matched both ways (see ready_action_client)."""
    from ros_client import wait_future
    from stamp_ros.srv import Segment

    client = ros_client.node.create_client(Segment, name)
    assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_future(client.call_async(_ping(Segment.Request())), 2.0)
            return client
        except TimeoutError:
            assert time.monotonic() < deadline, f"service {name} never answered a ping"
