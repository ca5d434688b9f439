"""A ring of shared-memory image slots: frames to the inference process, masks back, no pickling.

Each slot is one shared-memory segment owned by the node (:class:`SlotRing`): a small control
header, then the frame (H x W x 3 uint8). The process maps a slot the first time a request
names it (:class:`SlotMaps`) and keeps it mapped across requests, so a request costs one copy
of the frame into the slot and nothing else. When the engine is done with the frame, the
process writes the masks over it (:func:`write_masks`): a result's uint8 masks are usually
smaller than the frame (three masks fill it), packed bits take an eighth of that, and only an
answer with more masks than even that fits sends them through the pipe.

Byte 0 of the header is the request's cancel flag: the node sets it, the process polls it
every few decode steps (``StampSegmenter``'s ``should_cancel``), so a cancel needs no message
and no thread on the process side.

On Linux a segment is an anonymous memory file (``memfd_create``, :class:`MemFile`): it has no
name anywhere, so nothing can be left behind however the node and its processes die (a
container stop, a process-group SIGKILL), and it is not limited by the size of /dev/shm (64 MiB
in a Docker container by default; a 1080p slot takes 7 MiB). The process receives the
segment's file descriptor over its socket (:func:`send_fd`, announced by a
:class:`~stamp_ros.inference.protocol.SlotFd` message) before the first request on it, maps it
and closes the descriptor; the memory is freed when the last mapping of it ends.

Elsewhere (no ``memfd_create``) a segment is a named POSIX segment, registered with
multiprocessing's resource tracker, which unlinks it if the node dies without cleaning up. When
the tracker dies with it (a whole process group killed), such segments stay behind in /dev/shm
under the dead node's pid; pids are reused, so every name also carries a random part and a
name that exists is never taken over (:data:`NAME_ATTEMPTS`). The process maps them by name
without registering (Python < 3.13 would register an attached segment too and unlink it when
the *process* exits, under the node).
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import secrets
import socket
import threading
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import numpy as np

from stamp_ros.inference.protocol import MaskLayout, SlotRef

HEADER = 64
"""Control bytes before the data (byte 0: cancel flag); keeps the data 64-byte aligned."""
DATA_OFFSET = HEADER
GRANULE = 1 << 20
"""Slots grow in whole MiB, so a camera's frames of one size never resize them again."""

NAME_ATTEMPTS = 8
"""New random names tried when a named segment's name already exists (left behind by a node
whose pid this one reuses) before giving up."""

USE_MEMFD = hasattr(os, "memfd_create")
"""Slots are anonymous memory files (Linux); else named POSIX segments (read when a ring is
made)."""

_names = itertools.count()


def frame_bytes(height: int, width: int) -> int:
    return height * width * 3


class MemFile:
    """An anonymous shared-memory file (memfd) mapped into the node, with the attributes of a
    ``SharedMemory`` the slots use (``name``, ``size``, ``buf``) and its descriptor (``fd``)
    to hand to the process. ``name`` only labels it (/proc/PID/fd, /proc/PID/maps)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self._mmap = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        """Unmap it here (BufferError while a view into it lives, as ``SharedMemory.close``)."""
        self.buf.release()
        self._mmap.close()

    def unlink(self) -> None:
        """Close the descriptor: the memory goes with the last mapping (here or in a process)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Slot:
    """One segment of the ring (node side)."""

    def __init__(self, index: int, prefix: str, size: int, anonymous: bool = True) -> None:
        self.index = index
        self._prefix = prefix
        self._anonymous = anonymous
        self.shm: MemFile | shared_memory.SharedMemory = self._create(size)

    def _create(self, size: int) -> MemFile | shared_memory.SharedMemory:
        size = -(-max(size, 1) // GRANULE) * GRANULE
        if self._anonymous:
            return MemFile(self._new_name(), size)
        for _ in range(NAME_ATTEMPTS - 1):
            with contextlib.suppress(FileExistsError):
                return shared_memory.SharedMemory(name=self._new_name(), create=True, size=size)
        return shared_memory.SharedMemory(name=self._new_name(), create=True, size=size)

    def _new_name(self) -> str:
        return f"{self._prefix}_{self.index}_{next(_names)}_{secrets.token_hex(4)}"

    @property
    def ref(self) -> SlotRef:
        return SlotRef(self.index, self.shm.name, self.shm.size, self._anonymous)

    @property
    def fd(self) -> int:
        """The current segment's descriptor (-1 for a named segment)."""
        return self.shm.fd if isinstance(self.shm, MemFile) else -1

    @property
    def capacity(self) -> int:
        """Data bytes after the header."""
        return self.shm.size - HEADER

    def ensure(self, data_bytes: int) -> None:
        """Grow to hold ``data_bytes`` (a new segment; the process maps the new one when a
        request names it and drops the old mapping)."""
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


def _dispose(shm: MemFile | shared_memory.SharedMemory) -> None:
    try:
        shm.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()


class SlotRing:
    """``count`` slots, each lent to one request at a time (node side, thread-safe).

    ``anonymous``: memfd segments (default where the system has them, :data:`USE_MEMFD`), else
    named ones."""

    def __init__(self, count: int = 2, initial_bytes: int = GRANULE, prefix: str = "",
                 anonymous: bool | None = None) -> None:
        if count < 1:
            raise ValueError("a slot ring needs at least one slot")
        anonymous = USE_MEMFD if anonymous is None else anonymous
        prefix = prefix or f"stamp_ros_{os.getpid()}_{next(_names)}"
        self._slots = [Slot(i, prefix, initial_bytes + HEADER, anonymous) for i in range(count)]
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
        """Free every segment (a lent slot too: its mapping lives on until released)."""
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


# ------------------------------------------------------------------------ descriptors


FD_MARK = b"F"
"""The byte that carries a descriptor on the socket (after a SlotFd message)."""


def send_fd(conn: Connection, fd: int) -> None:
    """Send ``fd`` over ``conn``'s Unix socket (SCM_RIGHTS), right after a message announcing
    it, under the same send lock: the receiver reads it next (:func:`recv_fd`)."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        socket.send_fds(sock, [FD_MARK], [fd])


def recv_fd(conn: Connection) -> int:
    """The descriptor :func:`send_fd` sent (close-on-exec); EOFError when none came."""
    with socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        data, fds, _flags, _addr = socket.recv_fds(
            sock, len(FD_MARK), 1, getattr(socket, "MSG_CMSG_CLOEXEC", 0))
    if data != FD_MARK or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise EOFError("the node's slot descriptor did not arrive")
    return fds[0]


# ------------------------------------------------------------------------ process side


class Mapping:
    """A node segment mapped into the process: from the descriptor the node sent (``fd``,
    closed here once mapped), or opened by name and not registered with any resource
    tracker."""

    def __init__(self, name: str, fd: int = -1) -> None:
        if fd < 0:
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

    def adopt(self, ref: SlotRef, fd: int) -> None:
        """Map the segment whose descriptor the node just sent (:class:`SlotFd`)."""
        self._replace(ref.index, Mapping(ref.name, fd))

    def get(self, ref: SlotRef) -> Mapping:
        current = self._maps.get(ref.index)
        if current is not None and current.name == ref.name:
            return current
        if ref.fd:
            raise RuntimeError(f"slot segment {ref.name} was never handed to this process")
        return self._replace(ref.index, Mapping(ref.name))

    def _replace(self, index: int, mapping: Mapping) -> Mapping:
        current = self._maps.get(index)
        if current is not None:
            # BufferError: a view is still alive; the mapping goes with the garbage collector.
            with contextlib.suppress(BufferError):
                current.close()
        self._maps[index] = mapping
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
