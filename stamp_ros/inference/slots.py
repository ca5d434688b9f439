"""A ring of shared-memory image slots: frames to the inference process, masks back, no pickling.

Each slot is one POSIX shared-memory segment owned by the node (:class:`SlotRing`): a small
control header, then the frame (H x W x 3 uint8). The process maps a slot by name the first
time a request names it (:class:`SlotMaps`) and keeps it mapped across requests, so a request
costs one copy of the frame into the slot and nothing else. When the engine is done with the
frame, the process writes the masks over it (:func:`write_masks`): a result's uint8 masks are
usually smaller than the frame (three masks fill it), packed bits take an eighth of that, and
only an answer with more masks than even that fits sends them through the pipe.

Byte 0 of the header is the request's cancel flag: the node sets it, the process polls it
every few decode steps (``StampSegmenter``'s ``should_cancel``), so a cancel needs no message
and no thread on the process side.

The node's segments are registered with multiprocessing's resource tracker, which unlinks them
if the node dies without cleaning up. When the tracker dies with it (a whole process group
killed), the segments stay behind in /dev/shm under the dead node's pid; pids are reused, so
every name also carries a random part and a name that exists is never taken over
(:data:`NAME_ATTEMPTS`). The process maps them without registering (Python < 3.13
would register an attached segment too and unlink it when the *process* exits, under the node).
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import secrets
import threading
from multiprocessing import shared_memory

import numpy as np

from stamp_ros.inference.protocol import MaskLayout, SlotRef

HEADER = 64
"""Control bytes before the data (byte 0: cancel flag); keeps the data 64-byte aligned."""
DATA_OFFSET = HEADER
GRANULE = 1 << 20
"""Slots grow in whole MiB, so a camera's frames of one size never resize them again."""

NAME_ATTEMPTS = 8
"""New random names tried when a segment's name already exists (left behind by a node whose
pid this one reuses) before giving up."""

_names = itertools.count()


def frame_bytes(height: int, width: int) -> int:
    return height * width * 3


class Slot:
    """One segment of the ring (node side)."""

    def __init__(self, index: int, prefix: str, size: int) -> None:
        self.index = index
        self._prefix = prefix
        self.shm = self._create(size)

    def _create(self, size: int) -> shared_memory.SharedMemory:
        size = -(-max(size, 1) // GRANULE) * GRANULE
        for _ in range(NAME_ATTEMPTS - 1):
            with contextlib.suppress(FileExistsError):
                return shared_memory.SharedMemory(name=self._new_name(), create=True, size=size)
        return shared_memory.SharedMemory(name=self._new_name(), create=True, size=size)

    def _new_name(self) -> str:
        return f"{self._prefix}_{self.index}_{next(_names)}_{secrets.token_hex(4)}"

    @property
    def ref(self) -> SlotRef:
        return SlotRef(self.index, self.shm.name, self.shm.size)

    @property
    def capacity(self) -> int:
        """Data bytes after the header."""
        return self.shm.size - HEADER

    def ensure(self, data_bytes: int) -> None:
        """Grow to hold ``data_bytes`` (a new segment under a new name; the process maps the new
        one when a request names it and drops the old mapping)."""
        if data_bytes <= self.capacity:
            return
        old, self.shm = self.shm, self._create(data_bytes + HEADER)
        _dispose(old)

    def write_frame(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self.ensure(frame_bytes(h, w))
        dst = np.ndarray((h, w, 3), np.uint8, buffer=self.shm.buf, offset=DATA_OFFSET)
        np.copyto(dst, image)
        del dst
        self.shm.buf[0] = 0

    def cancel(self) -> None:
        self.shm.buf[0] = 1

    def read_masks(self, layout: MaskLayout) -> list[np.ndarray]:
        return read_masks(layout, self.shm.buf)

    def close(self) -> None:
        _dispose(self.shm)


def _dispose(shm: shared_memory.SharedMemory) -> None:
    try:
        shm.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()


class SlotRing:
    """``count`` slots, each lent to one request at a time (node side, thread-safe)."""

    def __init__(self, count: int = 2, initial_bytes: int = GRANULE, prefix: str = "") -> None:
        if count < 1:
            raise ValueError("a slot ring needs at least one slot")
        prefix = prefix or f"stamp_ros_{os.getpid()}_{next(_names)}"
        self._slots = [Slot(i, prefix, initial_bytes + HEADER) for i in range(count)]
        self._free = list(self._slots)
        self._cond = threading.Condition()
        self._closed = False

    def acquire(self) -> Slot:
        """A free slot; waits while every slot is lent (more concurrent callers than slots)."""
        with self._cond:
            while not self._free and not self._closed:
                self._cond.wait()
            if self._closed:
                raise RuntimeError("the slot ring is closed")
            return self._free.pop()

    def release(self, slot: Slot) -> None:
        with self._cond:
            if self._closed:
                return
            self._free.append(slot)
            self._cond.notify()

    @property
    def names(self) -> list[str]:
        return [slot.shm.name for slot in self._slots]

    def close(self) -> None:
        """Unlink every segment (a lent slot too: its mapping lives on until released)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for slot in self._slots:
            try:
                slot.close()
            except BufferError:  # a numpy view into it is still alive somewhere: unlink only
                slot.shm.unlink()


# ------------------------------------------------------------------------ process side


class Mapping:
    """A node segment mapped into the process, not registered with any resource tracker."""

    def __init__(self, name: str) -> None:
        import _posixshmem  # CPython's own binding (what SharedMemory uses), POSIX only

        fd = _posixshmem.shm_open("/" + name.lstrip("/"), os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.name = name
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        self.buf.release()
        self._mmap.close()


class SlotMaps:
    """The process's mappings of the node's slots, by slot index (a grown slot replaces the
    old mapping)."""

    def __init__(self) -> None:
        self._maps: dict[int, Mapping] = {}

    def get(self, ref: SlotRef) -> Mapping:
        current = self._maps.get(ref.index)
        if current is not None and current.name == ref.name:
            return current
        if current is not None:
            # BufferError: a view is still alive; the mapping goes with the garbage collector.
            with contextlib.suppress(BufferError):
                current.close()
        mapping = self._maps[ref.index] = Mapping(ref.name)
        return mapping

    def close(self) -> None:
        for mapping in self._maps.values():
            with contextlib.suppress(BufferError):
                mapping.close()
        self._maps.clear()


def frame_view(buf: memoryview, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W, 3) uint8 frame in a slot, without a copy."""
    h, w = shape
    return np.ndarray((h, w, 3), np.uint8, buffer=buf, offset=DATA_OFFSET)


def cancelled(buf: memoryview) -> bool:
    return buf[0] != 0


# ------------------------------------------------------------------------ masks


def write_masks(masks: list[np.ndarray], buf: memoryview) -> MaskLayout:
    """Put a result's full-size 0/1 masks into the slot (over the frame, which the engine no
    longer needs), or say that they travel inline."""
    if not masks:
        return MaskLayout("none")
    h, w = masks[0].shape
    n = len(masks)
    room = len(buf) - DATA_OFFSET
    if any(m.shape != (h, w) for m in masks):
        return MaskLayout("inline", n, (h, w), [np.asarray(m, np.uint8) for m in masks])
    if n * h * w <= room:
        dst = np.ndarray((n, h, w), np.uint8, buffer=buf, offset=DATA_OFFSET)
        for k, mask in enumerate(masks):
            np.copyto(dst[k], mask, casting="unsafe")
        del dst
        return MaskLayout("u8", n, (h, w))
    packed = -(-h * w // 8)
    if n * packed <= room:
        dst = np.ndarray((n, packed), np.uint8, buffer=buf, offset=DATA_OFFSET)
        for k, mask in enumerate(masks):
            dst[k] = np.packbits(np.asarray(mask).reshape(-1) != 0)
        del dst
        return MaskLayout("bits", n, (h, w))
    return MaskLayout("inline", n, (h, w), [np.asarray(m, np.uint8) for m in masks])


def read_masks(layout: MaskLayout, buf: memoryview) -> list[np.ndarray]:
    """The masks of ``layout`` as private (H, W) uint8 arrays (copied out of the slot)."""
    if layout.kind == "none":
        return []
    if layout.kind == "inline":
        return list(layout.masks or [])
    n, (h, w) = layout.count, layout.shape
    if layout.kind == "u8":
        src = np.ndarray((n, h, w), np.uint8, buffer=buf, offset=DATA_OFFSET)
        out = [src[k].copy() for k in range(n)]
    elif layout.kind == "bits":
        packed = -(-h * w // 8)
        src = np.ndarray((n, packed), np.uint8, buffer=buf, offset=DATA_OFFSET)
        out = [np.unpackbits(src[k], count=h * w).reshape(h, w) for k in range(n)]
    else:
        raise ValueError(f"unknown mask layout {layout.kind!r}")
    del src
    return out
