"""The ~/tracks message carries what a planner needs to trust an id (issue 31): every tracked
object's state, look-alike flag, age and filtered 3D motion, and the ids the tracker remembers
but does not see. Built with the bag's kit (rosbags' classes, the real message definitions), so
no rclpy is needed; the node builds the same message through the same function."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from stamp_ros.bag.interfaces import RosbagsKit
from stamp_ros.client.result import SegmentResult
from stamp_ros.pipeline.results import ModelAnswer, tracks_msg
from stamp_ros.spatial.geometry import Object3D
from stamp_ros.tracking import (
    OCCLUDED,
    OUT_OF_VIEW,
    REIDENTIFIED,
    TRACKED,
    FrameTracks,
    HiddenTrack,
    TrackedObject,
)


def _object(track_id: int, state: str, **kw) -> TrackedObject:
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    return TrackedObject(track_id=track_id, mask=mask, bbox=(2, 1, 4, 2), area=6, score=0.8,
                         state=state, **kw)


def test_tracks_message_carries_state_age_3d_motion_and_lost_ids():
    kit = RosbagsKit()
    header = kit.segmentation().header
    header.frame_id = "cam"
    header.stamp.sec = 12
    seen = _object(4, TRACKED, age=3.5, position_3d=np.array([0.1, 0.2, 1.5]),
                   velocity_3d=np.array([0.3, 0.0, -0.1]))
    behind = _object(5, OCCLUDED, age=1.25)
    back = _object(7, REIDENTIFIED, age=9.0)
    back.ambiguous_with = (8,)  # returned among look-alikes: position decided
    tracks = FrameTracks(
        seq=30, objects=[seen, behind, back], propagated=True, grounded_seq=20,
        grounding=ModelAnswer(stamp=header.stamp, answer="the mugs", answer_reused=False,
                              request_id="c3"),
        hidden=[HiddenTrack(track_id=8, state=OUT_OF_VIEW, hidden_for=2.0,
                            predicted_center=None)])
    c = np.array([0.1, 0.2, 1.5])
    obj3d = Object3D(centroid=c, box_min=c - 0.05, box_max=c + 0.05, size=np.full(3, 0.1),
                     n_points=50)
    msg = tracks_msg(seq=30, header=header, query="the mugs", model="m", tracks=tracks,
                     objects=[obj3d, None, None], frame_id_3d="cam", kit=kit)

    states = [(i.track_id, i.track_state, bool(i.track_ambiguous), float(i.track_age))
              for i in msg.instances]
    inst = msg.instances[0]
    assert states == [(4, inst.TRACK_TRACKED, False, 3.5), (5, inst.TRACK_OCCLUDED, False, 1.25),
                      (7, inst.TRACK_REIDENTIFIED, True, 9.0)]
    assert (inst.track_position.x, inst.track_position.y, inst.track_position.z) == (0.1, 0.2,
                                                                                      1.5)
    assert (inst.track_velocity.x, inst.track_velocity.z) == (0.3, -0.1)
    # no 3D on this frame: no filtered motion published for it
    assert msg.instances[1].track_position.z == 0.0
    assert list(msg.lost_track_ids) == [8]

    # and the planner's view of the same message
    result = SegmentResult.from_msg(msg)
    assert [(o.track_id, o.track_state) for o in result.objects] == [
        (4, "tracked"), (5, "occluded"), (7, "reidentified")]
    assert result.objects[2].track_ambiguous and result.lost_track_ids == (8,)
    assert result.objects[0].track_velocity.tolist() == [0.3, 0.0, -0.1]


def test_untracked_instances_say_track_none():
    kit = RosbagsKit()
    inst = kit.instance()
    assert (inst.track_state, inst.TRACK_NONE, inst.track_age) == (0, 0, 0.0)
    assert SegmentResult.from_msg(SimpleNamespace(**{
        **{f: getattr(kit.segmentation(), f) for f in kit.segmentation().__dataclass_fields__},
        "instances": []})).lost_track_ids == ()
