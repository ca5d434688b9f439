"""Query-anchored tracking: the objects a sentence referred to, followed at camera rate.

ROS-free (numpy, OpenCV, scipy), shared by the node (:mod:`stamp_ros.ros.tracking`) and
``stamp-ros bag --track``. The model grounds the query every now and then
(:meth:`QueryTracker.ground`); between two answers every camera frame gets the tracked masks
carried forward by image motion (:meth:`QueryTracker.step`). See :mod:`.tracker` for the design.

May import: numpy, OpenCV, scipy; nothing else of stamp_ros and never rclpy or torch
(import-linter, ``.importlinter``).
"""

from __future__ import annotations

from stamp_ros.tracking.identity import TrackIds, assign_by_iou, iou_matrix
from stamp_ros.tracking.image import WorkingFrame, working_frame
from stamp_ros.tracking.tracker import FrameTracks, QueryTracker, TrackedObject, TrackerConfig

__all__ = [
    "FrameTracks",
    "QueryTracker",
    "TrackIds",
    "TrackedObject",
    "TrackerConfig",
    "WorkingFrame",
    "assign_by_iou",
    "iou_matrix",
    "working_frame",
]
