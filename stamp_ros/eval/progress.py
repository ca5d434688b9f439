"""The evaluation's progress line on stderr: samples done, rate, ETA and the running cIoU.

Like ``stamp-ros bag``'s progress (redrawn on a terminal, a line per interval in a log), but the
rate and ETA count only samples inferred in this session: resumed samples are done instantly and
would otherwise promise an ETA the rest of the run cannot keep.
"""

from __future__ import annotations

import time
from typing import TextIO

from stamp_ros.bag.progress import ProgressLine, format_duration

__all__ = ["EvalProgress"]


class EvalProgress(ProgressLine):
    def __init__(self, total: int, *, label: str = "eval", stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 2.0, width: int = 24) -> None:
        super().__init__(total, stream=stream, enabled=enabled, interval=interval, width=width)
        self.label = label

    def line(self, done: int, ran: int, bad: int, ciou: float | None, split: str) -> str:
        elapsed = max(1e-9, time.monotonic() - self.start)
        total = max(self.total, done)
        parts = [f"{self.label} {split}:"]
        if self.tty and total:
            parts.append(self.bar(done, total))
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
        if self.enabled:
            self.draw(self.line(done, ran, bad, ciou, split), force=force)
