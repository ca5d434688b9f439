"""Object permanence without ROS (issue 31): occluded objects carried, hidden ones predicted and
remembered, re-identified by appearance and motion, forgotten after track_memory; the Kalman
filter; a repeated query continuing its tracks.

Synthetic 640x480 scenes (stamp_ros.testing.scenes.LayeredScene over a texture), the model
answering every 10th frame 6 frames late with grid-quantised, jittered masks of what is
visible, as bench/permanence.py drives it (seeded: deterministic on any CPU).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stamp_ros.pipeline.tracking_step import query_continues_tracks
from stamp_ros.testing.scenes import (
    LayeredScene,
    Occluder,
    Sprite,
    model_answer,
    photo,
    texture,
)
from stamp_ros.tracking import (
    OCCLUDED,
    PREDICTED,
    REIDENTIFIED,
    ConstantVelocity,
    QueryTracker,
    TrackerConfig,
    TrackIds,
    motion,
    working_frame,
)
from stamp_ros.tracking.image import WorkingFrame
from stamp_ros.tracking.reacquire import Template, find
from stamp_ros.tracking.visibility import changed, near_points, visible_part

BACKGROUND = texture(480, 640, seed=5, contrast=0.6)
PHOTO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "horses.jpg"


def linear(x0: float, y0: float, vx: float):
    return lambda i: (x0 + vx * i, y0)


def run(scene: LayeredScene, frames: int, config: TrackerConfig | None = None,
        every: int = 10, latency: int = 6, slivers: bool = True) -> tuple[QueryTracker, dict]:
    """Drive a tracker over ``scene``; returns it and the outputs by frame. The model answers
    an object when a fifth of it is visible; ``slivers``: a fifth of the part inside the
    image (it answers a few pixels of an object entering at the border), else of all of it."""
    config = config or TrackerConfig()
    tracker = QueryTracker(TrackIds(), config)
    rng = np.random.default_rng(31)
    pending, outs = [], {}
    for i in range(frames):
        rgb = scene.frame(i)
        if i % every == 0:
            full = scene.full_masks(i)
            wholes = ([f.sum() for f in full] if slivers
                      else [s.shape.sum() for s in scene.sprites])  # (Cuts: slivers only)
            pending.append((i + latency, i, rgb, model_answer(scene.masks(i), full, wholes, rng)))
        for item in [p for p in pending if p[0] <= i]:
            pending.remove(item)
            tracker.ground(item[1], working_frame(item[2], config.max_side, colour=True),
                           item[3], [0.9] * len(item[3]))
        outs[i] = tracker.step(i, working_frame(rgb, config.max_side))
    return tracker, outs


def ids_on(out) -> list[int]:
    return [] if out is None else [o.track_id for o in out.objects]


def events(outs: dict, kind: str) -> list:
    return [e for out in outs.values() if out is not None for e in out.events if e.kind == kind]


# ------------------------------------------------------------------ Kalman filter
def test_kalman_learns_a_constant_velocity_and_extrapolates():
    kf = ConstantVelocity(np.zeros(2), 0.0, accel=1.0, noise=0.5, velocity_sigma=10.0)
    rng = np.random.default_rng(0)
    for k in range(1, 61):
        kf.update(np.array([3.0 * k / 30, -1.0 * k / 30]) + rng.normal(0, 0.05, 2), k / 30)
    assert np.allclose(kf.velocity, [3.0, -1.0], atol=0.15)
    assert np.allclose(kf.position_at(3.0), [9.0, -3.0], atol=0.4)  # 1 s ahead
    kf.shift(np.array([1.0, 0.0]))  # another point of the object: velocity unchanged
    assert np.allclose(kf.velocity, [3.0, -1.0], atol=0.15)
    _, cov = kf.predicted(10.0)
    assert cov[0, 0] > kf.P[0, 0]  # uncertainty grows while predicting


def test_kalman_update_out_of_order_is_taken_at_the_state_time():
    kf = ConstantVelocity(np.zeros(3), 1.0, accel=1.0, noise=0.1, velocity_sigma=1.0)
    kf.update(np.array([0.1, 0.0, 0.0]), 0.5)
    assert kf.t == 1.0 and np.all(np.isfinite(kf.x))


# ------------------------------------------------------------------ occlusion
def test_object_mostly_covered_at_once_is_carried_as_occluded_not_lost():
    """A bar appears in front of 60% of a moving object for 1 s: the track stays on its
    visible points, reported OCCLUDED, and is not lost while covered (the old rule lost it on
    the first frame: more than half its points failed). When the bar vanishes as suddenly the
    few points left may fail; the next answer finds it under the same id."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((160, 130), 11, linear(60, 170, 2))],
                         [Occluder((140, 222, 300, 130), frames=range(60, 90))])
    tracker, outs = run(scene, 120)
    assert not [e for e in events(outs, "lost") if e.seq < 90]
    assert all(ids_on(outs[i]) == [1] for i in range(6, 90))
    assert any(outs[i].objects[0].state == OCCLUDED for i in range(60, 90))
    assert ids_on(outs[119]) == [1] and tracker.ids.issued == 1


def test_occluded_object_mask_is_its_visible_part():
    """While the bar covers 60% of the object, its mask is the part in sight: the object, not
    the bar in front of it (the carried whole mask covered all of the bar's part before)."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((160, 130), 11, linear(60, 170, 2))],
                         [Occluder((140, 222, 300, 130), frames=range(60, 90))])
    _, outs = run(scene, 90)
    checked = 0
    for i in range(61, 90):
        (obj,) = outs[i].objects
        if obj.state != OCCLUDED:
            continue
        seen = scene.masks(i)[0].astype(bool)
        hidden = scene.full_masks(i)[0].astype(bool) & ~seen
        assert (obj.mask & hidden).sum() <= 0.35 * hidden.sum()
        assert (obj.mask & seen).sum() >= 0.85 * seen.sum()
        assert obj.visible <= 0.75
        checked += 1
    assert checked >= 20


def test_visible_part_keeps_what_agrees_with_the_key_view():
    """The key view moved by the track's motion, compared with the frame: the part a
    differently textured patch now covers is cut, the rest kept, and the points still
    followed bound it."""
    key = texture(120, 160, seed=3)[..., 0].copy()
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 1
    shift = np.float64([[1, 0, 6], [0, 1, 4], [0, 0, 1]])
    frame = cv2.warpAffine(key, shift[:2], (160, 120))
    frame[:, 86:] = texture(120, 74, seed=9, contrast=0.8)[..., 1]  # an occluder on the right
    seen, whole = visible_part(key, mask, shift, frame)
    moved = cv2.warpAffine(mask, shift[:2], (160, 120), flags=cv2.INTER_NEAREST)
    assert whole == int(moved.sum())
    left, right = moved.copy(), moved.copy()
    left[:, 86:], right[:, :86] = 0, 0
    assert (seen & left).sum() >= 0.9 * left.sum()
    assert (seen & right).sum() <= 0.3 * right.sum()
    pts = np.float32([[50, 40], [80, 40], [50, 90], [80, 90]])
    near = near_points(pts, (160, 120), 5)
    assert near[60, 65] and near[40, 46] and not near[60, 100]


def test_object_coming_out_from_behind_a_pillar_is_taken_back_before_the_answer():
    """Coming out from behind the pillar, the object is taken back between answers while a
    third of it shows (a strip of its stored view found where its motion puts it, the part of
    it that came into sight since it was lost placed by its stored corners there), before the
    answer for frame 140 arrives at 146;
    its mask is then the part in sight and grows with it (before: absent until 146, then
    keyed on that answer's partial view, which it stayed)."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((120, 100), 12, linear(20, 190, 3))],
                         [Occluder((220, 150, 300, 200))])
    _, outs = run(scene, 160, slivers=False)
    back = next(i for i in range(100, 160) if ids_on(outs[i]) == [1])
    assert back < 146
    assert [e.reason for e in returned_between_answers(outs)]
    for i in range(back, 160):
        (obj,) = outs[i].objects
        seen = scene.masks(i)[0].astype(bool)
        iou = (obj.mask & seen).sum() / (obj.mask | seen).sum()
        assert iou >= 0.4, (i, iou)


def test_object_coming_out_over_a_photo_is_kept_from_a_quarter_in_sight():
    """The benchmark's sequence b (bench/permanence.py: the pillar over the real photo): the
    object coming out is taken back by frame 138, a quarter of it in sight (the part that came
    into sight since it was lost, placed by its stored corners there; before: frame 141, a
    third), and kept on every frame from then on, though the first frames' estimate of its
    share in sight wobbles around MIN_IN_SIGHT (follow.EMERGING_SLACK; without it, it
    flickered out on frames 139-141)."""
    assert PHOTO.is_file(), PHOTO
    still = photo(PHOTO, (2048, 1367))[300:780, 200:840]
    scene = LayeredScene(still, [Sprite.textured((120, 100), 12, linear(20, 190, 3))],
                         [Occluder((220, 150, 300, 200))])
    _, outs = run(scene, 160, slivers=False)
    back = next(i for i in range(100, 160) if ids_on(outs[i]) == [1])
    assert back <= 138
    assert scene.masks(back)[0].sum() <= 0.25 * scene.sprites[0].shape.sum()
    assert all(ids_on(outs[i]) == [1] for i in range(back, 160))


def test_a_part_is_found_only_where_something_came_into_sight():
    """A strip of a hidden object's stored view that correlates where its motion puts it is
    the object only where the frame changed since the track was lost: the same pixels there
    then (a patch of the occluder that looks like it) bring nothing back."""
    w, h = 320, 240
    background = texture(h, w, seed=5, contrast=0.6)[..., 0].copy()
    body = texture(50, 60, seed=12, contrast=1.3)[..., 0].copy()
    pillar = texture(h, 100, seed=77, contrast=0.8)[..., 1].copy()

    def view(x0: int, behind_pillar: bool = True) -> np.ndarray:
        grey = background.copy()
        grey[80:130, x0:x0 + 60] = body
        if behind_pillar:
            grey[:, 100:200] = pillar
        return grey

    small = np.zeros((h, w), np.uint8)
    small[80:130, 20:80] = 1
    template = Template.of(0, WorkingFrame(view(20, False), (w, h)), small,
                           np.array([49.5, 104.5]), small.copy(), (20, 80, 79, 129),
                           int(small.sum()))
    now = WorkingFrame(view(161), (w, h))  # 35% of it out on the pillar's right
    guess = motion.identity()
    guess[:2, 2] = (141 + 3, 2)  # its motion, a few pixels off
    # lost wholly behind the pillar
    found = find(template, now, guess, 30.0, 1.0, changed_since=changed(view(110), now.grey))
    assert found is not None and found.in_part
    assert np.allclose(found.transform[:2, 2], (141, 0), atol=1.0)
    assert find(template, now, guess, 30.0, 1.0, changed_since=changed(now.grey, now.grey)) is None


def test_fit_translation_ignores_points_stuck_on_the_occluder():
    src = np.float32([[10, 10], [20, 12], [30, 15], [12, 30], [25, 28], [40, 40], [41, 40]])
    dst = src + np.float32([3, -1])
    dst[-2:] = src[-2:]  # two points held by the occluder's edge
    fit = motion.fit_translation(src, dst)
    assert np.allclose(fit.transform[:2, 2], [3, -1]) and fit.inlier_count == 5
    assert motion.scale_of(fit.transform) == 1.0


def test_patch_ncc_tells_the_same_texture_from_another():
    a = texture(60, 60, seed=3)[..., 0].copy()
    b = np.roll(a, (2, 3), axis=(0, 1))
    other = texture(60, 60, seed=4)[..., 0].copy()
    pts = np.float32([[20, 20], [30, 35], [40, 25]])
    assert np.all(motion.patch_ncc(a, pts, b, pts + np.float32([3, 2])) > 0.95)
    assert np.all(motion.patch_ncc(a, pts, other, pts) < 0.5)
    assert motion.patch_ncc(a, np.float32([[1, 1]]), b, np.float32([[1, 1]]))[0] == -1


def test_hidden_object_is_predicted_not_output_kept_and_reidentified():
    """Fully hidden for 2 s while moving: not output while hidden (no mask), listed as hidden
    with a predicted centre that moves on, and back under its id when it comes out."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((120, 100), 12, linear(20, 190, 3))],
                         [Occluder((220, 150, 300, 200))])
    tracker, outs = run(scene, 185)
    hidden = [outs[i] for i in range(80, 120)]
    assert all(not o.objects for o in hidden)
    states = [h.state for o in hidden for h in o.hidden]
    assert PREDICTED in states
    centres = [h.predicted_center[0] for o in hidden for h in o.hidden if h.predicted_center]
    assert centres and centres[-1] > centres[0]  # carried on by its motion
    assert ids_on(outs[184]) == [1]
    assert [e.track_id for e in events(outs, "returned")] == [1]
    assert tracker.ids.issued == 1


def look_away_scene() -> LayeredScene:
    """Two still objects; the camera pans 640 px away (20 px/frame), looks away for 3 s (frames
    52-141) and pans back."""
    canvas = texture(700, 1500, seed=6, contrast=0.6)

    def camera(i: int) -> tuple[float, float]:
        if i < 20:
            return (100.0, 100.0)
        if i < 52:
            return (100.0 + 20 * (i - 19), 100.0)
        if i < 142:
            return (740.0, 100.0)
        return (max(100.0, 740.0 - 20 * (i - 141)), 100.0)

    return LayeredScene(canvas, [Sprite.textured((130, 110), 17, lambda i: (330, 270)),
                                 Sprite.textured((110, 120), 18, lambda i: (520, 360))],
                        camera=camera)


def test_objects_out_of_view_while_the_camera_looks_away_keep_their_ids():
    """The camera pans 640 px away (20 px/frame), looks away for 3 s and pans back: both still
    objects left the view and come back under their ids (camera motion removed, their
    remembered position and appearance match)."""
    tracker, outs = run(look_away_scene(), 200)
    assert sorted(ids_on(outs[199])) == [1, 2] and tracker.ids.issued == 2
    assert sorted(e.track_id for e in events(outs, "returned")) == [1, 2]


def test_track_is_forgotten_after_track_memory():
    """The same object back after 1.5 s out of view with track_memory 0.5 s: forgotten (an
    event), and it comes back under a new id."""
    def path(i: int):
        return (300 + 4 * i, 190) if i < 90 else None if i < 135 else (-130 + 4 * (i - 135), 190)

    scene = LayeredScene(BACKGROUND, [Sprite.textured((130, 110), 13, path)])
    _, outs = run(scene, 200, TrackerConfig(memory=0.5))
    assert 1 in [e.track_id for e in events(outs, "forgotten")]
    assert not events(outs, "returned")
    assert ids_on(outs[199]) and ids_on(outs[199]) != [1]


def test_lookalikes_crossing_behind_an_occluder_are_not_swapped():
    """Two objects with the same texture cross behind a pillar: each comes back under its own
    id (their motion decides), and the ambiguity is reported on some return."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((100, 90), 14, linear(40, 195, 3)),
                                      Sprite.textured((100, 90), 14, linear(500, 195, -3))],
                         [Occluder((200, 150, 240, 190))])
    _, outs = run(scene, 160)
    first = {o.track_id: o.bbox[0] for o in outs[10].objects}
    last = {o.track_id: o.bbox[0] for o in outs[159].objects}
    assert sorted(last) == sorted(first) == [1, 2]
    left_start = min(first, key=first.get)
    assert max(last, key=last.get) == left_start  # the one from the left is now on the right
    assert any(e.ambiguous_with for e in events(outs, "returned"))


# ------------------------------------------------------------------ repeated query
@pytest.mark.parametrize(("old", "new", "continues"), [
    ("the red mug", "the red mug", True), ("the red mug", " the red mug\n", True),
    ("the red mug", "the blue mug", False), ("", "the red mug", False)])
def test_repeated_query_continues_the_tracks(old, new, continues):
    assert query_continues_tracks(old, new) is continues


def test_same_tracker_on_a_repeated_query_keeps_every_id():
    """What the node does on a re-sent query (the same text): the tracker goes on, so the ids
    stay (a fresh tracker renewed all of them before issue 31)."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((130, 110), 15, linear(80, 90, 1.5)),
                                      Sprite.textured((120, 100), 16, linear(420, 300, -1.0))])
    tracker, outs = run(scene, 130)
    assert sorted(ids_on(outs[129])) == [1, 2] and tracker.ids.issued == 2


# ------------------------------------------------------------------ between answers
def returned_between_answers(outs: dict) -> list:
    """``returned`` events of hidden tracks found again by the tracker itself (not by a model
    answer: those arrive on frames 6, 16, 26, ... here)."""
    return [e for e in events(outs, "returned") if e.reason.startswith("found again")]


def test_objects_are_taken_back_between_answers_after_a_look_away():
    """The camera looks away and pans back: the still objects are looked for where the
    camera's motion puts them, and taken back on a frame no answer arrived on."""
    tracker, outs = run(look_away_scene(), 200)
    early = returned_between_answers(outs)
    assert early and all(e.seq % 10 != 6 for e in early)
    for e in early:
        back = next(o for o in outs[e.seq].objects if o.track_id == e.track_id)
        assert back.state == REIDENTIFIED and back.ambiguous_with == ()
    assert sorted(ids_on(outs[199])) == [1, 2] and tracker.ids.issued == 2


def test_a_different_object_where_a_hidden_one_should_be_is_not_taken_for_it():
    """An object goes behind a pillar and stays there; a different object of the same size
    and kind of texture comes out where (and when) the hidden one's motion says it should.
    It is not taken back between answers, and not given the hidden one's id."""
    def hidden_one(i: int):
        return (20 + 3 * i, 190) if i < 100 else None  # stops behind the pillar

    def other_one(i: int):
        return None if i < 100 else (20 + 3 * i, 190)  # comes out on the same path

    scene = LayeredScene(BACKGROUND, [Sprite.textured((120, 100), 12, hidden_one),
                                      Sprite.textured((120, 100), 19, other_one)],
                         [Occluder((220, 150, 300, 200))])
    _, outs = run(scene, 185)
    assert not returned_between_answers(outs)
    assert 1 not in ids_on(outs[184]) and ids_on(outs[184])


def test_a_live_lookalike_at_a_hidden_tracks_predicted_spot_is_not_taken():
    """Two objects with the same texture cross behind a pillar: while they are hidden the
    tracker never takes one for the other between answers (a hidden look-alike could be
    there: the next answer decides, by position, and says so on the objects)."""
    scene = LayeredScene(BACKGROUND, [Sprite.textured((100, 90), 14, linear(40, 195, 3)),
                                      Sprite.textured((100, 90), 14, linear(500, 195, -3))],
                         [Occluder((200, 150, 240, 190))])
    _, outs = run(scene, 160)
    assert not returned_between_answers(outs)
    flagged = [o for out in outs.values() if out is not None for o in out.objects
               if o.state == REIDENTIFIED and o.ambiguous_with]
    assert flagged and {o.track_id for o in flagged} <= {1, 2}


class Cuts:
    """Scenes one after another, cut at the frames given (each scene's frames count from 0)."""

    def __init__(self, *parts: tuple[int, LayeredScene]) -> None:
        self.parts = parts

    def _at(self, i: int) -> tuple[LayeredScene, int]:
        start = 0
        for scene_start, scene in self.parts:
            if i >= scene_start:
                start, current = scene_start, scene
        return current, i - start

    def frame(self, i: int) -> np.ndarray:
        scene, j = self._at(i)
        return scene.frame(j)

    def masks(self, i: int) -> list[np.ndarray]:
        scene, j = self._at(i)
        return scene.masks(j)

    def full_masks(self, i: int) -> list[np.ndarray]:
        scene, j = self._at(i)
        return scene.full_masks(j)


def two_objects(background: int, first: int, second: int) -> LayeredScene:
    still = lambda x, y: lambda i: (x, y)  # noqa: E731
    return LayeredScene(texture(480, 640, seed=background, contrast=0.6),
                        [Sprite.textured((150, 120), first, still(90, 150)),
                         Sprite.textured((150, 120), second, still(380, 200))])


# (133, 134, 135): re-identified as the old object by the rule before (histogram plus keypoints
# "verified" by a degenerate, scale ~0 fit; no geometric evidence required without a gate)
@pytest.mark.parametrize("seeds", [(133, 134, 135), (40, 41, 42), (50, 51, 52)])
def test_a_cut_to_another_scene_of_the_same_kind_gives_new_ids_and_back_the_old_ones(seeds):
    """A cut to another scene built by the same texture generator, its objects where the old
    ones were: no position to go by, colour histograms as alike as one object's views; the
    new objects get new ids, never an old one. Cut back (the camera looked away and back):
    the first scene's objects take their ids back (their own keypoints, verified)."""
    first = two_objects(5, 11, 12)
    other = two_objects(*seeds)
    _, outs = run(Cuts((0, first), (40, other), (80, first)), 130)
    old = set(ids_on(outs[39]))
    assert old == {1, 2}
    assert outs[40].scene_change and not outs[40].objects
    new = {i for k in range(40, 80) for i in ids_on(outs[k])}
    assert new and not new & old, "no identity across a cut"
    back = {i for k in range(80, 130) for i in ids_on(outs[k])}
    assert old <= back and outs[129].scene_change is False
    assert set(ids_on(outs[129])) == old


def test_a_cut_is_seen_when_an_object_fills_the_view():
    """The model's mask covers the whole image (no background points to follow): the cut is
    judged on the object's own points, and its answer after the cut gets a new id."""
    config = TrackerConfig()
    tracker = QueryTracker(TrackIds(), config)
    scene = texture(480, 640, seed=3)
    whole = [np.ones((480, 640), np.uint8)]
    frame = working_frame(scene, config.max_side, colour=True)
    assert tracker.ground(0, frame, whole, [0.9]) == [1]
    assert ids_on(tracker.step(1, working_frame(np.roll(scene, 3, 1), config.max_side))) == [1]
    cut = texture(480, 640, seed=77)
    out = tracker.step(2, working_frame(cut, config.max_side))
    assert out.scene_change and not out.objects
    assert tracker.ground(2, working_frame(cut, config.max_side, colour=True), whole,
                          [0.9]) == [2]


@pytest.mark.parametrize("slivers", [True, False], ids=["answers-slivers", "answers-fifths"])
def test_object_leaving_right_and_reentering_left_keeps_its_id(slivers):
    """The object leaves on the right and comes back on the left 1.5 s later: its first
    (partial, at the border) view is too partial for its appearance to decide, so the young
    track is held back until the remembered track's stored view is found on it; it never
    appears under another id. Whether the model answers the first few pixels at the border
    or only once a fifth of the object is in (the second got a new id before: the half view's
    similarity fell short of the hold)."""
    def path(i: int):
        return (300 + 4 * i, 190) if i < 90 else None if i < 135 else (-130 + 4 * (i - 135), 190)

    scene = LayeredScene(BACKGROUND, [Sprite.textured((130, 110), 13, path)])
    _, outs = run(scene, 230, slivers=slivers)
    if not slivers:
        # it moved out on its own: looked for along the borders, found coming in between
        # answers (the first answer that sees it, for frame 150, arrives at 156)
        assert next(i for i in range(135, 230) if ids_on(outs[i]) == [1]) < 156
        assert any("image border" in e.reason for e in returned_between_answers(outs))
    assert {i for out in outs.values() for i in ids_on(out)} == {1}
    assert ids_on(outs[229]) == [1]
    assert [e.track_id for e in events(outs, "returned")] == [1]


def test_a_different_object_coming_in_after_one_left_gets_a_new_id():
    """One object leaves on the right; 1.5 s later a different one (same size, same kind of
    texture) comes in on the left: the border search and the held border view must not give
    it the id of the one that left."""
    def gone(i: int):
        return (300 + 4 * i, 190) if i < 90 else None

    def newcomer(i: int):
        return None if i < 135 else (-130 + 4 * (i - 135), 190)

    scene = LayeredScene(BACKGROUND, [Sprite.textured((130, 110), 13, gone),
                                      Sprite.textured((130, 110), 23, newcomer)])
    _, outs = run(scene, 230, slivers=False)
    assert 1 not in {i for k in range(100, 230) for i in ids_on(outs[k])}
    assert ids_on(outs[229]) and not events(outs, "returned")


def test_hidden_object_moving_at_constant_velocity_is_predicted_where_it_is():
    """Its velocity is the object's own (not lowered by the camera motion, which its own
    corners must not pull along, nor by a half-hidden view's points on the occluder): 2 s
    behind a pillar, its predicted centre has moved as far as the object has, and lies within
    the model's jitter of the true centre."""
    vx, x0, y0, w, h = 3.0, 20.0, 190.0, 120, 100  # full px per frame (1.5 working px)
    scene = LayeredScene(BACKGROUND, [Sprite.textured((w, h), 12, linear(x0, y0, vx))],
                         [Occluder((220, 150, 300, 200))])  # hidden from frame ~60 to ~128
    tracker, _ = run(scene, 128)
    t = next(t for t in tracker._tracks if t.track_id == 1)
    assert not t.live and t.state == PREDICTED
    now = tracker.time_of(127)
    assert now - t.kf.t > 2.0  # predicted, not measured, for over 2 s
    assert np.allclose(t.kf.velocity, [1.5 * 30, 0.0], atol=1.5)  # working px/s
    moved = t.kf.position_at(now) - t.kf.position  # since it was last measured
    assert np.allclose(moved, [1.5 * 30 * (now - t.kf.t), 0.0], atol=2.0)  # working px
    frame = working_frame(scene.frame(127), TrackerConfig().max_side)
    x, y = tracker._hidden.predicted_full(t, 127, frame, now)
    true_x, true_y = x0 + vx * 127 + w / 2, y0 + h / 2  # the object's true centre
    assert abs(x - true_x) < 20 and abs(y - true_y) < 20  # answers jitter by 10, cells 28


def test_reidentification_prefers_one_well_placed_match_to_two_misplaced_ones():
    """Look-alikes crossing while hidden: each answer object is near the *other* track's
    prediction. Pairing everything (both wrong: 0.58 - 0.80 and 0.73 - 0.73 after the position
    penalties) must not beat the one right pair (0.80 - 0.08) with the other object left for
    the next answer (measured on the crossing sequence, frame 126)."""
    from stamp_ros.tracking.memory import Candidate, reidentify

    centres = np.array([[232.0, 100.0], [81.0, 100.0]])  # answer 0 right, answer 1 left
    radius = 172.0
    track1 = Candidate(key=1, similarities=np.array([0.798, 0.581]),
                       predicted=np.array([218.0, 100.0]), radius=radius)
    track2 = Candidate(key=2, similarities=np.array([0.733, 0.434]),
                       predicted=np.array([107.0, 100.0]), radius=radius)
    matches = reidentify(centres, [None, None], [track1, track2], threshold=0.45)
    assert [(i, c.key) for i, c, _, _ in matches] == [(0, 1)]
