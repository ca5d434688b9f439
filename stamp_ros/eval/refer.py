"""RefCOCO, RefCOCO+, RefCOCOg and gRefCOCO in the layout the official scripts read.

::

    DATA_ROOT/refcoco/refs(unc).p + instances.json       val testA testB
    DATA_ROOT/refcoco+/refs(unc).p + instances.json      val testA testB
    DATA_ROOT/refcocog/refs(umd).p + instances.json      val test
    DATA_ROOT/grefcoco/grefs(unc).json + instances.json  val testA testB
    DATA_ROOT/images/coco_2014/train2014/COCO_train2014_*.jpg

The samples are the official ones (``dataset/refer_seg_dataset.py`` and
``grefer_seg_dataset.py`` of the STAMP code, via ``refer.py``/``grefer.py``):

* RefCOCO/+/g: one sample per (ref, sentence) of the refs whose split matches the way
  ``REFER.getRefIds`` matches it (``testA`` takes every split naming A, e.g. ``testAB``; ``test``
  every split containing "test"). The sentence is ``sent`` stripped and lower-cased. The ground
  truth is the ref's annotation with its parts *summed* (pixels where two polygons overlap are 2:
  see :mod:`~stamp_ros.eval.metrics` for how they count).
* gRefCOCO: every ref of every image that has a ref in the split (the official loader's quirk:
  whatever the ref's own split; ``notes["refs_from_other_splits"]`` counts them), the sentence
  as is, the ground truth the union of the ref's annotations clipped to 1, all zeros for a
  no-target ref (``ann_id`` ``[-1]``/``None``/``[]``).

Where the official loader fails or is wrong, this one decodes the annotation properly and says
how often it happened: a bare RLE dict or raw counts (the official RefCOCO loader crashes on
them; ``notes["official_loader_fails"]``), RLE annotations in gRefCOCO (the official loader
silently reuses the previous polygon's mask; ``notes["rle_annotations"]`` counts the samples
whose numbers may differ from it for that).

The refs pickle is read with an unpickler that refuses every class: the files hold plain lists,
dicts, strings and numbers, and a pickle from the internet must not run code.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stamp_ros.eval.cocomask import CocoMaskError, decode_segmentation_parts
from stamp_ros.eval.samples import DataError, Sample, Split, read_rgb

__all__ = ["BENCHMARKS", "Benchmark", "load_benchmark_splits"]


@dataclass(frozen=True)
class Benchmark:
    name: str
    split_by: str
    splits: tuple[str, ...]
    refs_file: str
    grouped: bool = False
    """gRefCOCO: several (or no) objects per ref."""


BENCHMARKS: dict[str, Benchmark] = {
    "refcoco": Benchmark("refcoco", "unc", ("val", "testA", "testB"), "refs(unc).p"),
    "refcoco+": Benchmark("refcoco+", "unc", ("val", "testA", "testB"), "refs(unc).p"),
    "refcocog": Benchmark("refcocog", "umd", ("val", "test"), "refs(umd).p"),
    "grefcoco": Benchmark(
        "grefcoco", "unc", ("val", "testA", "testB"), "grefs(unc).json", grouped=True
    ),
}
IMAGE_DIR = Path("images") / "coco_2014" / "train2014"


class _PlainDataUnpickler(pickle.Unpickler):
    """Lists, dicts, strings, numbers only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refs pickle refers to {module}.{name}; only plain data is accepted"
        )


def load_plain_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, UnicodeDecodeError ...
        raise DataError(f"{path} is not a plain-data refs pickle: {exc}") from exc


def _load_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc


def _load_refs(folder: Path, bench: Benchmark) -> list[dict]:
    path = folder / bench.refs_file
    if bench.grouped and not path.exists() and path.with_suffix(".p").exists():
        path = path.with_suffix(".p")  # grefer.py reads grefs(unc).p first when it exists
    if not path.exists():
        raise DataError(f"{path} not found (expected the {bench.name} refs file there)")
    refs = load_plain_pickle(path) if path.suffix == ".p" else _load_json(path)
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DataError(f"{path} must hold a list of refs (dicts)")
    return refs


def _split_matches(requested: str, ref_split: Any) -> bool:
    """REFER.getRefIds' split rule (RefCOCO/+/g); gRefCOCO compares exactly."""
    ref_split = str(ref_split)
    if requested in ("testA", "testB", "testC"):
        return requested[-1] in ref_split
    if requested == "test":
        return "test" in ref_split
    return ref_split == requested


@dataclass
class _Coco:
    images: dict[Any, dict]
    annotations: dict[Any, dict]


def _load_instances(folder: Path) -> _Coco:
    data = _load_json(folder / "instances.json")
    if not isinstance(data, dict):
        raise DataError(f"{folder / 'instances.json'} is not a COCO instances file")
    try:
        images = {img["id"]: img for img in data.get("images", [])}
        anns = {ann["id"]: ann for ann in data.get("annotations", [])}
    except (TypeError, KeyError) as exc:
        raise DataError(f"{folder / 'instances.json'}: image or annotation without id") from exc
    return _Coco(images, anns)


# --------------------------------------------------------------------------- ground truth


def _sum_parts(parts: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """The official sum of an annotation's decoded parts, cast to uint8 as it does."""
    if not parts:
        return np.zeros((h, w), np.uint8)
    total = np.zeros((h, w), np.int64)
    for part in parts:
        total += part
    return total.astype(np.uint8)


def refcoco_truth(ann: Mapping, h: int, w: int, _image_hw: tuple[int, int]) -> np.ndarray:
    """RefCOCO/+/g ground truth of one annotation at the instances' (h, w): parts summed."""
    seg = ann.get("segmentation")
    if seg is None:
        raise DataError(f"annotation {ann.get('id')} has no segmentation")
    if isinstance(seg, (list, tuple)) and len(seg) == 0:
        return np.zeros((h, w), np.uint8)
    try:
        return _sum_parts(decode_segmentation_parts(seg, h, w), h, w)
    except CocoMaskError as exc:
        raise DataError(f"annotation {ann.get('id')}: {exc}") from exc


def grefcoco_truth(anns: list[Mapping | None], h: int, w: int,
                   _image_hw: tuple[int, int]) -> np.ndarray:
    """gRefCOCO ground truth: the union of the annotations, clipped to 1; zeros: no target."""
    if not anns or any(a is None for a in anns) or "segmentation" not in anns[0]:
        return np.zeros((h, w), np.uint8)
    total = np.zeros((h, w), np.int64)
    for ann in anns:
        try:
            parts = decode_segmentation_parts(ann.get("segmentation"), h, w)
        except CocoMaskError as exc:
            raise DataError(f"annotation {ann.get('id')}: {exc}") from exc
        for part in parts:
            total += part
    return (total > 0).astype(np.uint8)


def _official_refcoco_fails(ann: Mapping | None) -> bool:
    """Would the official RefCOCO loader crash on this annotation (decoded properly here)?
    A bare RLE dict (it indexes ``segmentation[0]``) or raw list counts (it ``.encode()``s them)."""
    seg = (ann or {}).get("segmentation")
    if isinstance(seg, dict):
        return True
    return isinstance(seg, list) and any(
        isinstance(part, dict) and not isinstance(part.get("counts"), (str, bytes))
        for part in seg)


def _is_rle(ann: Mapping | None) -> bool:
    seg = (ann or {}).get("segmentation")
    return isinstance(seg, dict) or (
        isinstance(seg, list) and bool(seg) and isinstance(seg[0], dict))


# --------------------------------------------------------------------------- samples


def _ann_ids(ref: Mapping) -> list[Any]:
    ids = ref.get("ann_id")
    if ids is None:
        return []
    return list(ids) if isinstance(ids, (list, tuple)) else [ids]


def _image_sample_parts(ref: Mapping, coco: _Coco, root: Path):
    """(image info, image path, problem) of a ref."""
    info = coco.images.get(ref.get("image_id"))
    if info is None:
        return None, "", f"image {ref.get('image_id')} is not in instances.json"
    try:
        h, w, name = int(info["height"]), int(info["width"]), str(info["file_name"])
    except (KeyError, TypeError, ValueError):
        return None, "", f"image {ref.get('image_id')} lacks height, width or file_name"
    return (h, w), str(root / IMAGE_DIR / name), ""


def _sentences(ref: Mapping) -> list[tuple[str, Any]]:
    """(sent, sent_id) pairs; a malformed entry gives an empty sentence (a data problem)."""
    out = []
    for k, sent in enumerate(ref.get("sentences") or []):
        if isinstance(sent, dict) and isinstance(sent.get("sent"), str):
            out.append((sent["sent"], sent.get("sent_id", f"{ref.get('ref_id')}.{k}")))
        else:
            out.append(("", f"{ref.get('ref_id')}.{k}"))
    return out


def _refcoco_samples(bench: Benchmark, split: str, refs: list[dict], coco: _Coco,
                     root: Path) -> Split:
    chosen = [r for r in refs if _split_matches(split, r.get("split"))]
    by_image: dict[Any, list[dict]] = {}
    for ref in chosen:
        by_image.setdefault(ref.get("image_id"), []).append(ref)
    samples = []
    official_fails = 0
    for image_id, image_refs in by_image.items():
        for ref in image_refs:
            size, path, problem = _image_sample_parts(ref, coco, root)
            ann = coco.annotations.get(ref.get("ann_id"))
            if not problem and ann is None:
                problem = f"annotation {ref.get('ann_id')} is not in instances.json"
            fails = _official_refcoco_fails(ann)
            for sent, sent_id in _sentences(ref):
                official_fails += fails
                text = sent.strip().lower().strip()
                sample_problem = problem or ("" if sent else "sentence without 'sent' text")
                truth = None
                if not sample_problem:
                    truth = partial(refcoco_truth, ann, size[0], size[1])
                samples.append(Sample(
                    dataset=bench.name, split=split, id=f"r{ref.get('ref_id')}s{sent_id}",
                    group=f"{image_id}", text=text, source=path,
                    image=partial(read_rgb, path) if path else None, truth=truth,
                    problem=sample_problem,
                    meta={"ref_id": ref.get("ref_id"), "sent_id": sent_id,
                          "ann_id": ref.get("ann_id"), "image_id": image_id},
                ))
    notes = {"refs": len(chosen), "images": len(by_image),
             "official_loader_fails": official_fails}
    return Split(bench.name, split, samples, notes)


def _grefcoco_samples(bench: Benchmark, split: str, refs: list[dict], coco: _Coco,
                      root: Path) -> Split:
    image_refs: dict[Any, list[dict]] = {}
    for ref in refs:
        image_refs.setdefault(ref.get("image_id"), []).append(ref)
    images = []
    for ref in refs:
        if ref.get("split") == split and ref.get("image_id") not in images:
            images.append(ref.get("image_id"))
    samples = []
    other_split = rle = no_target = 0
    for image_id in images:
        for ref in image_refs[image_id]:
            other_split += ref.get("split") != split
            size, path, problem = _image_sample_parts(ref, coco, root)
            ids = _ann_ids(ref)
            anns: list[Mapping | None] = []
            for a in ids:
                if a == -1:
                    anns.append(None)
                elif a in coco.annotations:
                    anns.append(coco.annotations[a])
                elif not problem:
                    problem = f"annotation {a} is not in instances.json"
            empty = not anns or any(a is None for a in anns)
            no_target += empty
            has_rle = not empty and any(_is_rle(a) for a in anns)
            for sent, sent_id in _sentences(ref):
                rle += has_rle
                sample_problem = problem or ("" if sent else "sentence without 'sent' text")
                truth = None
                if not sample_problem:
                    truth = partial(grefcoco_truth, anns, size[0], size[1])
                samples.append(Sample(
                    dataset=bench.name, split=split, id=f"r{ref.get('ref_id')}s{sent_id}",
                    group=f"{image_id}", text=sent, source=path,
                    image=partial(read_rgb, path) if path else None, truth=truth,
                    problem=sample_problem,
                    meta={"ref_id": ref.get("ref_id"), "sent_id": sent_id, "ann_id": ids,
                          "image_id": image_id, "no_target": empty},
                ))
    notes = {"images": len(images), "no_target_refs": no_target,
             "refs_from_other_splits": other_split, "rle_annotations": rle}
    return Split(bench.name, split, samples, notes)


def load_benchmark_splits(root: str | Path, name: str, splits: Iterable[str]) -> list[Split]:
    """The samples of ``splits`` of benchmark ``name`` under ``root`` (DataError if unusable)."""
    bench = BENCHMARKS[name]
    root = Path(root)
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"{folder} not found: --data-root must hold {name}/ "
                        f"({bench.refs_file}, instances.json) and {IMAGE_DIR}/")
    refs = _load_refs(folder, bench)
    coco = _load_instances(folder)
    build = _grefcoco_samples if bench.grouped else _refcoco_samples
    out = []
    for split in splits:
        if split not in bench.splits:
            raise DataError(f"{name} has splits {', '.join(bench.splits)}, not {split!r}")
        out.append(build(bench, split, refs, coco, root))
    return out
