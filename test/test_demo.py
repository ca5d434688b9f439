"""README command 1, `stamp-ros demo`, as a user on an offline machine runs it.

The hub is made unreachable for sure (its endpoint is a closed port on localhost, the cache is
empty), so the demo must say so in one line, fall back to a generated tiny checkpoint with
random weights, run the real node over ROS 2, and write the overlay and the JSON it promises,
every output labelled as random weights.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from node_harness import fault_env
from PIL import Image

from stamp_ros.cli.demo import DEFAULT_QUERY, RANDOM_LABEL, default_photo
from stamp_ros.engine.defaults import DEFAULT_MODEL

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_offline_labels_random_weights_and_writes_overlay_and_json(ros_env, tmp_path):
    out = tmp_path / "demo"
    slow = tmp_path / "slow-load"  # the node's model takes 5 s more to load, as real ones do:
    slow.write_text("5")  # the demo waits for it (the node is inactive until it is loaded)
    env = dict(fault_env(ros_env), HF_HOME=str(tmp_path / "hf-home"),
               HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
               STAMP_ROS_FAULT_LOAD_SLOW=str(slow))
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-m", "stamp_ros.cli", "demo", "--out-dir", str(out),
                           "--device", "cpu", "--timeout", "600"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    node_log = (out / "node.log").read_text() if (out / "node.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + node_log[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[demo]")]

    # One line says why: the default model is unreachable, random weights are used instead.
    fallback = [line for line in lines if "not reachable" in line]
    assert len(fallback) == 1, lines
    assert DEFAULT_MODEL in fallback[0] and "RANDOM weights" in fallback[0]
    ckpt = out / "tiny-random-checkpoint"
    assert str(ckpt) in fallback[0] and (ckpt / "config.json").is_file()

    # Every output names the random weights.
    answer = [line for line in lines if line.startswith("[demo] answer:")]
    written = [line for line in lines if line.startswith("[demo] overlay written")]
    assert len(answer) == 1 and RANDOM_LABEL in answer[0], lines
    assert len(written) == 1 and RANDOM_LABEL in written[0], lines

    result = json.loads((out / "result.json").read_text())
    assert result["random_weights"] is True and result["success"] is True, result
    assert result["model"] == str(ckpt) and result["query"] == DEFAULT_QUERY
    assert result["answer"] == "Sure, it is here:" and result["answer"] in answer[0]
    assert result["frame"]["frame_id"] == "demo_camera" and result["frame"]["stamp"][0] > 0
    (inst,) = result["instances"]
    assert inst["area"] > 0 and 0.0 <= inst["score"] <= 1.0

    overlay_path = out / "overlay-random-weights.png"
    assert result["overlay_png"] == str(overlay_path)
    assert not (out / "overlay.png").exists()  # the unlabelled name is for real weights only
    overlay = np.asarray(Image.open(overlay_path).convert("RGB"))
    photo = np.asarray(Image.open(default_photo()).convert("RGB"))
    assert overlay.shape == photo.shape
    # The label: a red band across the bottom rows, white text on it.
    bottom = overlay[-8:].reshape(-1, 3).astype(int)
    assert (np.abs(bottom - [200, 0, 0]).max(axis=1) <= 2).mean() > 0.5
    assert (bottom.min(axis=1) > 200).any()
    # The mask is drawn: a large part of the photo above the label is tinted.
    changed = (overlay[:-30] != photo[:-30]).any(axis=2).mean()
    assert changed > 0.05, changed
