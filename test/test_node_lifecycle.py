"""The node's lifecycle, observed from outside (issue 11, sections 2 and 3): ``deactivate`` frees
the model, ``activate`` loads it again, reload parameters take effect through "deactivate, set,
activate", memory stays bounded over many cycles, and a model the hub cannot give is one log
line and error results until a usable model is activated.

The memory test uses a checkpoint of a few hundred MB, so that the drop on ``deactivate`` is far
above the noise of resident memory. The model lives in the node's inference process: memory is
measured over the node and its children, and deactivate must end that process.
"""

from __future__ import annotations

import re

import pytest
from feature_helpers import (
    Caller,
    change_state,
    checkpoint_mb,
    get_state,
    inline,
    make_test_checkpoint,
    set_ok,
    set_params,
    wait_state,
)
from node_harness import (
    SMALL_PIXELS,
    inference_processes,
    make_frame,
    node_args,
    rss_mb,
    start_node,
    tree_rss_mb,
    wait_output,
)

pytestmark = pytest.mark.ros

ANSWER = "Sure, it is here: <|seg|>"
CYCLES = 3
"""deactivate/activate cycles after the first one, for the memory-growth bound."""


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    """~230 MB of fp32 weights (8 layers, hidden 512, MLP 4096): the scripted answer, a model
    large enough that loading and freeing it is unmistakable in the process's RSS."""
    from stamp_ros.testing.checkpoint import TinyShape

    shape = TinyShape(hidden_size=512, intermediate_size=4096, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8)
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-big", seed=0,
                                answer=ANSWER, shape=shape, calibrate=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "stamp-tiny", seed=0,
                                answer=ANSWER)


def expected_grid(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    from stamp_ros.engine.preprocess import smart_resize

    h, w = smart_resize(height, width, 28, min_pixels, max_pixels)
    return h // 28, w // 28


def test_deactivate_frees_the_model_and_reload_parameters_apply_on_activate(
        processes, ros_client, big_checkpoint):
    from lifecycle_msgs.msg import Transition

    size = checkpoint_mb(big_checkpoint)
    assert size > 200, size
    node = start_node(processes, ros_client, big_checkpoint)
    segment = Caller(ros_client)
    rgb = make_frame(320, 240, seed=5)
    large = 4 * SMALL_PIXELS
    small_grid = expected_grid(240, 320, SMALL_PIXELS, SMALL_PIXELS)
    large_grid = expected_grid(240, 320, SMALL_PIXELS, large)
    assert small_grid != large_grid

    def ask(stamp: int):
        res = segment(image=inline(rgb, stamp_sec=stamp))
        assert res.success, res.error
        return res

    res = ask(1)
    assert (res.grid_height, res.grid_width) == small_grid
    rss_active = tree_rss_mb(node.pid)
    node_active = rss_mb(node.pid)
    (model_proc,) = inference_processes(node.pid)

    # A reload parameter is refused while active, and the model in use is unchanged.
    (refused,) = set_params(ros_client, max_pixels=large)
    assert not refused.successful and "deactivate" in refused.reason

    assert change_state(ros_client, Transition.TRANSITION_DEACTIVATE)
    assert get_state(ros_client) == "inactive"
    assert not model_proc.is_running() and inference_processes(node.pid) == []
    rss_inactive = tree_rss_mb(node.pid)
    res = segment(image=inline(rgb, stamp_sec=2))
    assert not res.success and "inactive" in res.error, res.error
    assert rss_active - rss_inactive > 0.7 * size, (
        f"deactivate freed {rss_active - rss_inactive:.0f} MB of a {size:.0f} MB model "
        f"(RSS {rss_active:.0f} -> {rss_inactive:.0f} MB)")

    set_ok(ros_client, max_pixels=large)  # inactive: accepted
    assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
    res = ask(3)
    assert (res.grid_height, res.grid_width) == large_grid, "max_pixels set while inactive"
    rss_reloaded = tree_rss_mb(node.pid)
    assert node_active - rss_mb(node.pid) < size / 4, "the model is in the node's own process"
    assert rss_reloaded - rss_inactive > 0.7 * size, (
        f"activate loaded only {rss_reloaded - rss_inactive:.0f} MB of a {size:.0f} MB model")

    # Bounded memory over many cycles: a model (or its KV/prefix caches) kept alive by a cycle
    # would add ~size MB each time; allow a fraction of one model for allocator noise.
    after = []
    for i in range(CYCLES):
        assert change_state(ros_client, Transition.TRANSITION_DEACTIVATE)
        assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
        ask(10 + i)
        after.append(tree_rss_mb(node.pid))
    growth = max(after) - rss_reloaded
    print(f"\n[lifecycle] model {size:.0f} MB; RSS active {rss_active:.0f}, inactive "
          f"{rss_inactive:.0f}, reloaded {rss_reloaded:.0f}, after {CYCLES} more cycles "
          f"{', '.join(f'{mb:.0f}' for mb in after)} MB")
    assert growth < 0.3 * size, (
        f"RSS grew {growth:.0f} MB over {CYCLES} deactivate/activate cycles "
        f"({rss_reloaded:.0f} -> {after} MB; model {size:.0f} MB)")
    assert node.poll() is None


def test_unreachable_hub_model_is_one_log_line_and_errors_until_a_local_model(
        processes, ros_client, checkpoint, tmp_path):
    from lifecycle_msgs.msg import Transition

    missing = "stamp-tests/not-on-this-machine"
    env = dict(processes.env, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    node = processes.start(*node_args(missing), name="node", env=env)
    wait_output(processes, node, "could not be loaded", timeout=120)
    wait_state(ros_client, processes, node, "inactive")
    out = processes.output(node)
    naming = [line for line in out.splitlines() if missing in line]
    assert len(naming) == 1, "expected one log line naming the model:\n" + "\n".join(naming)
    assert re.search(r"ERROR", naming[0]) and "local path" in naming[0], naming[0]

    segment = Caller(ros_client)
    for stamp in (1, 2):
        res = segment(image=inline(stamp_sec=stamp))
        assert not res.success
        assert missing in res.error and "local path" in res.error, res.error

    # Inactive: the model may be changed, then activate loads it and the node serves.
    (res,) = set_params(ros_client, model=str(checkpoint))
    assert res.successful, res.reason
    assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
    assert get_state(ros_client) == "active"
    res = segment(image=inline(stamp_sec=3))
    assert res.success, res.error
    assert res.model == str(checkpoint) and res.answer == "Sure, it is here:"
