"""A robot's own labelled data: one JSON object per line (``--dataset jsonl``, and the labels of
``--dataset bag``).

A line::

    {"id": "kitchen-0001", "image": "frames/0001.jpg", "query": "the red mug",
     "mask": "masks/0001.png"}

* ``image``: an image file (relative paths are relative to the JSONL's folder, or to
  ``--data-root`` when given). Bag labels have ``stamp`` instead (see :mod:`.bag_data`).
* ``query`` (or ``sentence``): the text sent to the model as is (``--prompt template`` wraps it).
* the ground truth, one of:

  - ``mask``: a PNG (any mode; every non-zero pixel is the object), same size as the image;
  - ``segmentation``: COCO polygons ``[[x, y, ...], ...]``, an RLE ``{"size": [h, w],
    "counts": ...}`` (compressed string or raw counts) or a list of RLEs;
  - ``"mask": null`` or ``"segmentation": []``: no target (the answer should have no mask).

  Several objects: list all their polygons (or RLEs) in one ``segmentation``; the ground truth is
  the union of all parts, clipped to 1 (robot labels have no RefCOCO overlap rule).
* ``id`` (optional): the sample's name in the results (default ``line<N>``); must be unique.

A line that is not JSON, or lacks a field, becomes a sample with a problem: it is recorded and
counted as excluded, and the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import numpy as np

from stamp_ros.eval.cocomask import CocoMaskError, decode_segmentation_parts
from stamp_ros.eval.samples import DataError, Sample, Split, read_rgb

__all__ = ["label_truth", "load_jsonl_split", "read_label_lines"]


def read_label_lines(path: str | Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, the object or None, problem) for each non-blank line of a JSONL file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            yield n, None, f"line {n} is not valid JSON: {exc}"
            continue
        if not isinstance(obj, dict):
            yield n, None, f"line {n} is not a JSON object"
            continue
        yield n, obj, ""


def label_text(obj: Mapping) -> str:
    text = obj.get("query", obj.get("sentence"))
    return text if isinstance(text, str) else ""


def truth_problem(obj: Mapping) -> str:
    """Why a label has no usable ground truth field ("" when it has one)."""
    if "mask" not in obj and "segmentation" not in obj:
        return "no ground truth: give 'mask' (PNG path) or 'segmentation' (null / [] = no target)"
    if "mask" in obj and "segmentation" in obj:
        return "both 'mask' and 'segmentation' given; use one"
    mask = obj.get("mask")
    if "mask" in obj and mask is not None and not isinstance(mask, str):
        return "'mask' must be a PNG path or null"
    return ""


def _read_mask_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            a = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read mask {str(path)!r}: {exc}") from exc
    if a.ndim == 3:
        a = a[..., :3].any(axis=2) if a.shape[2] >= 3 else a[..., 0]
    return (a != 0).astype(np.uint8)


def label_truth(obj: Mapping, base: Path, image_hw: tuple[int, int]) -> np.ndarray:
    """The (H, W) {0, 1} ground truth of a label line at the image's size (DataError)."""
    h, w = image_hw
    if "mask" in obj:
        if obj["mask"] is None:
            return np.zeros((h, w), np.uint8)
        return _read_mask_png(base / obj["mask"])
    seg = obj.get("segmentation")
    if seg is None:
        return np.zeros((h, w), np.uint8)
    try:
        parts = decode_segmentation_parts(seg, h, w)
    except CocoMaskError as exc:
        raise DataError(f"undecodable segmentation: {exc}") from exc
    out = np.zeros((h, w), np.uint8)
    for part in parts:
        out |= part
    return out


def sample_id(obj: Mapping | None, n: int) -> str:
    given = (obj or {}).get("id")
    return str(given) if isinstance(given, (str, int)) and str(given) else f"line{n}"


def load_jsonl_split(path: str | Path, data_root: str | Path | None = None,
                     split: str | None = None) -> Split:
    """The samples of a labels JSONL file (split name: the file's stem unless given)."""
    path = Path(path)
    base = Path(data_root) if data_root else path.parent
    name = split or path.stem
    samples: list[Sample] = []
    seen: set[str] = set()
    for n, obj, problem in read_label_lines(path):
        sid = sample_id(obj, n)
        if sid in seen:
            sid, problem = f"{sid}#line{n}", problem or f"duplicate id {sid!r}"
        seen.add(sid)
        obj = obj or {}
        image = obj.get("image")
        text = label_text(obj)
        if not problem:
            if not isinstance(image, str) or not image:
                problem = "no 'image' path"
            elif not text:
                problem = "no 'query' text"
            else:
                problem = truth_problem(obj)
        image_path = str(base / image) if isinstance(image, str) and image else ""
        samples.append(Sample(
            dataset="jsonl", split=name, id=sid, group=image_path or sid, text=text,
            source=image_path or f"{path.name}:{n}",
            image=partial(read_rgb, image_path) if image_path else None,
            truth=None if problem else partial(label_truth, obj, base),
            problem=problem, meta={"line": n},
        ))
    return Split("jsonl", name, samples, {"lines": len(samples)})
