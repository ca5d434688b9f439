"""COCO segmentations (polygons, RLE) <-> masks, bit for bit as pycocotools computes them.

The benchmarks' ground truth is COCO ``instances.json`` segmentations, which the official
evaluation decodes with pycocotools. Reproducing its numbers needs the very same pixels, so this
module implements pycocotools' algorithms (``maskApi.c``: ``rleFrPoly``, ``rleFrString``,
``rleToString``, ``rleDecode``, ``rleEncode``) in numpy rather than depending on the package:
``stamp-ros eval`` then needs nothing compiled beyond what the engine already has, and a robot's
own labels (COCO RLE or polygons in a JSONL) decode the same way. ``test/test_eval_cocomask.py``
holds the functions to pycocotools on thousands of random shapes, degenerate ones included.

The polygon rasteriser is pycocotools', not a geometric fill: the vertices are scaled by 5 and
rounded, the boundary walked in integer steps, and a pixel column switches state where the
boundary crosses its centre. Pixels whose centre lies exactly on an edge, or on a horizontal
edge, land on the side the algorithm puts them, which is what the official numbers count.

Masks are (H, W) uint8 {0, 1}; COCO RLE runs over the mask in column-major (Fortran) order,
starting with a run of zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CocoMaskError",
    "counts_to_string",
    "decode_rle",
    "decode_segmentation_parts",
    "encode_rle",
    "polygon_counts",
    "rle_counts",
    "string_to_counts",
]

_SCALE = 5.0


class CocoMaskError(ValueError):
    """A segmentation that cannot be decoded (malformed RLE, wrong size, unknown layout)."""


# --------------------------------------------------------------------------- RLE strings


def string_to_counts(text: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (``rleFrString``).

    Six bits per character (ASCII 48..111), five of payload and a continuation bit, LEB128
    style with sign extension; from the fourth run on, each value is a difference to the run
    two places back.
    """
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    p, n = 0, len(data)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise CocoMaskError("RLE string ends in the middle of a number")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise CocoMaskError(f"RLE string has an invalid character {chr(data[p])!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if not 0 <= x < 2**32:
            raise CocoMaskError(f"RLE string decodes to an invalid run length {x}")
        counts.append(x)
    return counts


def counts_to_string(counts: Sequence[int]) -> str:
    """The compressed COCO RLE string of ``counts`` (``rleToString``)."""
    out = bytearray()
    counts = [int(c) for c in counts]
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(c + 48)
    return out.decode("ascii")


# --------------------------------------------------------------------------- RLE <-> masks


def rle_counts(rle: Any) -> tuple[list[int], int, int]:
    """(counts, h, w) of an RLE dict: ``counts`` a compressed string (str/bytes) or a list."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise CocoMaskError("an RLE must be a dict with 'size' and 'counts'")
    try:
        h, w = (int(v) for v in rle["size"])
    except (TypeError, ValueError) as exc:
        raise CocoMaskError(f"RLE 'size' must be [height, width], got {rle['size']!r}") from exc
    counts = rle["counts"]
    if isinstance(counts, (str, bytes, bytearray)):
        return string_to_counts(counts), h, w
    if isinstance(counts, (list, tuple)) and all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
    ):
        return [int(c) for c in counts], h, w
    raise CocoMaskError("RLE 'counts' must be a compressed string or a list of run lengths")


def decode_rle(rle: Any) -> np.ndarray:
    """(H, W) uint8 {0,1} mask of one RLE dict (``rleDecode``); the runs must cover H*W."""
    counts, h, w = rle_counts(rle)
    return counts_to_mask(counts, h, w)


def counts_to_mask(counts: Sequence[int], h: int, w: int) -> np.ndarray:
    if h < 0 or w < 0:
        raise CocoMaskError(f"RLE size must be non-negative, got {h}x{w}")
    total = int(sum(counts))
    if total != h * w:
        raise CocoMaskError(f"RLE runs cover {total} pixels, its size {h}x{w} has {h * w}")
    values = np.arange(len(counts), dtype=np.int64) % 2
    flat = np.repeat(values.astype(np.uint8), np.asarray(counts, dtype=np.int64))
    return np.ascontiguousarray(flat.reshape(w, h).T)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE dict ``{"size": [h, w], "counts": str}`` of a mask (non-zero = 1)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {m.shape}")
    h, w = m.shape
    flat = (m != 0).T.reshape(-1)
    if flat.size == 0:
        return {"size": [int(h), int(w)], "counts": counts_to_string([0])}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": [int(h), int(w)], "counts": counts_to_string(runs)}


# --------------------------------------------------------------------------- polygons


def _round_half_up_trunc(values: np.ndarray) -> np.ndarray:
    """C's ``(int)(v + .5)``: add a half, truncate toward zero."""
    return np.trunc(values + 0.5).astype(np.int64)


def polygon_counts(xy: Sequence[float], h: int, w: int) -> list[int]:
    """RLE counts of one polygon ``[x0, y0, x1, y1, ...]`` at (h, w) (``rleFrPoly``)."""
    coords = np.asarray(xy, dtype=np.float64).reshape(-1)
    k = coords.size // 2
    if k == 0:
        return [h * w] if h * w else []
    coords = coords[: 2 * k]
    x = _round_half_up_trunc(_SCALE * coords[0::2])
    y = _round_half_up_trunc(_SCALE * coords[1::2])
    x = np.append(x, x[0])
    y = np.append(y, y[0])
    # Dense integer boundary points of every edge, walked from the lower end.
    us, vs = [], []
    for j in range(k):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            # dx == dy == 0: C divides 0/0; the one point's v is never read (see below).
            s = (ye - ys) / dx if dx else 0.0
            d = np.arange(dx + 1, dtype=np.int64)
            t = dx - d if flip else d
            us.append(t + xs)
            vs.append(np.trunc(ys + s * t.astype(np.float64) + 0.5).astype(np.int64))
        else:
            s = (xe - xs) / dy
            d = np.arange(dy + 1, dtype=np.int64)
            t = dy - d if flip else d
            vs.append(t + ys)
            us.append(np.trunc(xs + s * t.astype(np.float64) + 0.5).astype(np.int64))
    u = np.concatenate(us)
    v = np.concatenate(vs)
    # Where the boundary moves to another column, it crosses that column's pixel centre row.
    j = np.flatnonzero(u[1:] != u[:-1]) + 1
    uj, uprev, vj, vprev = u[j], u[j - 1], v[j], v[j - 1]
    xd = np.where(uj < uprev, uj, uj - 1).astype(np.float64)
    xd = (xd + 0.5) / _SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.minimum(vj, vprev).astype(np.float64)
    yd = (yd + 0.5) / _SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    a = (xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64)).tolist()
    a.append(h * w)
    a.sort()
    # Differences between consecutive crossings are the runs; zero-length runs merge.
    prev = 0
    diffs = []
    for value in a:
        diffs.append(value - prev)
        prev = value
    counts = [diffs[0]]
    i = 1
    while i < len(diffs):
        if diffs[i] > 0:
            counts.append(diffs[i])
            i += 1
        else:
            i += 1
            if i < len(diffs):
                counts[-1] += diffs[i]
                i += 1
    return counts


def decode_polygon(xy: Sequence[float], h: int, w: int) -> np.ndarray:
    """(h, w) uint8 mask of one polygon, as ``decode(frPyObjects([xy], h, w))``."""
    return counts_to_mask(polygon_counts(xy, h, w), h, w)


# --------------------------------------------------------------------------- segmentations


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def decode_segmentation_parts(segmentation: Any, h: int, w: int) -> list[np.ndarray]:
    """The (h, w) uint8 masks of a COCO segmentation, one per part, not yet combined.

    ``segmentation`` is a list of polygons ``[[x, y, ...], ...]`` (rasterised at h x w), one
    RLE dict, or a list of RLE dicts (compressed strings or raw counts; each must be h x w).
    How the parts combine is the caller's rule (the RefCOCO protocol sums them, so pixels where
    two polygons overlap count 2). CocoMaskError for anything else.
    """
    if isinstance(segmentation, dict):
        parts = [segmentation]
    elif isinstance(segmentation, (list, tuple)):
        parts = list(segmentation)
    else:
        raise CocoMaskError(
            f"a segmentation must be polygons or RLE, got {type(segmentation).__name__}"
        )
    kinds = {isinstance(part, dict) for part in parts}
    if len(kinds) > 1:
        raise CocoMaskError("a segmentation mixes polygons and RLE dicts")
    masks = []
    for i, part in enumerate(parts):
        if isinstance(part, dict):
            mask = decode_rle(part)
            if mask.shape != (h, w):
                raise CocoMaskError(f"RLE part {i} is {mask.shape[0]}x{mask.shape[1]}, "
                                    f"the image is {h}x{w}")
        elif isinstance(part, (list, tuple)):
            if not all(_is_number(v) for v in part):
                raise CocoMaskError(f"polygon {i} has a value that is not a finite number")
            if i == 0 and len(part) <= 4:
                # pycocotools reads a first "polygon" of 4 values as boxes (and the official
                # loader fails on it), fewer as nothing it knows.
                raise CocoMaskError(
                    f"the first polygon has {len(part)} values; a polygon needs at least 3 points"
                )
            mask = decode_polygon(part, h, w)
        else:
            raise CocoMaskError(f"segmentation part {i} is neither a polygon nor an RLE dict")
        masks.append(mask)
    return masks
