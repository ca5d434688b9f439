"""Continuous-mode answer reuse: write the answer once, teacher-force it on the next frames.

Plain Python (no rclpy, no torch) so that the node and the offline ``bag`` command apply the same
rule: the first frame of a tracked query decodes an answer; the next ``every - 1`` frames reuse
its token ids (the engine then skips autoregressive decoding and runs only the prefill and the
mask pass); then the answer is written afresh, so a scene that changes is described anew.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class AnswerReuse:
    """The answer being reused for one camera's tracked query, and how many frames it has left."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._query: str | None = None
        self._token_ids: list[int] = []
        self._frames_left = 0

    def forced_ids(self, query: str) -> list[int] | None:
        """The answer ids to teacher-force for ``query`` on this frame, or None: decode."""
        with self._lock:
            if self._query == query and self._frames_left > 0:
                return list(self._token_ids)
            return None

    def record(self, query: str, token_ids: Sequence[int], every: int, forced: bool) -> None:
        """Account for one answered frame: a decoded answer starts a new reuse window of
        ``every - 1`` frames (none when ``every`` is 1); a forced one uses up a frame of it."""
        with self._lock:
            if not forced:
                if every > 1 and token_ids:
                    self._query, self._token_ids = query, list(token_ids)
                    self._frames_left = every - 1
                return
            if self._query != query:
                return
            self._frames_left -= 1
            if self._frames_left <= 0:
                self._query, self._token_ids, self._frames_left = None, [], 0

    def clear(self) -> None:
        """Forget the answer (a new query, a mode change, or the model was released)."""
        with self._lock:
            self._query, self._token_ids, self._frames_left = None, [], 0
