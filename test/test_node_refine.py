"""The node with ``refine:=sam``: a tiny random SAM built from segment-anything's classes.

A SAM ``.pth`` that carries code is refused (``weights_only=True``): the node stays inactive
and answers with an error naming the reason, and the code never runs. With a real (tiny) SAM
state dict set afterwards, ``activate`` loads it and the node's masks are full-size, are not
the coarse STAMP masks, and are exactly what the engine's refiner gives offline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feature_helpers import (
    Caller,
    change_state,
    get_state,
    inline,
    make_test_checkpoint,
    mask_bytes,
    set_params,
    wait_state,
)
from node_harness import SMALL_PIXELS, make_frame, node_args, wait_output
from thread_budget import NODE_THREADS, torch_threads

from stamp_ros.testing.sam import make_test_sam

pytestmark = pytest.mark.ros

ANSWER = "Sure, it is here: <|seg|>"
QUERY = "segment the square"


class _Payload:
    """Pickles to ``open(marker, "w")``: a plain pickle load creates the file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_refine_sam_in_the_node(processes, ros_client, tmp_path):
    from lifecycle_msgs.msg import Transition

    from stamp_ros.engine.segmenter import StampSegmenter

    ckpt = make_test_checkpoint(tmp_path / "stamp-tiny", seed=0, answer=ANSWER)
    sam = make_test_sam(tmp_path / "tiny_sam.pth")
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({**torch.load(sam, weights_only=True), "extra": _Payload(marker)}, evil)

    node = processes.start(*node_args(ckpt, refine="sam", sam_checkpoint=str(evil)),
                           name="node")
    wait_output(processes, node, "could not be loaded", timeout=120)
    wait_state(ros_client, processes, node, "inactive")
    segment = Caller(ros_client)
    rgb = make_frame()
    res = segment(QUERY, image=inline(rgb, stamp_sec=1))
    assert not res.success and "weights_only=True" in res.error, res.error
    assert not marker.exists(), "the pickle's code ran"

    (ok,) = set_params(ros_client, sam_checkpoint=str(sam))
    assert ok.successful, ok.reason
    assert change_state(ros_client, Transition.TRANSITION_ACTIVATE)
    assert get_state(ros_client) == "active"
    res = segment(QUERY, image=inline(rgb, stamp_sec=2))
    assert res.success, res.error
    assert len(res.instances) == 1
    mask_msg = res.instances[0].mask
    h, w = rgb.shape[:2]
    assert (mask_msg.height, mask_msg.width, mask_msg.encoding) == (h, w, "mono8")
    got = np.frombuffer(mask_bytes(res.instances[0]), np.uint8).reshape(h, w)

    options = dict(device="cpu", min_pixels=SMALL_PIXELS, max_pixels=SMALL_PIXELS,
                   max_new_tokens=24)
    with torch_threads(NODE_THREADS):  # the node's inference process's budget
        coarse = StampSegmenter.from_pretrained(str(ckpt), **options).segment(rgb, QUERY)
        refined = StampSegmenter.from_pretrained(
            str(ckpt), refine="sam", sam_checkpoint=str(sam), **options).segment(rgb, QUERY)
    assert res.answer == coarse.text == refined.text
    assert np.array_equal(got > 0, refined.instances[0].mask > 0), "node != engine refiner"
    assert not np.array_equal(got > 0, coarse.instances[0].mask > 0), "mask was not refined"
    assert node.poll() is None
