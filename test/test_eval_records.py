"""Which record of a sample a resumed ``stamp-ros eval`` keeps: the latest one, wherever it is.

Real files written by the real writer and merge (stamp_ros.eval.records), in the order a run,
an interrupted ``--retry-errors`` run and a resume would write them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stamp_ros.eval.records import RecordWriter, load_records, read_jsonl, write_merged

FP = "f" * 16
KEY = "refcoco/val/r1s1000"
OTHER = "refcoco/val/r1s1001"


def rec(key: str, status: str, error: str = "") -> dict:
    return {"key": key, "cfg": FP, "status": status, "error": error}


def write(out: Path, rank: int, *records: dict) -> list[dict]:
    """Append ``records`` as rank ``rank`` of one run does; the records as read back."""
    writer = RecordWriter(out, rank)
    try:
        for r in records:
            writer.write(r)
    finally:
        writer.close()
    return list(read_jsonl(writer.path))[-len(records):]


def first_run(out: Path) -> None:
    """A finished run: KEY failed, OTHER succeeded, both merged into samples.jsonl."""
    write_merged(out, write(out, 0, rec(KEY, "inference_error", "out of memory"),
                            rec(OTHER, "ok")))
    assert not (out / "parts").exists()


def test_a_successful_retry_in_a_part_file_wins_over_the_merged_error(tmp_path):
    first_run(tmp_path)
    # `--retry-errors`, interrupted before its merge: the retry is only in the part file.
    write(tmp_path, 0, rec(KEY, "ok"))
    done = load_records(tmp_path, FP)
    assert done[KEY]["status"] == "ok"
    assert done[OTHER]["status"] == "ok"


def test_a_retry_that_errors_again_is_the_later_record(tmp_path):
    first_run(tmp_path)
    write(tmp_path, 0, rec(KEY, "inference_error", "CUDA error: again"))
    assert load_records(tmp_path, FP)[KEY]["error"] == "CUDA error: again"


def test_the_later_line_of_one_part_file_wins(tmp_path):
    # Killed twice: the first run's error and the retry's success both in rank0.jsonl.
    write(tmp_path, 0, rec(KEY, "data_error", "cannot read image"))
    write(tmp_path, 0, rec(KEY, "ok"))
    assert load_records(tmp_path, FP)[KEY]["status"] == "ok"
    # ... and a third run whose retry failed again: that is the latest now.
    write(tmp_path, 0, rec(KEY, "inference_error", "engine refused"))
    assert load_records(tmp_path, FP)[KEY]["error"] == "engine refused"


def test_across_part_files_the_later_written_record_wins(tmp_path):
    """A retry lands in the part file of the rank that has the sample in the retrying run:
    rank 1 of a two-process run after a one-process run, rank 0 the other way round."""
    one_then_two = tmp_path / "a"
    write(one_then_two, 0, rec(KEY, "inference_error", "out of memory"))
    write(one_then_two, 1, rec(KEY, "ok"))
    assert load_records(one_then_two, FP)[KEY]["status"] == "ok"

    two_then_one = tmp_path / "b"
    write(two_then_one, 1, rec(KEY, "inference_error", "out of memory"))
    write(two_then_one, 0, rec(KEY, "ok"))
    assert load_records(two_then_one, FP)[KEY]["status"] == "ok"


def test_the_written_time_survives_the_merge(tmp_path):
    """A part file another host left behind after a merge (write_merged could not remove it)
    holds an older record than samples.jsonl: the merged one stays."""
    write(tmp_path, 1, rec(KEY, "inference_error", "out of memory"))
    stale = tmp_path / "stale-rank1.jsonl"
    shutil.copy(tmp_path / "parts" / "rank1.jsonl", stale)
    writer = RecordWriter(tmp_path, 0)
    retried = writer.write(rec(KEY, "ok"))  # what the runner keeps for the merge
    writer.close()
    assert list(read_jsonl(writer.path)) == [retried]
    assert isinstance(retried["written"], float)
    write_merged(tmp_path, [retried])
    merged = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert merged == [retried]
    (tmp_path / "parts").mkdir()
    shutil.copy(stale, tmp_path / "parts" / "rank1.jsonl")
    assert load_records(tmp_path, FP)[KEY]["status"] == "ok"


def test_records_of_a_version_without_written_times(tmp_path):
    """Older records carry no time: file order decides among them (samples.jsonl, then the
    part files), and any record with a time is later than them."""
    (tmp_path / "parts").mkdir()
    lines = {tmp_path / "samples.jsonl": [rec(KEY, "inference_error", "old"), rec(OTHER, "ok")],
             tmp_path / "parts" / "rank0.jsonl": [rec(KEY, "ok")],
             tmp_path / "parts" / "rank1.jsonl": [rec(OTHER, "data_error", "gone")]}
    for path, recs in lines.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    done = load_records(tmp_path, FP)
    assert done[KEY]["status"] == "ok" and done[OTHER]["status"] == "data_error"
    write(tmp_path, 0, rec(OTHER, "ok"))  # a new version's retry, in an earlier file
    assert load_records(tmp_path, FP)[OTHER]["status"] == "ok"
