"""A model load that hangs, seen from outside over real ROS 2: activate does not wait for ever.

The node's inference_stall_timeout watches the inference process while it loads the model too
(not only while it decodes): a process that blocks in loading, silent, is killed after the
timeout, activate fails with the reason, the node stays inactive and answers requests with it.
The hang is injected from the test tree (test/faults: STAMP_ROS_FAULT_LOAD_HANG).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from feature_helpers import Caller, inline, wait_state
from node_harness import fault_env, inference_processes, node_args, wait_output

pytestmark = pytest.mark.ros

STALL_S = 5.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny",
                                answer="Sure, it is here: <|seg|>")


def test_a_load_that_hangs_fails_activate_with_the_reason(processes, ros_client, checkpoint):
    env = fault_env(dict(processes.env, STAMP_ROS_FAULT_LOAD_HANG="1"))
    node = processes.start(*node_args(checkpoint, inference_stall_timeout=STALL_S),
                           name="node", env=env)
    out = wait_output(processes, node, "could not be loaded", timeout=180)
    wait_state(ros_client, processes, node, "inactive")
    (line,) = [x for x in out.splitlines() if "could not be loaded" in x]
    assert "inference process stalled while loading the model: no sign of life for " in line
    assert line.endswith(f"(inference_stall_timeout {STALL_S:g} s); killed it"), line
    assert inference_processes(node.pid) == []  # killed, not left hanging

    res = Caller(ros_client)(image=inline(stamp_sec=1), timeout=60)
    assert not res.success
    assert "inference process stalled while loading the model" in res.error, res.error
    assert node.poll() is None
