"""Outputs of ``stamp-ros bag``: the annotated rosbag2 (MCAP or sqlite3) and the overlay video.

Both are checked before the model loads (an unwritable path costs no minutes of loading) and
both are finished by :meth:`close` on every exit path, Ctrl-C included: the bag then has its
summary and metadata.yaml and the video its index, holding every frame processed so far. The
rosbags MCAP writer flushes a chunk every MiB, so memory stays flat however long the bag is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from stamp_ros.bag.source import TopicSpec
from stamp_ros.engine.errors import InputError

__all__ = ["OutputBag", "VideoOut", "check_writable"]

BAG_VERSION = 8
"""rosbag2 metadata version written: 8 is read by Jazzy and Kilted (rosbags writes 8 or 9)."""


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable(path: Path, what: str) -> None:
    """InputError unless ``path`` (not existing yet) can be created: its nearest existing
    ancestor must be a directory we can create files in. Probed by creating a file, since
    permission bits say nothing for root or for read-only mounts."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {str(path)!r}: {str(parent)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".stamp-ros-probe-")
    except OSError as exc:
        raise InputError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


class OutputBag:
    """The annotated bag: result/mask/overlay topics, plus copies of the input topics."""

    STORAGES: ClassVar[dict[str, StoragePlugin]] = {
        "mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

    def __init__(self, path: str | Path, store: Typestore, *, storage: str = "mcap",
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        self.store = store
        if storage not in self.STORAGES:
            raise InputError(f"output storage must be one of {', '.join(self.STORAGES)}")
        self.storage = storage
        self.overwrite = overwrite
        self._writer: Writer | None = None
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.check()

    def check(self) -> None:
        """Refuse an output that exists (unless it is a bag and --overwrite) or can't be made."""
        if self.path.exists():
            is_bag = self.path.is_dir() and (
                (self.path / "metadata.yaml").exists() or not any(self.path.iterdir()))
            if not self.overwrite:
                raise InputError(f"output {str(self.path)!r} exists (--overwrite replaces a bag)")
            if not is_bag:
                raise InputError(f"output {str(self.path)!r} exists and is not a bag directory; "
                                 "not replacing it")
        else:
            check_writable(self.path, "output bag")

    def open(self) -> None:
        if self.path.exists():  # checked in check(): an (empty) bag directory and --overwrite
            shutil.rmtree(self.path)
        writer = Writer(self.path, version=BAG_VERSION,
                        storage_plugin=self.STORAGES[self.storage])
        try:
            writer.open()
        except Exception as exc:
            raise InputError(f"cannot create output bag {str(self.path)!r}: {exc}") from exc
        self._writer = writer

    def add_topic(self, topic: str, msgtype: str) -> None:
        assert self._writer is not None
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self.counts[topic] = 0

    def add_copy(self, spec: TopicSpec) -> None:
        """A topic copied byte for byte; its definition is the input's own when the bag has
        one (a type this typestore may not know exactly), else the typestore's."""
        assert self._writer is not None
        conn = spec.connections[0]
        msgdef = conn.msgdef.data if conn.msgdef.data else None
        if msgdef and conn.digest:
            self._conns[spec.topic] = self._writer.add_connection(
                spec.topic, spec.msgtype, msgdef=msgdef, rihs01=conn.digest)
        else:
            self._conns[spec.topic] = self._writer.add_connection(
                spec.topic, spec.msgtype, typestore=self.store)
        self.counts[spec.topic] = 0

    def write(self, topic: str, t_ns: int, msg: Any) -> None:
        self.write_raw(topic, t_ns, self.store.serialize_cdr(msg, type(msg).__msgtype__))

    def write_raw(self, topic: str, t_ns: int, raw: bytes | memoryview) -> None:
        assert self._writer is not None
        self._writer.write(self._conns[topic], int(t_ns), raw)
        self.counts[topic] += 1

    def close(self) -> None:
        """Write the summary and metadata.yaml (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


class VideoOut:
    """The overlays as an MP4 (OpenCV, mp4v). Opened at the first frame's size; a frame of
    another size (a camera that changed resolution) is scaled to it."""

    FOURCC = "mp4v"

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._writer: Any = None
        if self.path.exists() and self.path.is_dir():
            raise InputError(f"--video {str(self.path)!r} is a directory")
        check_writable(self.path, "video")
        # Same container and codec, written beside the target: fails now rather than after the
        # model has loaded when OpenCV has no writer for this suffix.
        probe = _nearest_existing(self.path.parent) / f".stamp-ros-probe{self.path.suffix}"
        writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*self.FOURCC), self.fps,
                                 (16, 16))
        ok = writer.isOpened()
        writer.release()
        probe.unlink(missing_ok=True)
        if not ok:
            raise InputError(f"OpenCV cannot write {self.FOURCC} video to {str(self.path)!r} "
                             "(use a .mp4 or .avi file name)")

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (w, h)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.FOURCC),
                                           self.fps, self.size)
            if not self._writer.isOpened():
                raise InputError(f"OpenCV cannot open {str(self.path)!r} for writing")
        if (w, h) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
