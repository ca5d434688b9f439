"""Query-anchored tracking: the objects a sentence referred to, followed at camera rate.

ROS-free (numpy, OpenCV, scipy), shared by the node (:mod:`stamp_ros.ros.tracking`) and
``stamp-ros bag --track``. The model grounds the query every now and then
(:meth:`QueryTracker.ground`); between two answers every camera frame gets the tracked masks
carried forward by image motion (:meth:`QueryTracker.step`). See :mod:`.tracker` for the design.

Object permanence (issue 31): a partly hidden object is carried on its visible points
(OCCLUDED), a hidden one predicted by its motion (:mod:`.kalman`), and a track that is no longer
seen is remembered (``TrackerConfig.memory`` s) with its appearance (:mod:`.appearance`, a
pluggable descriptor) so that a later answer's object takes its id again (:mod:`.memory`), or
the tracker finds it again itself between answers where its motion or the camera's puts it
(:mod:`.reacquire`). The hidden-track bookkeeping is :mod:`.permanence`, the per-frame rule
for a live track :mod:`.follow`, the records :mod:`.track`, frame times :mod:`.clock`. The
types a node or a client reads are in :mod:`.state`.

May import: numpy, OpenCV, scipy; nothing else of stamp_ros and never rclpy or torch
(import-linter, ``.importlinter``).
"""

from __future__ import annotations

from stamp_ros.tracking.appearance import Appearance, ClassicAppearance
from stamp_ros.tracking.identity import TrackIds, assign_by_iou, iou_matrix
from stamp_ros.tracking.image import WorkingFrame, working_frame
from stamp_ros.tracking.kalman import ConstantVelocity
from stamp_ros.tracking.state import (
    HIDDEN_STATES,
    OCCLUDED,
    OUT_OF_VIEW,
    PREDICTED,
    REIDENTIFIED,
    REMEMBERED,
    TRACKED,
    VISIBLE_STATES,
    FrameTracks,
    HiddenTrack,
    TrackedObject,
    TrackerConfig,
    TrackEvent,
)
from stamp_ros.tracking.tracker import QueryTracker

__all__ = [
    "HIDDEN_STATES",
    "OCCLUDED",
    "OUT_OF_VIEW",
    "PREDICTED",
    "REIDENTIFIED",
    "REMEMBERED",
    "TRACKED",
    "VISIBLE_STATES",
    "Appearance",
    "ClassicAppearance",
    "ConstantVelocity",
    "FrameTracks",
    "HiddenTrack",
    "QueryTracker",
    "TrackEvent",
    "TrackIds",
    "TrackedObject",
    "TrackerConfig",
    "WorkingFrame",
    "assign_by_iou",
    "iou_matrix",
    "working_frame",
]
