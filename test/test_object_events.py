"""Loss and return of tracked objects as a planner sees them (stamp_ros.client.object_events):
the events a TrackingSession reports, from the ids of consecutive ~/tracks frames."""

from __future__ import annotations

from types import SimpleNamespace

from stamp_ros.client.object_events import ObjectEvents
from stamp_ros.client.result import SegmentResult


def kinds(events) -> list[tuple[str, int]]:
    return [(e.kind, e.track_id) for e in events]


def test_hidden_object_is_lost_then_returns_under_its_id():
    ev = ObjectEvents()
    assert kinds(ev.update([3, 4], [], 1.0)) == [("appeared", 3), ("appeared", 4)]
    assert kinds(ev.update([3, 4], [], 1.1)) == []
    assert kinds(ev.update([3], [4], 1.2)) == [("lost", 4)]
    assert ev.lost == {4}
    assert kinds(ev.update([3], [4], 1.3)) == []  # still hidden: nothing new
    back = ev.update([3, 4], [], 3.0)
    assert kinds(back) == [("returned", 4)] and back[0].stamp == 3.0


def test_memory_running_out_or_track_ending_forgets_the_object():
    ev = ObjectEvents()
    ev.update([7, 8], [], 0.0)
    ev.update([8], [7], 0.5)
    assert kinds(ev.update([], [], 9.0)) == [("forgotten", 7), ("forgotten", 8)]
    # an id seen again after being forgotten (a later answer found it) returns
    assert kinds(ev.update([8], [], 9.5)) == [("returned", 8)]


def test_untracked_objects_and_ids_both_visible_and_lost_are_ignored_safely():
    ev = ObjectEvents()
    assert kinds(ev.update([0, 0, 5], [5, 0], 0.0)) == [("appeared", 5)]
    assert ev.visible == {5} and ev.lost == set()
    # an id first heard of as lost (the session started while it was hidden): no event until
    # it is seen; then it returns, since the node knew it before
    assert kinds(ev.update([5], [6], 0.1)) == []
    assert kinds(ev.update([5, 6], [], 0.2)) == [("returned", 6)]


def test_result_reads_the_tracking_fields_of_the_messages():
    point = lambda x, y, z: SimpleNamespace(x=x, y=y, z=z)  # noqa: E731
    image = SimpleNamespace(height=1, width=2, encoding="mono8", step=2, data=bytes([0, 255]))
    inst = SimpleNamespace(
        mask=image, grid_height=1, grid_width=1, grid=[1], grid_logits=[0.5], x_min=1, y_min=0,
        x_max=1, y_max=0, area=1, score=0.6, has_3d=True, frame_id_3d="cam",
        centroid=point(0, 0, 1), box_center=point(0, 0, 1), size=point(0.1, 0.1, 0.1),
        num_points=20, status_3d="", valid_depth_fraction=1.0, track_id=9, track_state=2,
        track_age=4.5, track_position=point(0.1, 0.2, 1.0), track_velocity=point(0.5, 0, 0))
    stamp = SimpleNamespace(sec=2, nanosec=0)
    msg = SimpleNamespace(
        success=True, error="", answer="a", query="q", request_id="c1", conversation="", turn=0,
        header=SimpleNamespace(frame_id="cam", stamp=stamp), instances=[inst], grid_height=1,
        grid_width=1, model="m", frame_age_ms=0.0, answer_reused=False, propagated=True,
        model_stamp=stamp, lost_track_ids=[11, 12],
        **{f: 0.0 for f in ("wait_ms", "preprocess_ms", "generate_ms", "mask_ms",
                            "postprocess_ms", "total_ms")})
    result = SegmentResult.from_msg(msg)
    obj = result.objects[0]
    assert (obj.track_id, obj.track_state, obj.track_age) == (9, "occluded", 4.5)
    assert obj.track_position.tolist() == [0.1, 0.2, 1.0]
    assert obj.track_velocity.tolist() == [0.5, 0.0, 0.0]
    assert result.lost_track_ids == (11, 12)
