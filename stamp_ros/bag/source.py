"""The input bag: opened with rosbags (sqlite3 or MCAP), its topics checked, messages streamed.

Every way a bag can be unusable (missing, not a bag, corrupt, truncated, a topic that is absent
or of the wrong type) becomes one :class:`~stamp_ros.engine.errors.InputError` line before the
model is loaded. Messages are streamed in bag-time order as raw CDR bytes and decoded only when
used, so memory does not grow with the length of the bag.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from rosbags.typesys.store import Typestore

from stamp_ros.engine.errors import InputError

__all__ = ["BagReadError", "InputBag", "TopicSpec"]


class BagReadError(InputError):
    """The bag became unreadable part-way through (truncated or corrupt data)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass(frozen=True)
class TopicSpec:
    """A topic the run reads: its role (for messages), the accepted types and its connections."""

    role: str
    """"image", "query", "depth" or "camera_info" (names the flag in error messages)."""
    topic: str
    msgtype: str
    count: int
    connections: tuple[Connection, ...]


_ROLE_FLAGS = {
    "image": "--image-topic",
    "query": "--query-topic",
    "depth": "--depth-topic",
    "camera_info": "--camera-info-topic",
}


def _storage_path(path: Path) -> Path:
    """What rosbags should open: the bag directory, or, for a directory whose recorder died
    before writing metadata.yaml, its single storage file (rosbags opens .mcap/.db3 directly)."""
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted([*path.glob("*.mcap"), *path.glob("*.db3")])
        if len(files) == 1:
            return files[0]
        raise InputError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    return path


class InputBag:
    """An open rosbag2 (directory, or a single .mcap / .db3 file)."""

    def __init__(self, path: str | Path, store: Typestore) -> None:
        self.path = Path(path)
        self.store = store
        if not self.path.exists():
            raise InputError(f"input bag {str(self.path)!r} does not exist")
        try:
            self._reader = Reader(_storage_path(self.path))
            self._reader.open()
        except InputError:
            raise
        except PermissionError as exc:
            raise InputError(f"cannot read input bag {str(self.path)!r}: {exc}") from exc
        except Exception as exc:  # ReaderError, FileNotFoundError, apsw/yaml/struct errors
            raise InputError(
                f"cannot open input bag {str(self.path)!r} (corrupt, truncated or not a "
                f"rosbag2): {_one_line(exc)}"
            ) from exc
        self._topics: dict[str, list[Connection]] = {}
        for conn in self._reader.connections:
            self._topics.setdefault(conn.topic, []).append(conn)

    # ------------------------------------------------------------------ metadata
    @property
    def storage(self) -> str:
        """"mcap" or "sqlite3"."""
        plugin = type(self._reader.storage).__name__.lower()
        if "mcap" in plugin:
            return "mcap"
        if "sqlite" in plugin:
            return "sqlite3"
        files = getattr(self._reader.storage, "storages", [])
        return "mcap" if any("mcap" in type(s).__name__.lower() for s in files) else "sqlite3"

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time) if self._reader.message_count else 0

    @property
    def duration_ns(self) -> int:
        return int(self._reader.duration) if self._reader.message_count else 0

    def topic(self, role: str, topic: str, accepted: tuple[str, ...]) -> TopicSpec:
        """The topic ``topic`` for ``role``, checked to exist with one of the ``accepted``
        types; InputError naming the flag and what the bag has otherwise."""
        flag = _ROLE_FLAGS.get(role, role)
        conns = self._topics.get(topic)
        if not conns:
            have = ", ".join(f"{t} ({c[0].msgtype})" for t, c in sorted(self._topics.items()))
            raise InputError(f"{flag} {topic!r} is not in the bag; it has: {have or 'nothing'}")
        types = sorted({c.msgtype for c in conns})
        if len(types) != 1 or types[0] not in accepted:
            raise InputError(
                f"{flag} {topic!r} has type {', '.join(types)}; supported: {', '.join(accepted)}"
            )
        return TopicSpec(role, topic, types[0], sum(c.msgcount for c in conns), tuple(conns))

    # ------------------------------------------------------------------ data
    def messages(self, specs: list[TopicSpec], *, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[tuple[TopicSpec, int, bytes]]:
        """(topic, bag time in ns, raw CDR) in bag-time order, optionally only bag times in
        [start_ns, stop_ns) (random access by time, e.g. one labelled frame); BagReadError
        when the bag turns out to be corrupt or truncated part-way."""
        by_topic = {spec.topic: spec for spec in specs}
        conns = [c for spec in specs for c in spec.connections]
        stream = self._reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        count = 0
        while True:
            try:
                conn, t_ns, raw = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                raise BagReadError(
                    f"input bag {str(self.path)!r} is corrupt or truncated after {count} "
                    f"messages: {_one_line(exc)}"
                ) from exc
            count += 1
            yield by_topic[conn.topic], int(t_ns), raw

    def timestamps(self, spec: TopicSpec, limit: int) -> list[int]:
        """Bag times of the first ``limit`` messages of one topic (to estimate its rate)."""
        out: list[int] = []
        try:
            for _, t_ns, _ in self._reader.messages(connections=list(spec.connections)):
                out.append(int(t_ns))
                if len(out) >= limit:
                    break
        except Exception:  # the main pass reports a broken bag properly
            pass
        return out

    def decode(self, raw: bytes, msgtype: str) -> Any:
        """A rosbags message from CDR bytes; ValueError for undecodable data."""
        try:
            return self.store.deserialize_cdr(raw, msgtype)
        except Exception as exc:
            raise ValueError(f"cannot decode a {msgtype} message: {_one_line(exc)}") from exc

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()
