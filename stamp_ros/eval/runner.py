"""One process's share of an evaluation: samples in, per-sample records out (and on disk).

For each sample the runner loads the image and the ground truth (on a helper thread, one sample
ahead, so decoding overlaps inference), asks the engine with the sample's prompt, scores the
first mask by the protocol (:mod:`~stamp_ros.eval.metrics`) and appends the record to its part
file before going on. The engine is :class:`~stamp_ros.engine.segmenter.StampSegmenter`, the
node's, built by the command from the same options as ``stamp-ros segment``; samples of one
image run back to back with the image as the prefix-cache key, so the frame's vision features
and prefix are computed once per image (results never depend on that cache).

Bad samples never end the run, and the record says which rule applied:

* ``data_error`` (missing or unreadable image, undecodable annotation, a ground truth of another
  size): **excluded** from the metrics; it cannot be scored.
* ``inference_error`` (the engine refused or failed on the sample): **scored as an empty
  prediction**, as a deployed node that fails on a request has no mask to give.

Both are counted in the summary, with their reasons.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stamp_ros.eval.cocomask import encode_rle
from stamp_ros.eval.metrics import Score, SplitScore, score
from stamp_ros.eval.progress import EvalProgress
from stamp_ros.eval.prompts import build_prompt
from stamp_ros.eval.records import RecordWriter
from stamp_ros.eval.samples import DataError, Sample

__all__ = ["RunSettings", "run_samples"]

logger = logging.getLogger("stamp_ros.eval")

STATUS_OK, DATA_ERROR, INFERENCE_ERROR = "ok", "data_error", "inference_error"


@dataclass(frozen=True)
class RunSettings:
    prompt: str
    seed: int
    refine: bool
    mask_upsample: str
    fingerprint: str
    retry_errors: bool = False


@dataclass
class _Loaded:
    image: np.ndarray | None
    truth: np.ndarray | None
    error: str


class _Loader:
    """Loads samples one ahead on a helper thread; the decoded image of a group is reused."""

    def __init__(self) -> None:
        self._group: str | None = None
        self._image: np.ndarray | None = None

    def load(self, sample: Sample) -> _Loaded:
        if sample.problem:
            return _Loaded(None, None, sample.problem)
        try:
            if self._group != sample.group or self._image is None:
                self._group, self._image = None, None
                if sample.image is None:
                    raise DataError("no image")
                self._image = sample.image()
                self._group = sample.group
            image = self._image
            if sample.truth is None:
                raise DataError("no ground truth")
            truth = sample.truth(image.shape[:2])
            if truth.shape != image.shape[:2]:
                raise DataError(
                    f"ground truth is {truth.shape[1]}x{truth.shape[0]}, the image "
                    f"{image.shape[1]}x{image.shape[0]} (width x height)"
                )
            return _Loaded(image, truth, "")
        except DataError as exc:
            return _Loaded(None, None, str(exc))
        except Exception as exc:  # a loader bug or odd file must not end the run either
            logger.debug("loading %s failed", sample.key, exc_info=True)
            return _Loaded(None, None, f"{type(exc).__name__}: {exc}")

    def stream(self, samples: Sequence[Sample]) -> Iterator[tuple[Sample, _Loaded]]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-load")
        pending: deque[tuple[Sample, Future]] = deque()
        it = iter(samples)

        def submit() -> None:
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(self.load, nxt)))

        try:
            submit()
            while pending:
                sample, fut = pending.popleft()
                submit()
                yield sample, fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _base_record(sample: Sample, prompt: str, settings: RunSettings) -> dict[str, Any]:
    return {
        "key": sample.key,
        "dataset": sample.dataset,
        "split": sample.split,
        "id": sample.id,
        "group": sample.group,
        "source": sample.source,
        "text": sample.text,
        "prompt": prompt,
        "cfg": settings.fingerprint,
        "meta": dict(sample.meta),
    }


def _coarse_masks(result: Any, size_hw: tuple[int, int], settings: RunSettings) -> list:
    """Every instance's mask before refinement: the engine's own masks unless SAM redrew them."""
    if not settings.refine:
        return [inst.mask for inst in result.instances]
    from stamp_ros.engine.masks import logits_to_mask

    return [logits_to_mask(inst.logits, size_hw, settings.mask_upsample)
            for inst in result.instances]


def evaluate_sample(sample: Sample, loaded: _Loaded, segmenter: Any,
                    settings: RunSettings) -> dict[str, Any]:
    """Run and score one sample: its record (see the module docstring for the statuses)."""
    prompt = build_prompt(sample.text, settings.prompt, settings.seed, sample.key)
    rec = _base_record(sample, prompt, settings)
    if loaded.error:
        rec.update(status=DATA_ERROR, error=loaded.error, scored=False)
        return rec
    image, truth = loaded.image, loaded.truth
    h, w = image.shape[:2]
    empty = np.zeros((h, w), np.uint8)
    rec.update(image_size=[w, h], truth_area=int(np.count_nonzero(truth == 1)),
               truth_empty=not bool(np.any(truth > 0)))
    try:
        result = segmenter.segment(image, prompt, frame_key=("stamp-ros-eval", sample.group))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the engine's refusal, OOM, a kernel error: scored as empty
        _recover(segmenter)
        text = " ".join(str(exc).split()) or type(exc).__name__
        rec.update(status=INFERENCE_ERROR, error=text, scored=True, answer="", num_masks=0)
        first = refined = union = empty
        timings: Mapping[str, float] = {}
    else:
        coarse = _coarse_masks(result, (h, w), settings)
        first = coarse[0] if coarse else empty
        union = np.zeros((h, w), np.uint8)
        for m in coarse:
            union |= (m > 0).astype(np.uint8)
        refined = result.instances[0].mask if settings.refine and result.instances else empty
        rec.update(status=STATUS_OK, error="", scored=True, answer=result.text,
                   num_masks=len(result.instances), grid_size=list(result.grid_size),
                   device=str(segmenter.device), dtype=str(segmenter.model.dtype).replace(
                       "torch.", ""))
        timings = result.timings_ms
    first = (first > 0).astype(np.uint8)
    rec["grid"] = score(first, truth).as_dict()
    rec["union"] = score(union, truth).as_dict()
    rec["pred"] = encode_rle(first)
    if settings.refine:
        refined = (refined > 0).astype(np.uint8)
        rec["sam"] = score(refined, truth).as_dict()
        rec["sam_pred"] = encode_rle(refined)
    rec["timings_ms"] = {k: float(v) for k, v in timings.items()}
    return rec


def _recover(segmenter: Any) -> None:
    """After a failed inference: drop cached frame state and free what CUDA cached."""
    try:
        segmenter.clear_prefix_cache()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # recovery is best effort; the next sample reports its own errors
        logger.debug("recovery after a failed inference failed", exc_info=True)


def record_score(rec: Mapping[str, Any], variant: str = "grid") -> Score | None:
    """The protocol score of a record (None when it is not scored, or lacks the variant)."""
    if not rec.get("scored") or variant not in rec:
        return None
    return Score.from_dict(rec[variant], bool(rec.get("truth_empty")))


def run_samples(samples: Sequence[Sample], done: Mapping[str, dict], settings: RunSettings,
                out_dir: Path, rank: int, make_segmenter: Callable[[], Any],
                progress: EvalProgress | None = None) -> tuple[list[dict], int]:
    """Records of ``samples`` (this rank's shard), in order, and how many were resumed: taken
    from ``done`` where possible, the others run now and appended to ``parts/rank<rank>.jsonl``
    as they finish."""
    records: dict[str, dict] = {}
    todo: list[Sample] = []
    for s in samples:
        rec = done.get(s.key)
        if rec is not None and not (settings.retry_errors and rec.get("status") != STATUS_OK):
            records[s.key] = rec
        else:
            todo.append(s)
    running: dict[str, SplitScore] = {}
    bad = 0
    for rec in records.values():
        bad += rec.get("status") != STATUS_OK
        sc = record_score(rec)
        if sc is not None:
            running.setdefault(f"{rec['dataset']}/{rec['split']}", SplitScore()).add(sc)
    ran = 0
    split_name = todo[0].key.rsplit("/", 1)[0] if todo else "done"
    if progress:
        progress.update(len(records), 0, bad, None, split_name, force=True)
    segmenter = None
    writer = RecordWriter(out_dir, rank) if todo else None
    try:
        for sample, loaded in _Loader().stream(todo):
            if segmenter is None and not loaded.error:
                segmenter = make_segmenter()
            rec = evaluate_sample(sample, loaded, segmenter, settings)
            rec = writer.write(rec)  # with its "written" time, which decides a resume
            records[sample.key] = rec
            ran += 1
            if rec["status"] != STATUS_OK:
                bad += 1
                logger.warning("%s: %s: %s", sample.key, rec["status"], rec["error"])
            split_name = f"{sample.dataset}/{sample.split}"
            score_ = running.setdefault(split_name, SplitScore())
            sc = record_score(rec)
            if sc is not None:
                score_.add(sc)
            if progress:
                progress.update(len(records), ran, bad, score_.ciou, split_name)
    finally:
        if writer is not None:
            writer.close()
        if progress:
            last = running.get(split_name)
            progress.update(len(records), ran, bad, last.ciou if last else None, split_name,
                            force=True)
            progress.finish()
    return [records[s.key] for s in samples], len(samples) - len(todo)
