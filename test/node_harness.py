"""Helpers for the node tests: a tiny checkpoint, frames, and a started node process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

NODE_MODULE = ["-m", "stamp_ros.run_node", "--ros-args"]
SMALL_PIXELS = 16 * 28 * 28
"""Node tests keep the image small (a 4x4-ish merged grid) so the tiny model is fast on CPU."""


def node_args(model: str | Path, **params: Any) -> list[str]:
    base = {
        "model": str(model),
        "device": "cpu",
        "min_pixels": SMALL_PIXELS,
        "max_pixels": SMALL_PIXELS,
        "stats_period": 0.0,
        "max_new_tokens": 24,
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
    from stamp_ros.ros.convert import rgb_to_image_msg

    msg = rgb_to_image_msg(rgb)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_sec, stamp_nanosec
    return msg


def wait_ready(client, processes, proc, timeout: float = 120.0) -> None:
    """The node is ready when its service answers (it is created once configured) and its
    lifecycle state is active."""
    from lifecycle_msgs.srv import GetState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("node exited early:\n" + processes.output(proc)[-4000:])
        try:
            state = client.call(GetState, "/stamp_node/get_state", GetState.Request(), timeout=5)
            if state.current_state.label == "active":
                return
        except TimeoutError:
            pass
        time.sleep(0.2)
    raise AssertionError("node not active in time:\n" + processes.output(proc)[-4000:])


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

