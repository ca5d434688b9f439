"""Per-sample results on disk: what makes a run resumable and two runs comparable.

An output folder holds::

    OUT/samples.jsonl        every sample's record, in dataset order (written at the end)
    OUT/parts/rank<R>.jsonl  records appended as they are made, one file per process
    OUT/summary.json, OUT/table.md, OUT/worst/  (see :mod:`~stamp_ros.eval.report`)

A record is appended and flushed the moment its sample is done, so a run killed at any point
loses at most the sample in flight; a torn last line is skipped when read back. Resuming reads
``samples.jsonl`` and every part file, skips the samples already there and runs the rest.
Each record carries the fingerprint of the settings that change results (model, dtype, pixel
budget, prompt mode, ...): a folder with records of other settings is refused rather than mixed.

A sample can have several records: ``--retry-errors`` runs a failed sample again and appends
its new record (success or another error) while the old one stays where it was, until the
next merge. The **latest** record of a sample wins. Each record carries ``written``, the Unix
time its writer appended it (kept through the merge), because file order alone cannot say which
is later: a retry goes to the part file of whichever rank has the sample in the retrying run,
which need not be the rank that wrote the error (another process count, a run without
torchrun after one with it). So: within one file the later line wins; across files the larger
``written`` wins (a record without one, from an older version, is older than any with one);
on a tie the later file wins, ``samples.jsonl`` first and then the part files by name (part
files are appended after the merge that wrote ``samples.jsonl``). Across hosts this trusts
their clocks to agree to well under the time between two runs of the command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from stamp_ros.engine.errors import InputError

__all__ = ["RecordWriter", "config_fingerprint", "load_records", "read_jsonl", "write_merged"]

logger = logging.getLogger("stamp_ros.eval")

RESULTS = "samples.jsonl"
PARTS = "parts"
WRITTEN = "written"
"""The record field holding the Unix time its writer appended it (see the module docstring)."""


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A short, stable hash of the settings that change a sample's result."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> Iterator[dict]:
    """The records of one JSONL file; torn or non-record lines are skipped (and logged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            logger.warning("%s:%d: skipping a torn or invalid line", path, n)
            continue
        if isinstance(rec, dict) and "key" in rec:
            yield rec


def record_files(out_dir: Path) -> list[Path]:
    files = [out_dir / RESULTS] if (out_dir / RESULTS).exists() else []
    parts = out_dir / PARTS
    if parts.is_dir():
        files += sorted(parts.glob("rank*.jsonl"))
    return files


def _written(rec: Mapping[str, Any]) -> float:
    value = rec.get(WRITTEN)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return -math.inf  # written by a version without the field: older than any with it


def load_records(out_dir: Path, fingerprint: str) -> dict[str, dict]:
    """key -> the latest record of every sample already done in ``out_dir`` (which one is the
    latest: see the module docstring).

    InputError when the folder holds records made with other settings.
    """
    done: dict[str, dict] = {}
    for path in record_files(out_dir):
        mine: dict[str, dict] = {}
        for rec in read_jsonl(path):
            if rec.get("cfg") != fingerprint:
                raise InputError(
                    f"{out_dir} holds results of other settings ({path.name}: settings "
                    f"{rec.get('cfg')}, this run {fingerprint}); resume with the same options, "
                    "or choose another --out"
                )
            mine[rec["key"]] = rec  # within one file, the later line
        for key, rec in mine.items():
            before = done.get(key)
            if before is None or _written(rec) >= _written(before):
                done[key] = rec
    return done


class RecordWriter:
    """Appends one process's records to ``parts/rank<R>.jsonl``, flushed per record, each
    stamped with the time it was written (``written``)."""

    def __init__(self, out_dir: Path, rank: int) -> None:
        self.path = out_dir / PARTS / f"rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A killed run may have left half a line: start ours on a fresh one.
        torn = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        if torn:
            self._file.write("\n")

    def write(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``record`` and return it as written: a copy with its ``written`` time, the
        record to keep (the merge carries the time into ``samples.jsonl``)."""
        stamped = {**record, WRITTEN: time.time()}
        self._file.write(json.dumps(stamped, separators=(",", ":")) + "\n")
        self._file.flush()
        return stamped

    def close(self) -> None:
        self._file.close()


def write_merged(out_dir: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``samples.jsonl`` atomically from ``records`` and drop the merged part files."""
    path = out_dir / RESULTS
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    parts = out_dir / PARTS
    if parts.is_dir():
        for part in parts.glob("rank*.jsonl"):
            part.unlink()
        with contextlib.suppress(OSError):  # another host's parts may still be there
            parts.rmdir()
    return path
