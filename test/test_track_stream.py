"""The node's tracking layer (stamp_ros.ros.tracking.TrackStream) with the request pipeline,
called directly (no executor, no DDS): grounding on continuous answers, ~/tracks per frame,
the re-grounding rule with answer reuse, the per-frame overlay, a new query.

Real parts: the tiny STAMP checkpoint, the real message classes, frame cache, answer reuse and
tracker; only the publishers are recorders (test_pipeline's).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("stamp_ros.msg")

from node_harness import image_msg
from test_pipeline import job, make_pipeline, run, segmenter  # noqa: F401 (fixture)

from stamp_ros.pipeline.tracking_step import TRACKED_LIFT_PIXELS
from stamp_ros.ros.objects3d import ObjectLifter
from stamp_ros.ros.tracking import TrackStream
from stamp_ros.testing.scenes import PanScene, texture

QUERY = "segment the square"


@pytest.fixture
def tracking(segmenter):  # noqa: F811 (the fixture)
    pipeline, camera, values = make_pipeline(segmenter, mode="continuous", track=True,
                                             reanswer_every=30)
    stream = TrackStream(values.__getitem__, logging.getLogger("test_track_stream"),
                         ObjectLifter(node=None))
    pipeline.tracking = stream
    stream.start()
    camera.track(QUERY)
    stream.reset(camera)
    try:
        yield pipeline, camera, stream, values
    finally:
        stream.stop()


def answer(pipeline, camera, frame):
    res = run(pipeline, job(QUERY, camera=camera, frame=frame, source="continuous"))
    assert res.success, res.error
    return res


def test_answers_ground_frames_get_tracks_and_a_lost_scene_asks_for_a_fresh_answer(tracking):
    pipeline, camera, stream, _ = tracking
    scene = PanScene(velocity=(3.0, 0.0), frames=10, seed=3)
    frames = [camera.frames.put(image_msg(scene.frame(i), stamp_sec=100 + i))
              for i in range(3)]
    stream.process(camera, frames[0])  # before any answer: nothing to publish
    assert camera.outputs["tracks"].messages == []

    first = answer(pipeline, camera, frames[0])
    ids = [inst.track_id for inst in first.instances]
    assert ids and all(ids) and not first.answer_reused
    assert first.model_stamp == first.header.stamp and not first.propagated

    stream.process(camera, frames[1])
    (tracked,) = camera.outputs["tracks"].messages
    assert tracked.header.stamp.sec == 101 and tracked.propagated
    assert tracked.model_stamp.sec == 100 and tracked.query == QUERY
    assert [inst.track_id for inst in tracked.instances] == ids
    assert tracked.answer == first.answer and tracked.request_id == f"t{frames[1].seq}"
    assert tracked.total_ms >= tracked.mask_ms > 0.0

    assert answer(pipeline, camera, frames[1]).answer_reused  # reanswer_every 30: reused

    # A cut to another scene: every track is lost, and the next answer is written afresh.
    cut = camera.frames.put(image_msg(texture(480, 640, seed=77), stamp_sec=200))
    stream.process(camera, cut)
    lost = camera.outputs["tracks"].messages[-1]
    assert lost.header.stamp.sec == 200 and list(lost.instances) == []
    fresh = answer(pipeline, camera, cut)
    assert not fresh.answer_reused
    assert all(inst.track_id not in ids for inst in fresh.instances), "no identity across a cut"


def test_tracking_owns_the_overlay_and_labels_frames(tracking):
    pipeline, camera, stream, values = tracking
    camera.outputs["overlay"].subscribers = 1
    scene = PanScene(velocity=(3.0, 0.0), frames=10, seed=4)
    f0 = camera.frames.put(image_msg(scene.frame(0), stamp_sec=1))
    answer(pipeline, camera, f0)
    assert camera.outputs["overlay"].messages == [], "not the answer's: the frames' overlay"
    f1 = camera.frames.put(image_msg(scene.frame(1), stamp_sec=2))
    stream.process(camera, f1)
    (overlay,) = camera.outputs["overlay"].messages
    assert overlay.header.stamp.sec == 2 and overlay.encoding == "rgb8"
    values["publish_overlay"] = False
    stream.process(camera, camera.frames.put(image_msg(scene.frame(2), stamp_sec=3)))
    assert len(camera.outputs["overlay"].messages) == 1


def test_new_query_forgets_the_tracks_and_ids_go_on(tracking):
    pipeline, camera, stream, values = tracking
    image = PanScene(velocity=(0.0, 0.0), frames=2, seed=5).frame(0)
    f0 = camera.frames.put(image_msg(image, stamp_sec=1))
    old_ids = [inst.track_id for inst in answer(pipeline, camera, f0).instances]
    camera.track("another query")
    stream.reset(camera)
    f1 = camera.frames.put(image_msg(image, stamp_sec=2))
    stream.process(camera, f1)  # the new query has no answer yet: no tracks
    assert camera.outputs["tracks"].messages == []
    stale = run(pipeline, job(QUERY, camera=camera, frame=f1, source="continuous"))
    assert all(inst.track_id == 0 for inst in stale.instances), "an answer to the old query"
    res = run(pipeline, job("another query", camera=camera, frame=f1, source="continuous"))
    new_ids = [inst.track_id for inst in res.instances]
    assert new_ids and min(new_ids) > max(old_ids)
    values["track"] = False  # tracking switched off: the frame is not tracked
    stream.process(camera, camera.frames.put(image_msg(image, stamp_sec=3)))
    assert camera.outputs["tracks"].messages == []
    assert np.all([inst.track_id == 0 for inst in run(pipeline, job(
        "another query", camera=camera, frame=f1, source="continuous")).instances])


def test_tracked_objects_get_3d_from_the_frames_depth(tracking):
    """With aligned depth and CameraInfo every tracked frame's objects carry their 3D: a wall
    2 m away gives centroids at z = 2 m in the frame's optical frame, from a grid of at most
    TRACKED_LIFT_PIXELS of each object's pixels."""
    from sensor_msgs.msg import CameraInfo

    from stamp_ros.testing.images import array_to_image_msg

    pipeline, camera, stream, _ = tracking
    scene = PanScene(velocity=(3.0, 0.0), frames=4, seed=6)
    info = CameraInfo(width=640, height=480)
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    camera.camera_info = info
    frames = []
    for i in range(3):
        msg = image_msg(scene.frame(i), stamp_sec=300 + i)
        depth = array_to_image_msg(np.full((480, 640), 2000, np.uint16), "16UC1", msg.header)
        camera.depth.append(depth)
        frames.append(camera.frames.put(msg))
    answered = answer(pipeline, camera, frames[0])
    stream.process(camera, frames[2])
    (tracked,) = camera.outputs["tracks"].messages
    assert tracked.instances
    for inst in tracked.instances:
        assert inst.has_3d and inst.frame_id_3d == "cam" and inst.num_points > 0
        assert abs(inst.centroid.z - 2.0) < 1e-3
    # every pixel of the answered frame's objects; a grid of at most TRACKED_LIFT_PIXELS of
    # each tracked one (all of them took 260 ms per frame for large objects)
    assert min(inst.num_points for inst in answered.instances) > TRACKED_LIFT_PIXELS
    assert all(inst.num_points <= TRACKED_LIFT_PIXELS for inst in tracked.instances)


def test_answers_across_a_resolution_change_and_a_track_max_side_change_are_successes(
        tracking):
    """An answer in flight while the camera changes resolution, and one in flight while
    ``track_max_side`` changes: both are published as successes (not tracked: track id 0);
    the next answer grounds the tracks again and the frames after it get them at the new
    size. Another scene's object gets a new id; the same object at a new working size is
    re-identified from the track memory."""
    pipeline, camera, stream, values = tracking
    old = PanScene(size=(640, 480), velocity=(3.0, 0.0), frames=10, seed=8)
    new = PanScene(size=(480, 360), velocity=(3.0, 0.0), frames=10, seed=9)
    before = [camera.frames.put(image_msg(old.frame(i), stamp_sec=10 + i)) for i in range(3)]
    stream.process(camera, before[0])
    first = [inst.track_id for inst in answer(pipeline, camera, before[0]).instances]
    assert first and all(first)
    stream.process(camera, before[1])
    stream.process(camera, before[2])

    after = [camera.frames.put(image_msg(new.frame(i), stamp_sec=20 + i)) for i in range(4)]
    stream.process(camera, after[0])  # the tracking thread is at the new size
    late = answer(pipeline, camera, before[2])  # the answer that was in flight
    assert all(inst.track_id == 0 for inst in late.instances)
    fresh = [inst.track_id for inst in answer(pipeline, camera, after[0]).instances]
    assert fresh and all(fresh) and min(fresh) > max(first)
    stream.process(camera, after[1])
    tracked = camera.outputs["tracks"].messages[-1]
    assert tracked.header.stamp.sec == 21
    assert [inst.track_id for inst in tracked.instances] == fresh
    assert all(inst.mask.width == 480 and inst.mask.height == 360
               for inst in tracked.instances)

    values["track_max_side"] = 160  # a live change while the answer on after[1] is in flight
    late = answer(pipeline, camera, after[1])
    assert all(inst.track_id == 0 for inst in late.instances)
    stream.process(camera, after[2])  # a new working size: a scene change for the tracker
    again = [inst.track_id for inst in answer(pipeline, camera, after[2]).instances]
    # the same object after a scene change takes its id back from the track memory (issue
    # 31); the object of the other scene (before the resolution change) never did
    assert again == fresh
    stream.process(camera, after[3])
    assert [inst.track_id for inst in camera.outputs["tracks"].messages[-1].instances] == again
    assert pipeline._stats.snapshot()["tracking_failures"] == 0, "the size rule, no failure"


def test_a_failing_tracker_never_fails_the_answer(tracking, monkeypatch, caplog):
    """Whatever goes wrong while grounding the tracks, the model's answer is published as a
    success (without track ids); the failure is counted for /diagnostics and logged, at most
    once per few seconds."""
    import stamp_ros.ros.tracking as node_tracking

    pipeline, camera, _, _ = tracking
    image = PanScene(velocity=(0.0, 0.0), frames=2, seed=10).frame(0)
    f0 = camera.frames.put(image_msg(image, stamp_sec=1))
    assert all(inst.track_id for inst in answer(pipeline, camera, f0).instances)

    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(node_tracking, "ground_tracks", broken)
    with caplog.at_level(logging.WARNING):
        results = [answer(pipeline, camera, camera.frames.put(image_msg(image, stamp_sec=2 + i)))
                   for i in range(3)]
    assert all(inst.track_id == 0 for res in results for inst in res.instances)
    assert [m.success for m in camera.outputs["result"].messages] == [True] * 4
    assert pipeline._stats.snapshot()["tracking_failures"] == 3
    logged = [r for r in caplog.records if "tracking" in r.getMessage()
              and "could not be broadcast" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
