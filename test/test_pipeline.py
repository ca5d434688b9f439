"""The request pipeline's rules, called directly (no executor, no DDS): what a request is
answered on, what it is answered with, and what is published.

Real parts: a tiny real STAMP checkpoint, the real message classes, the real frame cache,
conversation store and answer reuse; only the publishers are recorders.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("stamp_ros.msg")

from node_harness import SMALL_PIXELS, image_msg, make_frame

from stamp_ros.inference.scheduler import Job
from stamp_ros.pipeline.conversations import ConversationStore
from stamp_ros.pipeline.params import BY_NAME
from stamp_ros.ros.camera import OUTPUTS, Camera, SerializedImage
from stamp_ros.ros.diagnostics import Stats
from stamp_ros.ros.objects3d import ObjectLifter
from stamp_ros.ros.requests import RequestPipeline

ANSWER = "Sure, it is here: <|seg|>"


class Recorder:
    """Stands in for a publisher: keeps what was published."""

    def __init__(self, subscribers: int = 0) -> None:
        self.messages: list[Any] = []
        self.subscribers = subscribers

    def publish(self, msg: Any) -> None:
        self.messages.append(msg)

    def get_subscription_count(self) -> int:
        return self.subscribers


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Any:
    from stamp_ros.engine.segmenter import StampSegmenter
    from stamp_ros.testing.checkpoint import make_test_checkpoint

    path = make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", answer=ANSWER)
    return StampSegmenter.from_pretrained(str(path), device="cpu", min_pixels=SMALL_PIXELS,
                                          max_pixels=SMALL_PIXELS, max_new_tokens=24)


def make_pipeline(segmenter: Any, **params: Any) -> tuple[RequestPipeline, Camera, dict]:
    values = {name: spec.default for name, spec in BY_NAME.items()}
    values.update(model="tiny", frame_timeout=0.0)
    values.update(params)
    pipeline = RequestPipeline(values.__getitem__, logging.getLogger("test_pipeline"),
                               ObjectLifter(node=None), Stats(),
                               ConversationStore(lambda: (8, 4, 300.0)))
    pipeline.segmenter, pipeline.publishing = segmenter, True
    camera = Camera("")
    camera.outputs = {name: Recorder() for name in OUTPUTS}
    return pipeline, camera, values


def run(pipeline: RequestPipeline, job: Job) -> Any:
    answers: list[Any] = []
    job.done = answers.append
    reason = pipeline.refusal(job, serving=True)
    if reason:
        pipeline.reject(job, reason)
    else:
        pipeline.handle(job)
    assert len(answers) == 1, "every request is answered exactly once"
    return answers[0]


def job(query: str = "segment the square", camera: Camera | None = None, **fields: Any) -> Job:
    return Job(request_id="r1", query=query, source=fields.pop("source", "service"),
               asked_at=time.monotonic(), camera=camera, **fields)


def test_inline_image_is_answered_and_published_with_its_header(segmenter):
    pipeline, camera, _ = make_pipeline(segmenter)
    res = run(pipeline, job(camera=camera, image_msg=image_msg(make_frame(96, 64),
                                                               stamp_sec=7)))
    assert res.success, res.error
    assert res.header.stamp.sec == 7 and res.frame_age_ms == 0.0 and not res.answer_reused
    assert res.instances[0].mask.width == 96 and res.total_ms > 0
    out = camera.outputs
    assert out["result"].messages == [res] and out["answer"].messages[0].data == res.answer
    assert out["mask"].messages[0].header == res.header
    assert out["overlay"].messages == [], "no overlay while nobody subscribes"
    out["overlay"].subscribers = 1
    run(pipeline, job(camera=camera, image_msg=image_msg(make_frame(96, 64))))
    assert len(out["overlay"].messages) == 1


def test_camera_frame_is_decoded_on_use_and_its_age_reported(segmenter):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    pipeline, camera, _ = make_pipeline(segmenter, max_frame_age=5.0)
    stored = SerializedImage(serialize_message(image_msg(make_frame(), stamp_sec=42)), Image)
    assert stored.stamp_ns() == 42 * 10**9 + 5678
    camera.frames.put(stored)
    res = run(pipeline, job(camera=camera))
    assert res.success and res.header.stamp.sec == 42, res.error
    assert 0.0 <= res.frame_age_ms <= 5000.0


def test_unanswerable_requests_get_reasons_and_nothing_runs(segmenter):
    pipeline, camera, _ = make_pipeline(segmenter)
    assert "no camera frame" in run(pipeline, job(camera=camera)).error
    assert run(pipeline, job("   ", camera=camera)).error == "empty query"
    assert "too long" in run(pipeline, job("x" * 5000, camera=camera)).error
    cancelled = job(camera=camera, image_msg=image_msg(make_frame()))
    cancelled.cancelled = lambda: True
    assert "cancelled before it started" in run(pipeline, cancelled).error
    bad = image_msg(make_frame())
    bad.encoding = "weird42"
    res = run(pipeline, job(camera=camera, image_msg=bad))
    assert not res.success and "weird42" in res.error and res.header.stamp.sec == 1234
    pipeline.segmenter, pipeline.unavailable_reason = None, "the node is inactive"
    res = run(pipeline, job(camera=camera, image_msg=image_msg(make_frame())))
    assert res.error == "the node is inactive"
    assert [m.success for m in camera.outputs["result"].messages] == [False] * 6
    pipeline.publishing = False  # after cleanup: answered, not published
    run(pipeline, job(camera=camera, image_msg=image_msg(make_frame())))
    assert len(camera.outputs["result"].messages) == 6


def test_continuous_frames_reuse_the_answer_between_regenerations(segmenter):
    pipeline, camera, _ = make_pipeline(segmenter, reanswer_every=3)
    reused = []
    for i in range(7):
        frame = camera.frames.put(image_msg(make_frame(seed=i), stamp_sec=i))
        res = run(pipeline, job(camera=camera, frame=frame, source="continuous"))
        assert res.success and res.header.stamp.sec == i, res.error
        reused.append(res.answer_reused)
    assert reused == [False, True, True, False, True, True, False]


def test_a_conversation_keeps_its_frame_and_counts_turns(segmenter):
    pipeline, camera, _ = make_pipeline(segmenter)
    first = run(pipeline, job(camera=camera, conversation="c", image_msg=image_msg(
        make_frame(96, 64), stamp_sec=3)))
    second = run(pipeline, job("and the other one?", camera=camera, conversation="c"))
    assert (first.turn, second.turn) == (1, 2)
    assert second.header.stamp.sec == 3 and second.conversation == "c"
    history = pipeline.conversations.history(pipeline.conversations.get("c"))
    assert history[0][0] == "segment the square" and "<|seg|>" in history[0][1]
    end = pipeline.end_conversation(job("", camera=camera, conversation="c"))
    assert end.success and end.turn == 2 and pipeline.conversations.get("c") is None


def test_masks_match_the_engine_on_the_same_pixels(segmenter):
    pipeline, camera, _ = make_pipeline(segmenter)
    rgb = make_frame(96, 64)
    res = run(pipeline, job(camera=camera, image_msg=image_msg(rgb)))
    direct = segmenter.segment(rgb, "segment the square")
    assert res.answer == direct.text
    for inst, ref in zip(res.instances, direct.instances, strict=True):
        grid = np.frombuffer(bytes(inst.grid), np.uint8).reshape(inst.grid_height,
                                                                 inst.grid_width)
        np.testing.assert_array_equal(grid, ref.grid.astype(np.uint8))


def test_module_has_no_node_or_executor_dependency():
    source = Path(__file__).resolve().parents[1] / "stamp_ros" / "ros" / "requests.py"
    text = source.read_text()
    assert "import rclpy" not in text and "from rclpy" not in text
