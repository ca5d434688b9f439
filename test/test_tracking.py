"""The tracker without ROS and without a model (issue 19, "Evidence"): synthetic textured scenes
moved by known amounts, model answers injected as masks.

Every scene is 640x480 with exact ground-truth masks (stamp_ros.testing.scenes); "model masks"
are ground truth quantised to STAMP's 28-pixel cells and shifted like answer-to-answer jitter.
"""

from __future__ import annotations

import numpy as np
import pytest

from stamp_ros.testing.scenes import ObjectScene, PanScene, model_like_mask, texture
from stamp_ros.tracking import (
    QueryTracker,
    TrackerConfig,
    TrackIds,
    assign_by_iou,
    iou_matrix,
    working_frame,
)

SIDE = TrackerConfig().max_side


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou_matrix([a], [b])[0, 0])


def frame(scene, i: int):
    return working_frame(scene.frame(i), SIDE)


def ground_on(tracker: QueryTracker, scene, i: int, masks, **kw) -> list[int]:
    return tracker.ground(i, frame(scene, i), masks, [0.9] * len(masks), **kw)


def follow(tracker: QueryTracker, scene, first: int, last: int) -> dict:
    """Step frames first..last; the outputs by frame index."""
    return {i: tracker.step(i, frame(scene, i)) for i in range(first, last + 1)}


def only_mask(out) -> np.ndarray:
    assert out is not None and len(out.objects) == 1, out
    return out.objects[0].mask


# ------------------------------------------------------------------ propagation accuracy
@pytest.mark.parametrize("velocity", [(3.0, 0.0), (0.0, -3.0), (2.3, 1.4)])
def test_moving_object_keeps_iou_after_30_frames(velocity):
    """A textured object moving 3 px/frame over a textured background: after 30 propagated
    frames the mask still covers the true one (IoU >= 0.85), on every frame in between too."""
    scene = ObjectScene(velocity=velocity, start=(200, 180), seed=1)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    assert ground_on(tracker, scene, 0, [scene.mask(0)]) == [1]
    outs = follow(tracker, scene, 1, 30)
    ious = [iou(only_mask(outs[i]), scene.mask(i)) for i in range(1, 31)]
    assert min(ious) >= 0.85, ious
    assert all(outs[i].propagated for i in outs)
    assert outs[30].objects[0].track_id == 1


@pytest.mark.parametrize("velocity", [(3.0, 0.0), (-3.0, 2.0)])
def test_camera_pan_keeps_iou_after_30_frames(velocity):
    """The whole image pans 3 px/frame (the object is part of the scene)."""
    scene = PanScene(velocity=velocity, frames=31, seed=2)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    ground_on(tracker, scene, 0, [scene.mask(0)])
    outs = follow(tracker, scene, 1, 30)
    ious = [iou(only_mask(outs[i]), scene.mask(i)) for i in range(1, 31)]
    assert min(ious) >= 0.85, ious
    # The pan really moved it: the frame-0 mask no longer fits.
    assert iou(scene.mask(0), scene.mask(30)) < 0.7


@pytest.mark.parametrize(("angle", "zoom"), [(1.0, 1.0), (0.0, 1.01), (-0.7, 0.993)])
def test_rotating_and_zooming_camera_keeps_iou_after_30_frames(angle, zoom):
    """The motion model is a similarity: a camera turning 1 degree per frame, or zooming in or
    out 1 % per frame (with a turn), is followed as well as a pan."""
    import cv2

    canvas = texture(480, 640, seed=14)
    true = np.zeros((480, 640), np.uint8)
    cv2.ellipse(true, (210, 170), (90, 70), 0, 0, 360, 1, -1)

    def at(i, img, interp):
        m = cv2.getRotationMatrix2D((320, 240), angle * i, zoom ** i)
        return cv2.warpAffine(img, m, (640, 480), flags=interp, borderMode=cv2.BORDER_REFLECT)

    # Off the centre: standing still would not do.
    assert iou(true, at(30, true, cv2.INTER_NEAREST)) < 0.7

    tracker = QueryTracker(TrackIds())
    first = working_frame(canvas, SIDE)
    tracker.step(0, first)
    tracker.ground(0, first, [true])
    for i in range(1, 31):
        out = tracker.step(i, working_frame(at(i, canvas, cv2.INTER_LINEAR), SIDE))
        assert iou(only_mask(out), at(i, true, cv2.INTER_NEAREST)) >= 0.85, i


def test_model_like_masks_are_carried_as_they_are():
    """A blocky 28-px-cell mask is carried as such: after 30 frames it matches the equally
    moved model mask, whatever the object inside it does at its edges."""
    scene = PanScene(velocity=(3.0, 0.0), frames=31, seed=3)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    blocky = model_like_mask(scene.mask(0))
    ground_on(tracker, scene, 0, [blocky])
    out = follow(tracker, scene, 1, 30)[30]
    expected = np.roll(blocky, -90, axis=1)
    expected[:, -90:] = 0
    assert iou(only_mask(out), expected) >= 0.95


# ------------------------------------------------------------------ identity
def test_identity_kept_through_jittered_model_answers():
    """Answers every 5 frames, each the object's model mask shifted by up to half a cell and
    arriving 3 frames late (for a frame already stepped past): one id throughout, the track
    never lost, and the propagated masks stay on the object."""
    rng = np.random.default_rng(4)
    scene = ObjectScene(velocity=(3.0, 1.0), start=(120, 140), seed=5)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    ids = [ground_on(tracker, scene, 0, [model_like_mask(scene.mask(0))])]
    worst = 1.0
    for i in range(1, 61):
        out = tracker.step(i, frame(scene, i))
        worst = min(worst, iou(only_mask(out), scene.mask(i)))
        if i % 5 == 0 and i >= 3:
            k = i - 3
            shift = tuple(int(v) for v in rng.integers(-14, 15, 2))
            ids.append(ground_on(tracker, scene, k,
                                 [model_like_mask(scene.mask(k), shift=shift)]))
    assert ids == [[1]] * len(ids)
    assert tracker.live_ids() == [1] and not tracker.lost_ids()
    assert worst >= 0.6, worst  # a jittered 28-px grid mask vs the true ellipse


def test_answer_in_other_order_keeps_ids_and_new_object_gets_new_id():
    """Answer order says nothing: two objects answered in swapped order keep their ids; a third
    object that appears in a later answer gets a new id; the first ids are unchanged."""
    scene = PanScene(velocity=(2.0, 0.0), frames=40, seed=6)
    h, w = scene.h, scene.w
    a = np.zeros((h, w), np.uint8)
    a[60:200, 40:200] = 1
    b = np.zeros((h, w), np.uint8)
    b[260:420, 300:520] = 1
    c = np.zeros((h, w), np.uint8)
    c[40:160, 420:600] = 1
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    assert ground_on(tracker, scene, 0, [a, b]) == [1, 2]
    follow(tracker, scene, 1, 10)

    def moved(m, i):
        return np.roll(m, -2 * i, axis=1)

    assert ground_on(tracker, scene, 10, [moved(b, 10), moved(a, 10)]) == [2, 1]
    follow(tracker, scene, 11, 20)
    assert ground_on(tracker, scene, 20, [moved(a, 20), moved(c, 20), moved(b, 20)]) == [1, 3, 2]
    out = tracker.step(21, frame(scene, 21))
    assert sorted(o.track_id for o in out.objects) == [1, 2, 3]


@pytest.mark.parametrize("memory", [0.0, 10.0])
def test_mask_below_min_iou_starts_a_new_track_and_old_one_ends_after_max_misses(memory):
    """After max_misses answers without it a track leaves the output. Issue 31 changed what
    follows: it is remembered (track_memory) and the same object answered again takes its id
    back; without memory (0) it ends for good, as before."""
    scene = PanScene(velocity=(0.0, 0.0), frames=10, seed=7)
    left = np.zeros((scene.h, scene.w), np.uint8)
    left[100:300, 50:250] = 1
    right = np.zeros_like(left)
    right[100:300, 330:530] = 1
    tracker = QueryTracker(TrackIds(), TrackerConfig(max_misses=2, memory=memory))
    tracker.step(0, frame(scene, 0))
    assert ground_on(tracker, scene, 0, [left]) == [1]
    tracker.step(1, frame(scene, 1))
    assert ground_on(tracker, scene, 1, [right]) == [2]  # no overlap with track 1
    assert tracker.live_ids() == [1, 2]  # one miss: track 1 is kept
    tracker.step(2, frame(scene, 2))
    assert ground_on(tracker, scene, 2, [right]) == [2]
    assert tracker.live_ids() == [2]  # second miss in a row: track 1 ended
    tracker.step(3, frame(scene, 3))
    assert ground_on(tracker, scene, 3, [left]) == ([1] if memory else [3])


def test_ids_are_never_reused_across_queries_and_trackers():
    """One TrackIds per node run: a new query (a new tracker) continues the numbering."""
    ids = TrackIds()
    scene = PanScene(velocity=(0.0, 0.0), frames=5, seed=8)
    seen = []
    for _query in range(3):
        tracker = QueryTracker(ids)
        tracker.step(0, frame(scene, 0))
        seen += ground_on(tracker, scene, 0, [scene.mask(0), model_like_mask(scene.mask(0),
                                                                            (200, 0))])
    assert seen == [1, 2, 3, 4, 5, 6]
    assert ids.issued == 6


def test_empty_mask_is_not_tracked():
    scene = PanScene(velocity=(0.0, 0.0), frames=5, seed=9)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    empty = np.zeros((scene.h, scene.w), np.uint8)
    assert ground_on(tracker, scene, 0, [empty, scene.mask(0)]) == [0, 1]


# ------------------------------------------------------------------ lost and scene change
def test_object_leaving_the_image_is_lost_within_a_few_frames():
    """An object moving 6 px/frame out through the right edge: tracked while most of it is
    visible, lost before (at the latest as) it is gone, and from then on not output at all
    (never left at its old place)."""
    scene = ObjectScene(velocity=(6.0, 0.0), start=(400, 180), object_size=(160, 130), seed=10)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    ground_on(tracker, scene, 0, [scene.mask(0)])
    full = scene.mask(0).sum()
    lost_at = None
    for i in range(1, 60):
        out = tracker.step(i, frame(scene, i))
        visible = scene.mask(i).sum() / full
        if lost_at is None and out.lost:
            lost_at = i
            # Either its carried mask is mostly outside, or its points are (they fail there).
            assert out.lost[0][0] == 1, out.lost
            assert "left the image" in out.lost[0][1] or "could be followed" in out.lost[0][1]
            assert out.refresh_reason.startswith("track 1 lost")
        if lost_at is None:
            assert len(out.objects) == 1
            assert iou(out.objects[0].mask, scene.mask(i)) >= 0.8, i
        else:
            assert out.objects == []
            if i > lost_at:
                assert out.lost == []  # reported once
        if visible >= 0.6:
            assert lost_at is None, f"lost at frame {i} with {visible:.0%} still visible"
    assert lost_at is not None
    gone = next(i for i in range(60) if scene.mask(i).sum() == 0)
    assert lost_at <= gone, (lost_at, gone)
    assert 1 in tracker.lost_ids() and tracker.live_ids() == []


def test_scene_change_loses_every_track_and_says_so():
    scene = PanScene(velocity=(2.0, 0.0), frames=20, seed=11)
    other = texture(scene.h, scene.w, seed=99)
    tracker = QueryTracker(TrackIds())
    tracker.step(0, frame(scene, 0))
    ground_on(tracker, scene, 0, [scene.mask(0)])
    follow(tracker, scene, 1, 5)
    out = tracker.step(6, working_frame(other, SIDE))
    assert out.scene_change and out.objects == []
    assert out.refresh_reason == "scene change"
    assert 1 in tracker.lost_ids()
    # An answer for a frame before the change keeps the identity but grounds nothing.
    assert ground_on(tracker, scene, 5, [np.roll(scene.mask(0), -10, axis=1)]) == [1]
    assert tracker.live_ids() == []
    # The next answer, on the new scene, grounds afresh: a new id even where the old track was
    # (positions from before a cut say nothing about identity).
    mask = np.zeros((scene.h, scene.w), np.uint8)
    mask[150:330, 200:400] = 1
    assert iou(mask, scene.mask(5)) > 0.3
    ids = tracker.ground(7, working_frame(other, SIDE), [mask], [0.8])
    assert ids == [2]
    assert tracker.step(8, working_frame(other, SIDE)).objects[0].track_id == 2


def test_textureless_object_is_lost_not_kept():
    """Nothing to follow (a flat grey image): the track is created lost, with a reason."""
    flat = np.full((480, 640, 3), 120, np.uint8)
    tracker = QueryTracker(TrackIds())
    wf = working_frame(flat, SIDE)
    tracker.step(0, wf)
    mask = np.zeros((480, 640), np.uint8)
    mask[100:200, 100:200] = 1
    assert tracker.ground(0, wf, [mask]) == [1]
    assert "trackable points" in tracker.lost_ids()[1]
    assert tracker.step(1, working_frame(flat, SIDE)).objects == []


# ------------------------------------------------------------------ answers and frames
def test_answer_for_a_frame_not_yet_stepped_is_output_as_is():
    """The model answered frame 3 before the tracking thread got to it: frame 3's output is the
    model's own mask (propagated false), and later frames are propagated from it."""
    scene = ObjectScene(velocity=(3.0, 0.0), start=(150, 150), seed=12)
    tracker = QueryTracker(TrackIds())
    assert tracker.step(0, frame(scene, 0)) is None  # nothing grounded yet
    answer = model_like_mask(scene.mask(3))
    assert ground_on(tracker, scene, 3, [answer], grounding="answer-3") == [1]
    out3 = tracker.step(3, frame(scene, 3))
    assert not out3.propagated and out3.grounded_seq == 3 and out3.grounding == "answer-3"
    assert np.array_equal(only_mask(out3), answer.astype(bool))
    out4 = tracker.step(4, frame(scene, 4))
    assert out4.propagated and out4.grounded_seq == 3
    assert tracker.step(2, frame(scene, 2)) is None  # older than what was processed


def test_late_answer_is_carried_over_many_frames():
    """An answer for frame 0 arriving after frame 40 (a slow model) is carried over the gap
    (120 px of motion) with the camera motion since: the track lands on the object."""
    scene = PanScene(velocity=(3.0, 0.0), frames=45, seed=13)
    tracker = QueryTracker(TrackIds())
    follow(tracker, scene, 0, 40)
    assert ground_on(tracker, scene, 0, [scene.mask(0)]) == [1]
    out = tracker.step(41, frame(scene, 41))
    assert iou(only_mask(out), scene.mask(41)) >= 0.9


# ------------------------------------------------------------------ assignment
def test_assignment_is_optimal_not_greedy():
    """Greedy would give row 0 its best column (0.6) and leave row 1 with 0.1; the optimal
    assignment pairs 0-1 and 1-0 (total 1.2)."""
    iou_values = np.array([[0.6, 0.5], [0.7, 0.1]])
    assert sorted(assign_by_iou(iou_values, 0.3)) == [(0, 1), (1, 0)]
    assert assign_by_iou(np.array([[0.2]]), 0.3) == []
    assert assign_by_iou(np.zeros((0, 3)), 0.3) == []


def test_iou_matrix():
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 1
    b = np.zeros((4, 4), np.uint8)
    b[1:3] = 1
    m = iou_matrix([a, b], [b, np.zeros((4, 4))])
    assert m.shape == (2, 2)
    assert m[0, 0] == pytest.approx(4 / 12) and m[1, 0] == 1.0 and m[0, 1] == 0.0
