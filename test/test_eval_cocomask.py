"""COCO polygons and RLE to masks through pycocotools, and the checks in front of it
(stamp_ros.eval.cocomask).

The decoding itself is pycocotools'; what is tested here is the adapter: known polygons and
hand-made RLE strings give known pixels (no axis swapped, no transposition, the rasteriser's
edge rule intact), masks survive a round trip, and every malformed input is a CocoMaskError
naming the problem instead of a crash or a mask of uninitialised memory.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from stamp_ros.eval import cocomask as m

# pycocotools 2.0.11 with numpy 2 warns about its own __array__ on every decode.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _polygon(xy, h, w) -> np.ndarray:
    (mask,) = m.decode_segmentation_parts([xy], h, w)
    return mask


def _runs_to_mask(counts, h, w) -> np.ndarray:
    """Reference decoder: alternate 0/1 runs, column-major."""
    values = np.arange(len(counts)) % 2
    return np.repeat(values, counts).astype(np.uint8).reshape(w, h).T


def _mask_to_runs(mask) -> list[int]:
    counts, value, run = [], 0, 0
    for v in mask.T.reshape(-1):
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return counts


# --------------------------------------------------------------------------- polygons


def test_polygons_give_known_pixels():
    # A 4x4 square with integer corners covers exactly the pixels whose centres are inside.
    square = _polygon([1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0], 8, 8)
    assert square.sum() == 16 and square[1:5, 1:5].all()
    # x is the column, y the row: a rectangle 2 wide and 5 tall.
    tall = _polygon([1.0, 0.0, 3.0, 0.0, 3.0, 5.0, 1.0, 5.0], 6, 8)
    expected = np.zeros((6, 8), np.uint8)
    expected[0:5, 1:3] = 1
    np.testing.assert_array_equal(tall, expected)
    # A right triangle: the staircase of pixel centres under its hypotenuse.
    triangle = _polygon([0.0, 0.0, 4.0, 0.0, 0.0, 3.0], 4, 5)
    np.testing.assert_array_equal(triangle, [[1, 1, 1, 0, 0],
                                             [1, 1, 0, 0, 0],
                                             [1, 0, 0, 0, 0],
                                             [0, 0, 0, 0, 0]])
    # Partly outside the image: clipped.
    corner = _polygon([-2.0, -2.0, 2.0, -2.0, 2.0, 2.0, -2.0, 2.0], 4, 4)
    expected = np.zeros((4, 4), np.uint8)
    expected[0:2, 0:2] = 1
    np.testing.assert_array_equal(corner, expected)
    for mask in (square, tall, triangle, corner):
        assert mask.dtype == np.uint8 and mask.flags.c_contiguous


def test_pixel_centres_on_edges_follow_the_coco_rasteriser():
    # Every edge passes through pixel centres (x.5): the rasteriser leaves those of the left and
    # top edges out and keeps those of the right and bottom ones, which the official numbers
    # count. A geometric fill (or a half-pixel shift) gives another mask.
    mask = _polygon([0.5, 0.5, 3.5, 0.5, 3.5, 2.5, 0.5, 2.5], 4, 5)
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0, 0],
                                         [0, 1, 1, 1, 0],
                                         [0, 1, 1, 1, 0],
                                         [0, 0, 0, 0, 0]])


def test_a_real_sized_polygon_decodes_inside_its_outline():
    rng = np.random.default_rng(1)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 300))
    radius = rng.uniform(150, 230, 300)
    xy = np.stack([320 + radius * np.cos(angles), 240 + radius * np.sin(angles)], 1).reshape(-1)
    mask = _polygon(xy.tolist(), 480, 640)
    assert mask.shape == (480, 640)
    rows, cols = np.nonzero(mask)
    dist = np.hypot(cols + 0.5 - 320, rows + 0.5 - 240)
    assert dist.max() < 231 and mask[240 - 100:240 + 100, 320 - 100:320 + 100].all()
    assert np.pi * 150**2 < mask.sum() < np.pi * 230**2


def test_degenerate_polygons_decode_to_empty_masks():
    # Zero area (repeated vertices, a diagonal sliver) covers no pixel centre; a later "polygon"
    # of one point or none is rasterised as nothing, not refused (only the first one decides
    # how the list is read).
    assert _polygon([1.0, 1.0, 3.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0], 4, 4).sum() == 0
    assert _polygon([1.0, 1.0, 3.0, 3.0, 1.0, 1.0], 4, 4).sum() == 0
    parts = m.decode_segmentation_parts([[0.0, 0.0, 4.0, 0.0, 0.0, 3.0], [2.0, 2.0], []], 4, 5)
    assert [int(p.sum()) for p in parts] == [6, 0, 0]
    # An image without pixels: empty masks of its shape.
    for h, w in ((0, 5), (5, 0)):
        (mask,) = m.decode_segmentation_parts([[0.0, 0.0, 4.0, 0.0, 0.0, 3.0]], h, w)
        assert mask.shape == (h, w)


def test_segmentation_parts_are_decoded_separately():
    polys = ([0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 0.0, 3.0], (2.0, 2.0, 4.0, 2.0, 4.0, 4.0, 2.0, 4.0))
    parts = m.decode_segmentation_parts(polys, 4, 4)  # a tuple, and a tuple inside: accepted
    first, second = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)
    first[0:3, 0:3] = 1
    second[2:4, 2:4] = 1
    assert len(parts) == 2
    np.testing.assert_array_equal(parts[0], first)
    np.testing.assert_array_equal(parts[1], second)
    summed = np.sum(parts, axis=0)
    assert summed.max() == 2 and summed[2, 2] == 2  # the parts overlap: the caller decides
    assert m.decode_segmentation_parts([], 4, 4) == []


# --------------------------------------------------------------------------- RLE


def test_hand_made_rle_strings_decode_to_known_masks():
    # Runs 20 zeros, 20 ones, 60 zeros: two-character numbers ("d0" = 20, "l1" = 60) and, from
    # the fourth run on, differences to the run two back ("0": 20 - 20).
    columns = np.zeros((10, 10), np.uint8)
    columns[:, 2:4] = 1
    assert m.string_to_counts("d0d0l1") == [20, 20, 60]
    np.testing.assert_array_equal(m.decode_rle({"size": [10, 10], "counts": "d0d0l1"}), columns)
    # Runs 0, 50, 10, 40: a leading empty run and a negative difference ("F" = 40 - 50).
    all_but_one = np.ones((10, 10), np.uint8)
    all_but_one[:, 5] = 0
    assert m.string_to_counts(b"0b1:F") == [0, 50, 10, 40]
    np.testing.assert_array_equal(m.decode_rle({"size": [10, 10], "counts": b"0b1:F"}),
                                  all_but_one)
    assert m.encode_rle(columns) == {"size": [10, 10], "counts": "d0d0l1"}
    assert m.encode_rle(all_but_one * 255) == {"size": [10, 10], "counts": "0b1:F"}
    mixed = columns.copy()
    mixed[0:5, 2] = 7  # any non-zero value is 1: no run ends between 7 and 1
    assert m.encode_rle(mixed) == {"size": [10, 10], "counts": "d0d0l1"}
    # Column-major: a non-square mask with one pixel set at row 1, column 2 of 3x4.
    one = np.zeros((3, 4), np.uint8)
    one[1, 2] = 1
    rle = {"size": [3, 4], "counts": [7, 1, 4]}
    np.testing.assert_array_equal(m.decode_rle(rle), one)
    assert m.string_to_counts(m.encode_rle(one)["counts"]) == [7, 1, 4]


def test_rle_strings_round_trip():
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
        rle = m.encode_rle(mask)
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        counts = m.string_to_counts(rle["counts"])
        np.testing.assert_array_equal(_runs_to_mask(counts, *mask.shape), mask)
        decoded = m.decode_rle(rle)  # str counts
        assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
        np.testing.assert_array_equal(decoded, mask)
        as_bytes = dict(rle, counts=rle["counts"].encode())
        np.testing.assert_array_equal(m.decode_rle(as_bytes), mask)
        as_bytearray = dict(rle, counts=bytearray(as_bytes["counts"]))
        np.testing.assert_array_equal(m.decode_rle(as_bytearray), mask)


def test_uncompressed_counts_decode():
    rng = np.random.default_rng(5)
    for _ in range(50):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
        raw = {"size": [h, w], "counts": _mask_to_runs(mask)}
        np.testing.assert_array_equal(m.decode_rle(raw), mask)
        np.testing.assert_array_equal(m.decode_segmentation_parts([raw, raw], h, w)[1], mask)
    # Zero-length runs in the middle are legal: 1 + 1 zeros, then 2 ones (column 1).
    np.testing.assert_array_equal(m.decode_rle({"size": [2, 2], "counts": [1, 0, 1, 2]}),
                                  [[0, 1], [0, 1]])


def test_empty_masks_encode_and_decode():
    for h, w in ((0, 5), (5, 0), (0, 0)):
        rle = m.encode_rle(np.zeros((h, w), np.uint8))
        assert rle == {"size": [h, w], "counts": "0"}
        assert m.decode_rle(rle).shape == (h, w)
    with pytest.raises(ValueError, match="expected an"):
        m.encode_rle(np.zeros((2, 3, 1), np.uint8))


@pytest.mark.parametrize("seg, needle", [
    ({"size": [4, 4], "counts": [3, 4]}, "cover 7 pixels"),
    ({"size": [4, 4], "counts": "0\x7f"}, "invalid character"),
    ({"size": [4, 4], "counts": "0\u00e9"}, "invalid character"),
    ({"size": [4, 4], "counts": b"0\x00"}, "invalid character"),
    ({"size": [4, 4], "counts": "2"}, "cover 2 pixels"),  # pycocotools: uninitialised memory
    ({"size": [2, 2], "counts": "9"}, "cover 9 pixels"),
    ({"size": [4, 4], "counts": "o"}, "ends in the middle"),
    ({"size": [4, 4], "counts": "000F"}, "invalid run length -10"),
    ({"counts": "04"}, "'size' and 'counts'"),
    ({"size": [4], "counts": "04"}, "'size' must be"),
    ({"size": [-4, -4], "counts": "0"}, "non-negative"),
    ({"size": [4, 4], "counts": [1.5, 14.5]}, "'counts' must be"),
    ({"size": [4, 4], "counts": [2**32, 16]}, "'counts' must be"),
    ({"size": [4, 4], "counts": [True, 15]}, "'counts' must be"),
    ([[1.0, 2.0, 3.0, 4.0]], "first polygon has 4 values"),
    ([[1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]], "not a finite number"),
    ([[1.0, 2.0, 10**400, 4.0, 5.0, 6.0]], "not a finite number"),
    ([[1.0, 2.0, True, 4.0, 5.0, 6.0]], "not a finite number"),
    ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], {"size": [4, 4], "counts": [16]}], "mixes"),
    ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "x"], "neither a polygon nor an RLE"),
    ("polygon", "must be polygons or RLE"),
    ([{"size": [3, 3], "counts": [9]}], "RLE part 0 is 3x3"),
])
def test_undecodable_segmentations_are_clear_errors(seg, needle):
    with pytest.raises(m.CocoMaskError, match=needle):
        m.decode_segmentation_parts(seg, 4, 4)


def test_without_pycocotools_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    from stamp_ros.cli.main import EXIT_INPUT, main

    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ImportError, match=r"needs pycocotools.*pip install 'stamp-ros\[eval\]'"):
        m.decode_rle({"size": [1, 1], "counts": [0, 1]})
    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    capsys.readouterr()
    code = main(["eval", "--dataset", "jsonl", "--data", str(labels)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == EXIT_INPUT and out == ""
    assert len(lines) == 1 and "stamp-ros[eval]" in lines[0], err
