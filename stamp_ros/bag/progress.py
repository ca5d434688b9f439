"""Progress on stderr: a redrawn bar on a terminal, a plain line per interval in a log.

Kept off stdout, which carries only the summary (or the ``--json`` object).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "ProgressLine", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLine:
    """One progress line on ``stream``: redrawn in place on a terminal at most 10 times a
    second; otherwise (CI logs, pipes) written as a full line at most every ``interval``
    seconds, so logs stay short and a supervisor can still tell the run is alive. What the line
    says is the subclass's (:class:`Progress` for frames, ``stamp-ros eval``'s for samples)."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True,
                 interval: float = 1.0, width: int = 24) -> None:
        self.total = max(0, int(total))
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else interval
        self.width = width
        self.start = time.monotonic()
        self._last = -1e9
        self._drawn = False

    def bar(self, done: int, total: int) -> str:
        filled = int(self.width * done / total)
        return "[" + "#" * filled + "." * (self.width - filled) + "]"

    def draw(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` unless the last line is younger than the interval (``force``: always)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the redrawn line so later output starts on a fresh one."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class Progress(ProgressLine):
    """Frames done / total, rate and ETA (the first frame is always shown)."""

    def line(self, done: int, errors: int = 0) -> str:
        elapsed = max(1e-9, time.monotonic() - self.start)
        rate = done / elapsed
        total = max(self.total, done)
        parts = [f"{done}/{total} frames"]
        if self.tty and total:
            parts.insert(0, self.bar(done, total))
        parts.append(f"{rate:.2f} fps")
        if errors:
            parts.append(f"{errors} errors")
        if rate > 0 and total > done:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        return "progress: " + " ".join(parts)

    def update(self, done: int, errors: int = 0, *, force: bool = False) -> None:
        if self.enabled:
            self.draw(self.line(done, errors), force=force or done <= 1)
