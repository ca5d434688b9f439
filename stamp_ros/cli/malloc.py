"""Process-level memory tuning for the node: return large frame buffers to the OS."""

from __future__ import annotations

import contextlib
import sys


def return_large_buffers_to_the_os() -> None:
    """Pin glibc's mmap threshold at 1 MiB.

    A camera node allocates and frees a multi-megabyte buffer per frame from several executor
    threads. glibc raises its mmap threshold after the first such free, so later frames come
    from per-thread heap arenas, which keep freed blocks: resident memory then creeps up by
    tens of megabytes under a 30 Hz 1080p stream. A fixed threshold keeps every large buffer
    in its own mapping, returned to the OS when freed. No-op where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        m_mmap_threshold = -3
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, 1 << 20)
