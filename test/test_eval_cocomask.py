"""COCO polygons and RLE decoded bit for bit as pycocotools decodes them (stamp_ros.eval.cocomask).

The official evaluation builds its ground truth with pycocotools; ``stamp-ros eval`` uses its own
numpy port, so every path is held to pycocotools here, on random shapes and on the degenerate
cases the rasteriser treats specially.
"""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as cm

from stamp_ros.eval import cocomask as m

# pycocotools 2.0.11 with numpy 2 warns about its own __array__ on every decode.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _coco_polygon(xy, h, w) -> np.ndarray:
    return cm.decode(cm.frPyObjects([list(xy)], h, w))[:, :, 0]


def _random_polygon(rng, h, w, kind: int) -> list[float]:
    k = int(rng.integers(3, 14))
    span = max(h, w)
    if kind == 0:  # anywhere, partly outside the image
        xy = rng.uniform(-8, span + 8, size=2 * k)
    elif kind == 1:  # integer vertices (COCO often has them)
        xy = rng.integers(-2, span + 2, size=2 * k).astype(float)
    elif kind == 2:  # on half pixels: centres exactly on edges
        xy = np.round(rng.uniform(0, span, size=2 * k) * 2) / 2
    elif kind == 3:  # repeated vertices (zero-length edges)
        xy = rng.uniform(0, span, size=2 * k)
        xy[2:4] = xy[0:2]
        xy[-2:] = xy[-4:-2]
    else:  # thin slivers and near-horizontal/vertical edges
        xy = rng.uniform(0, span, size=2 * k)
        xy[1::2][: k // 2] = xy[1]
        xy[0::2][k // 2 :] += rng.uniform(-0.05, 0.05, size=k - k // 2)
    return xy.tolist()


def test_polygons_rasterise_exactly_as_pycocotools():
    rng = np.random.default_rng(7)
    for it in range(1500):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        xy = _random_polygon(rng, h, w, it % 5)
        expected = _coco_polygon(xy, h, w)
        np.testing.assert_array_equal(m.decode_polygon(xy, h, w), expected, err_msg=str(xy))
        coco_counts = m.string_to_counts(cm.frPyObjects([xy], h, w)[0]["counts"])
        assert m.polygon_counts(xy, h, w) == coco_counts


def test_a_real_sized_polygon_and_a_known_square():
    # A 4x4 square with integer corners covers exactly the pixels whose centres are inside.
    square = [1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]
    mask = m.decode_polygon(square, 8, 8)
    np.testing.assert_array_equal(mask, _coco_polygon(square, 8, 8))
    assert mask.sum() == 16 and mask[1:5, 1:5].all()
    rng = np.random.default_rng(1)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 300))
    radius = rng.uniform(150, 230, 300)
    xy = np.stack([320 + radius * np.cos(angles), 240 + radius * np.sin(angles)], 1).reshape(-1)
    np.testing.assert_array_equal(m.decode_polygon(xy, 480, 640), _coco_polygon(xy, 480, 640))


def test_rle_strings_encode_and_decode_as_pycocotools():
    rng = np.random.default_rng(3)
    masks = [np.zeros((5, 7), np.uint8), np.ones((6, 4), np.uint8)]
    for _ in range(300):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        masks.append((rng.random((h, w)) < rng.uniform(0.02, 0.98)).astype(np.uint8))
    big = np.zeros((300, 400), np.uint8)
    big[40:260, 30:390] = 1  # long runs: multi-character numbers, negative differences
    big[100:120, 50:60] = 0
    masks.append(big)
    for mask in masks:
        coco = cm.encode(np.asfortranarray(mask))
        ours = m.encode_rle(mask)
        assert ours["size"] == [int(v) for v in coco["size"]]
        assert ours["counts"] == coco["counts"].decode()
        np.testing.assert_array_equal(m.decode_rle(coco), mask)  # bytes counts
        np.testing.assert_array_equal(m.decode_rle(ours), mask)  # str counts
        assert m.string_to_counts(coco["counts"]) == m.string_to_counts(ours["counts"])


def test_uncompressed_counts_decode_as_pycocotools():
    rng = np.random.default_rng(5)
    for _ in range(50):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
        flat = mask.T.reshape(-1)
        counts, value, run = [], 0, 0
        for v in flat:
            if v != value:
                counts.append(run)
                value, run = v, 0
            run += 1
        counts.append(run)
        raw = {"size": [h, w], "counts": counts}
        expected = cm.decode(cm.frPyObjects(raw, h, w))
        np.testing.assert_array_equal(m.decode_rle(raw), expected)
        np.testing.assert_array_equal(m.decode_rle(raw), mask)


def test_segmentation_parts_are_decoded_separately():
    polys = [[30.0, 10.0, 60.0, 10.0, 60.0, 40.0, 30.0, 40.0],
             [40.0, 2.0, 63.0, 2.0, 63.0, 25.0, 40.0, 25.0]]
    parts = m.decode_segmentation_parts(polys, 48, 64)
    expected = cm.decode(cm.frPyObjects(polys, 48, 64))
    assert len(parts) == 2
    for k, part in enumerate(parts):
        np.testing.assert_array_equal(part, expected[:, :, k])
    summed = np.sum(parts, axis=0)
    assert summed.max() == 2  # the parts overlap: the caller decides how that counts


@pytest.mark.parametrize("seg, needle", [
    ({"size": [4, 4], "counts": [3, 4]}, "cover 7 pixels"),
    ({"size": [4, 4], "counts": "0\x7f"}, "invalid character"),
    ({"size": [4, 4], "counts": "2"}, "cover 2 pixels"),
    ({"size": [4, 4], "counts": "o"}, "ends in the middle"),
    ({"counts": "04"}, "'size' and 'counts'"),
    ({"size": [4, 4], "counts": [1.5, 14.5]}, "'counts' must be"),
    ([[1.0, 2.0, 3.0, 4.0]], "first polygon has 4 values"),
    ([[1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]], "not a finite number"),
    ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], {"size": [4, 4], "counts": [16]}], "mixes"),
    ("polygon", "must be polygons or RLE"),
    ([{"size": [3, 3], "counts": [9]}], "RLE part 0 is 3x3"),
])
def test_undecodable_segmentations_are_clear_errors(seg, needle):
    with pytest.raises(m.CocoMaskError, match=needle):
        m.decode_segmentation_parts(seg, 4, 4)
