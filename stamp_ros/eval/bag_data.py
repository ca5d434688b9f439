"""``--dataset bag``: frames of a recorded rosbag2, labelled by a JSONL keyed on frame stamps.

A label line is a :mod:`~stamp_ros.eval.labels` line with ``stamp`` in place of ``image``: the
``header.stamp`` of the camera message on ``--image-topic`` (nanoseconds as an integer,
``{"sec": S, "nanosec": N}``, or seconds as a number or string; matched within
``--stamp-tolerance``, 1 µs by default, which absorbs float rounding of seconds). Masks and
polygons are at that frame's resolution; mask paths are relative to the labels file.

The bag is read with the same rosbags reader as ``stamp-ros bag``
(:class:`~stamp_ros.bag.source.InputBag`) and frames are converted with the node's converters,
so a frame gives the pixels the node would have seen. One pass over the topic reads only the
header stamps (straight from the CDR bytes); a labelled frame is fetched later by its bag time,
when the runner gets to it, so memory does not grow with the bag or the number of labels.
"""

from __future__ import annotations

import bisect
import struct
import threading
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stamp_ros.eval.labels import (
    label_text,
    label_truth,
    read_label_lines,
    sample_id,
    truth_problem,
)
from stamp_ros.eval.samples import DataError, Sample, Split

__all__ = ["BagFrames", "load_bag_split", "parse_stamp"]

DEFAULT_TOLERANCE_NS = 1000


def parse_stamp(value: Any) -> int:
    """A label's stamp in integer nanoseconds (ValueError for anything else)."""
    if isinstance(value, bool):
        raise ValueError("a stamp is not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping) and "sec" in value:
        sec, nsec = value["sec"], value.get("nanosec", value.get("nsec", 0))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sec, nsec)):
            raise ValueError("stamp sec/nanosec must be integers")
        return sec * 1_000_000_000 + nsec
    if isinstance(value, (float, str)):
        try:
            return int((Decimal(str(value)) * 1_000_000_000).to_integral_value())
        except InvalidOperation as exc:
            raise ValueError(f"not a stamp: {value!r}") from exc
    raise ValueError(f"not a stamp: {value!r}")


def _header_stamp(raw: bytes) -> int | None:
    """header.stamp (ns) of a CDR-serialised Image/CompressedImage, read from its first bytes."""
    if len(raw) < 12 or raw[0] != 0:
        return None
    if raw[1] == 1:
        sec, nsec = struct.unpack_from("<iI", raw, 4)
    elif raw[1] == 0:
        sec, nsec = struct.unpack_from(">iI", raw, 4)
    else:
        return None
    return sec * 1_000_000_000 + nsec


class BagFrames:
    """The image topic of a bag: an index of header stamps, and frames fetched by bag time."""

    def __init__(self, path: str | Path, topic: str) -> None:
        from stamp_ros.bag.interfaces import COMPRESSED_IMAGE, IMAGE, typestore
        from stamp_ros.bag.source import InputBag

        self.path = Path(path)
        self.bag = InputBag(self.path, typestore())
        self.spec = self.bag.topic("image", topic, (IMAGE, COMPRESSED_IMAGE))
        self._lock = threading.Lock()
        self._stamps: list[int] = []
        self._times: list[int] = []

    def index(self) -> None:
        """Read every header stamp of the topic (first message wins for a repeated stamp)."""
        seen: dict[int, int] = {}
        for _spec, t_ns, raw in self.bag.messages([self.spec]):
            stamp = _header_stamp(raw)
            if stamp is None:
                stamp = self._decode(raw).header.stamp
                stamp = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
            seen.setdefault(stamp, t_ns)
        self._stamps = sorted(seen)
        self._times = [seen[s] for s in self._stamps]

    @property
    def frames(self) -> int:
        return len(self._stamps)

    def find(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, int] | None:
        """(frame stamp, bag time) of the frame nearest ``stamp_ns`` within the tolerance."""
        i = bisect.bisect_left(self._stamps, stamp_ns)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self._stamps):
                d = abs(self._stamps[j] - stamp_ns)
                if d <= tolerance_ns and (best is None or d < best[0]):
                    best = (d, j)
        return None if best is None else (self._stamps[best[1]], self._times[best[1]])

    def _decode(self, raw: bytes) -> Any:
        try:
            return self.bag.decode(raw, self.spec.msgtype)
        except ValueError as exc:
            raise DataError(str(exc)) from exc

    def frame(self, stamp_ns: int, t_ns: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the frame with header stamp ``stamp_ns`` logged at ``t_ns``."""
        from stamp_ros.bag.interfaces import COMPRESSED_IMAGE
        from stamp_ros.msgs.compressed import compressed_msg_to_rgb
        from stamp_ros.msgs.convert import image_msg_to_rgb

        with self._lock:
            for _spec, _t, raw in self.bag.messages([self.spec], start_ns=t_ns, stop_ns=t_ns + 1):
                stamp = _header_stamp(raw)
                msg = self._decode(raw)
                if stamp is None:
                    stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(
                        msg.header.stamp.nanosec)
                if stamp != stamp_ns:
                    continue
                try:
                    if self.spec.msgtype == COMPRESSED_IMAGE:
                        return np.ascontiguousarray(compressed_msg_to_rgb(msg))
                    return np.array(image_msg_to_rgb(msg), copy=True)
                except ValueError as exc:
                    raise DataError(f"frame {stamp_ns}: {exc}") from exc
        raise DataError(f"frame with stamp {stamp_ns} vanished from {self.path}")

    def close(self) -> None:
        self.bag.close()


def load_bag_split(bag_path: str | Path, labels_path: str | Path, image_topic: str, *,
                   data_root: str | Path | None = None,
                   tolerance_ns: int = DEFAULT_TOLERANCE_NS) -> tuple[Split, BagFrames]:
    """The samples of a bag + labels pair (split name: the labels file's stem)."""
    labels_path = Path(labels_path)
    base = Path(data_root) if data_root else labels_path.parent
    frames = BagFrames(bag_path, image_topic)
    frames.index()
    name = labels_path.stem
    samples: list[Sample] = []
    seen: set[str] = set()
    unmatched = 0
    for n, obj, problem in read_label_lines(labels_path):
        sid = sample_id(obj, n)
        if sid in seen:
            sid, problem = f"{sid}#line{n}", problem or f"duplicate id {sid!r}"
        seen.add(sid)
        obj = obj or {}
        text = label_text(obj)
        stamp = match = None
        if not problem:
            try:
                stamp = parse_stamp(obj.get("stamp"))
            except ValueError as exc:
                problem = f"bad or missing 'stamp': {exc}"
        if not problem:
            match = frames.find(stamp, tolerance_ns)
            if match is None:
                unmatched += 1
                problem = f"no frame on {image_topic} has header stamp {stamp}"
            elif not text:
                problem = "no 'query' text"
            else:
                problem = truth_problem(obj)
        group = f"stamp{match[0]}" if match else sid
        samples.append(Sample(
            dataset="bag", split=name, id=sid, group=group, text=text,
            source=f"{Path(bag_path).name}@{match[0] if match else stamp}",
            image=partial(frames.frame, *match) if match else None,
            truth=None if problem else partial(label_truth, obj, base),
            problem=problem, meta={"line": n, "stamp": match[0] if match else stamp},
        ))
    notes = {"frames_on_topic": frames.frames, "labels": len(samples), "unmatched": unmatched}
    return Split("bag", name, samples, notes), frames
