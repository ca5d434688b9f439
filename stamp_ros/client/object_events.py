"""Loss and return of tracked objects, read from consecutive ``~/tracks`` frames.

A planner rarely wants to diff id lists itself: "the mug went out of sight", "it is back, same
id", "the node gave up on it" are the events it acts on. :class:`ObjectEvents` turns each
tracked frame (the ids in ``instances`` and in ``lost_track_ids``) into those events. No rclpy:
:class:`~stamp_ros.client.TrackingSession` feeds it, and so can a tool reading a bag.

An id is *visible* on a frame when it is in ``instances``, *lost* when it is in
``lost_track_ids`` (the node remembers it for ``track_memory`` seconds), *gone* when it is in
neither. Events, per id:

* ``appeared``: visible for the first time;
* ``lost``: was visible, now lost;
* ``returned``: was lost (or gone from an earlier frame), visible again with the same id;
* ``forgotten``: was visible or lost, now gone (the node dropped the track: its memory ran out,
  or the query changed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ObjectEvent", "ObjectEvents"]

EVENT_KINDS = ("appeared", "lost", "returned", "forgotten")


@dataclass(frozen=True)
class ObjectEvent:
    """One change of one tracked object between two frames."""

    kind: str
    """One of ``appeared``, ``lost``, ``returned``, ``forgotten``."""
    track_id: int
    stamp: float
    """Header stamp (s) of the frame on which the change was seen."""


class ObjectEvents:
    """Remembers which ids were visible or lost on the previous frame (see the module
    docstring); :meth:`update` returns the events of a new frame in id order."""

    def __init__(self) -> None:
        self.visible: set[int] = set()
        self.lost: set[int] = set()
        self._ever: set[int] = set()

    def update(self, visible: Iterable[int], lost: Iterable[int],
               stamp: float) -> list[ObjectEvent]:
        """The events between the previous frame and this one (ids 0, untracked, ignored)."""
        now_visible = {int(i) for i in visible if int(i)}
        now_lost = {int(i) for i in lost if int(i)} - now_visible
        events = []
        for track_id in sorted(now_visible | now_lost | self.visible | self.lost):
            was_visible, was_lost = track_id in self.visible, track_id in self.lost
            if track_id in now_visible and not was_visible:
                kind = "returned" if was_lost or track_id in self._ever else "appeared"
            elif track_id in now_lost and not was_lost:
                kind = "lost" if was_visible or track_id in self._ever else ""
            elif (was_visible or was_lost) and track_id not in now_visible | now_lost:
                kind = "forgotten"
            else:
                continue
            if kind:
                events.append(ObjectEvent(kind, track_id, float(stamp)))
        self.visible, self.lost = now_visible, now_lost
        self._ever |= now_visible
        return events
