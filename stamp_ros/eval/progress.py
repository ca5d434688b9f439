"""The evaluation's progress line on stderr: samples done, rate, ETA and the running cIoU.

Like ``stamp-ros bag``'s progress (redrawn on a terminal, a line per interval in a log), but the
rate and ETA count only samples inferred in this session: resumed samples are done instantly and
would otherwise promise an ETA the rest of the run cannot keep.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from stamp_ros.bag.progress import format_duration

__all__ = ["EvalProgress"]


class EvalProgress:
    def __init__(self, total: int, *, label: str = "eval", stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 2.0, width: int = 24) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else interval
        self.width = width
        self.start = time.monotonic()
        self._last = -1e9
        self._drawn = False

    def line(self, done: int, ran: int, bad: int, ciou: float | None, split: str) -> str:
        elapsed = max(1e-9, time.monotonic() - self.start)
        total = max(self.total, done)
        parts = [f"{self.label} {split}:"]
        if self.tty and total:
            filled = int(self.width * done / total)
            parts.append("[" + "#" * filled + "." * (self.width - filled) + "]")
        parts.append(f"{done}/{total} samples")
        if done > ran:
            parts.append(f"({done - ran} resumed)")
        if ran:
            parts.append(f"{elapsed / ran:.2f} s/sample")
        if ciou is not None:
            parts.append(f"cIoU {100 * ciou:.2f}")
        if bad:
            parts.append(f"{bad} bad")
        if ran and total > done:
            parts.append(f"ETA {format_duration((total - done) * elapsed / ran)}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        return " ".join(parts)

    def update(self, done: int, ran: int, bad: int, ciou: float | None, split: str, *,
               force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.line(done, ran, bad, ciou, split)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
