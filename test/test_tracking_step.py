"""The grounding step the node and ``stamp-ros bag --track`` share
(:func:`stamp_ros.pipeline.tracking_step.ground_tracks`), without ROS and without a model:
answers whose frame has another size than the tracker's frames (a resolution change or a new
``track_max_side`` while the answer was in flight) never raise, and the tracks go on at the new
size from the next answer.

Frames are stepped as :func:`~stamp_ros.pipeline.tracking_step.track_frame` does (the working
frame at the tracker's ``max_side``, one :meth:`~stamp_ros.tracking.QueryTracker.step`); the
model's answers are the scenes' true masks.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from stamp_ros.pipeline.tracking_step import ground_tracks
from stamp_ros.testing.scenes import PanScene
from stamp_ros.tracking import QueryTracker, TrackIds, working_frame


def step(tracker: QueryTracker, seq: int, rgb: np.ndarray):
    """What track_frame does to the tracker for one frame."""
    return tracker.step(seq, working_frame(rgb, tracker.config.max_side))


def answer(seq: int, masks: list[np.ndarray]) -> tuple[SimpleNamespace, SimpleNamespace]:
    """An engine answer and its Segmentation, as far as the grounding step reads them."""
    result = SimpleNamespace(instances=[SimpleNamespace(mask=m, score=0.9) for m in masks])
    seg = SimpleNamespace(header=SimpleNamespace(stamp=seq), answer="it", answer_reused=False,
                          request_id=f"r{seq}", propagated=True, model_stamp=None,
                          instances=[SimpleNamespace(track_id=-1) for _ in masks])
    return result, seg


def ground(tracker: QueryTracker, seq: int, scene, i: int) -> tuple[list[int], SimpleNamespace]:
    """The model answers frame ``i`` of ``scene`` (the node's frame ``seq``) with its true mask."""
    result, seg = answer(seq, [scene.mask(i)])
    ids = ground_tracks(tracker, seq, scene.frame(i), result, seg)
    return ids, seg


def live_tracks_at(tracker: QueryTracker, seq: int, rgb: np.ndarray, size: tuple[int, int]):
    out = step(tracker, seq, rgb)
    assert out is not None and out.objects, out
    assert all(o.mask.shape == (size[1], size[0]) for o in out.objects)
    return out


def test_answer_from_before_a_resolution_change_does_not_raise_and_tracks_go_on_at_the_new_size():
    """640x480 frames, tracked; the camera switches to 480x360 (another working size) while an
    answer for a 640x480 frame is in flight. That answer is about the image before the change
    (a scene change for the tracker): it grounds nothing (track id 0, no exception), and the
    first answer on a new frame starts the tracks at the new size."""
    old = PanScene(size=(640, 480), velocity=(3.0, 0.0), frames=10, seed=11)
    new = PanScene(size=(480, 360), velocity=(3.0, 0.0), frames=10, seed=12)
    tracker = QueryTracker(TrackIds())
    step(tracker, 0, old.frame(0))
    first, _ = ground(tracker, 0, old, 0)
    assert first == [1]
    live_tracks_at(tracker, 1, old.frame(1), (640, 480))
    live_tracks_at(tracker, 2, old.frame(2), (640, 480))

    changed = step(tracker, 3, new.frame(0))  # the new resolution: every track is lost
    assert changed is not None and changed.objects == [] and changed.scene_change

    late, seg = ground(tracker, 2, old, 2)  # the answer that was in flight: no exception
    assert late == [0] and [inst.track_id for inst in seg.instances] == [0]
    assert not seg.propagated and seg.model_stamp == seg.header.stamp

    out = step(tracker, 4, new.frame(1))
    assert out is not None and out.objects == []
    fresh, seg = ground(tracker, 4, new, 1)
    assert len(fresh) == 1 and fresh[0] > 1, "a new track, not the old one"
    assert [inst.track_id for inst in seg.instances] == fresh
    for seq in (5, 6):
        out = live_tracks_at(tracker, seq, new.frame(seq - 3), (480, 360))
        assert [o.track_id for o in out.objects] == fresh


def test_answer_in_flight_across_a_track_max_side_change_does_not_raise():
    """``track_max_side`` changes while an answer is in flight: the answer's working frame (at
    the new side) and the tracker's newest frame (at the old one) differ. The answer grounds
    nothing; the next frame (at the new side) is a scene change for the tracker and the next
    answer grounds the tracks again, at full resolution as before. The object is the same one:
    since issue 31 it is re-identified from memory by its appearance and keeps its id."""
    scene = PanScene(size=(640, 480), velocity=(3.0, 0.0), frames=10, seed=13)
    tracker = QueryTracker(TrackIds())
    step(tracker, 0, scene.frame(0))
    assert ground(tracker, 0, scene, 0)[0] == [1]
    live_tracks_at(tracker, 1, scene.frame(1), (640, 480))
    live_tracks_at(tracker, 2, scene.frame(2), (640, 480))

    tracker.config = dataclasses.replace(tracker.config, max_side=200)  # a live change
    late, seg = ground(tracker, 2, scene, 2)
    assert late == [0] and [inst.track_id for inst in seg.instances] == [0]

    changed = step(tracker, 3, scene.frame(3))
    assert changed is not None and changed.objects == [] and changed.refresh_reason
    fresh, _ = ground(tracker, 3, scene, 3)
    assert fresh == [1]
    for seq in (4, 5):
        out = live_tracks_at(tracker, seq, scene.frame(seq), (640, 480))
        assert [o.track_id for o in out.objects] == fresh


def test_answer_ahead_of_the_frames_at_a_new_size_grounds_at_once():
    """An answer for a frame of the new size that the tracker has not stepped yet is the
    tracker's own case (a new resolution, then that answer): it grounds, and the tracks go on
    at the new size (unchanged behaviour, kept by the size rule)."""
    old = PanScene(size=(640, 480), velocity=(3.0, 0.0), frames=10, seed=14)
    new = PanScene(size=(480, 360), velocity=(3.0, 0.0), frames=10, seed=15)
    tracker = QueryTracker(TrackIds())
    step(tracker, 0, old.frame(0))
    assert ground(tracker, 0, old, 0)[0] == [1]
    live_tracks_at(tracker, 1, old.frame(1), (640, 480))
    fresh, _ = ground(tracker, 2, new, 0)
    assert len(fresh) == 1 and fresh[0] > 1
    out = live_tracks_at(tracker, 3, new.frame(1), (480, 360))
    assert [o.track_id for o in out.objects] == fresh


def test_a_new_size_stepped_while_the_answer_is_matched_is_the_same_rule():
    """The node's frame thread may step a frame of the new size between the size check and
    the matching (the tracker prepares the answer's masks before taking its lock): the answer
    is treated as the size rule says, not raised."""
    old = PanScene(size=(640, 480), velocity=(3.0, 0.0), frames=10, seed=16)
    new = PanScene(size=(480, 360), velocity=(3.0, 0.0), frames=10, seed=17)
    tracker = QueryTracker(TrackIds())
    step(tracker, 0, old.frame(0))
    assert ground(tracker, 0, old, 0)[0] == [1]
    live_tracks_at(tracker, 1, old.frame(1), (640, 480))
    real_ground = tracker.ground

    def frame_thread_first(*args, **kwargs):
        step(tracker, 2, new.frame(0))  # what the frame thread did meanwhile
        return real_ground(*args, **kwargs)

    tracker.ground = frame_thread_first
    late, seg = ground(tracker, 1, old, 1)
    assert late == [0] and [inst.track_id for inst in seg.instances] == [0]
    tracker.ground = real_ground
    fresh, _ = ground(tracker, 3, new, 1)
    assert len(fresh) == 1 and fresh[0] > 1
    out = live_tracks_at(tracker, 4, new.frame(2), (480, 360))
    assert [o.track_id for o in out.objects] == fresh
