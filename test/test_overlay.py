"""Overlay rendering and the union mask: colours, outlines, the answer banner, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from stamp_ros.render.overlay import displayable_ascii, render_overlay, union_mask
from stamp_ros.render.palette import color_for

H, W = 120, 160


def _frame() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(40, 200, (H, W, 3), dtype=np.uint8)


def _box(y0: int, y1: int, x0: int, x1: int, value: int = 1) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


def test_no_masks_no_text_is_an_unmodified_copy() -> None:
    frame = _frame()
    out = render_overlay(frame, [])
    assert out is not frame and not np.shares_memory(out, frame)
    np.testing.assert_array_equal(out, frame)
    assert out.dtype == np.uint8 and out.flags.writeable


def test_mask_is_tinted_with_its_palette_colour_and_outside_untouched() -> None:
    frame = _frame()
    before = frame.copy()
    out = render_overlay(frame, [_box(40, 80, 50, 110)], alpha=0.5)
    np.testing.assert_array_equal(frame, before)  # input never modified
    inner = (slice(45, 75), slice(55, 105))
    expected = 0.5 * frame[inner].astype(float) + 0.5 * np.array(color_for(0))
    assert np.abs(out[inner].astype(float) - expected).max() <= 1.0
    np.testing.assert_array_equal(out[:30], frame[:30])
    np.testing.assert_array_equal(out[:, :40], frame[:, :40])
    # the outline is drawn in the solid colour on the mask boundary
    assert (out[40:80, 50] == np.array(color_for(0))).all(axis=1).mean() > 0.8


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_extremes(alpha: float) -> None:
    frame = _frame()
    out = render_overlay(frame, [_box(40, 80, 50, 110)], alpha=alpha)
    inner = out[45:75, 55:105].reshape(-1, 3)
    if alpha == 0.0:
        np.testing.assert_array_equal(inner, frame[45:75, 55:105].reshape(-1, 3))
    else:
        assert (inner == np.array(color_for(0))).all()


def test_instances_get_distinct_stable_colours_and_later_masks_win() -> None:
    frame = np.full((H, W, 3), 128, np.uint8)
    masks = [_box(10, 60, 10, 70), _box(30, 100, 50, 150), _box(70, 110, 5, 40)]
    out = render_overlay(frame, masks, alpha=1.0)
    np.testing.assert_array_equal(out, render_overlay(frame, masks, alpha=1.0))  # deterministic
    centres = [out[20, 20], out[90, 120], out[100, 20]]
    for i, c in enumerate(centres):
        np.testing.assert_array_equal(c, color_for(i))
    assert len({tuple(c) for c in centres}) == 3
    np.testing.assert_array_equal(out[45, 60], color_for(1))  # overlap: mask 1 over mask 0


def test_colours_follow_the_given_ids_not_the_positions() -> None:
    """Tracking passes each object's track id: an object keeps its colour when the list order
    changes from frame to frame."""
    frame = np.full((H, W, 3), 128, np.uint8)
    a, b = _box(10, 60, 10, 70), _box(70, 110, 90, 150)
    first = render_overlay(frame, [a, b], alpha=1.0, colors=[7, 3])
    swapped = render_overlay(frame, [b, a], alpha=1.0, colors=[3, 7])
    np.testing.assert_array_equal(first, swapped)
    np.testing.assert_array_equal(first[30, 40], color_for(7))
    np.testing.assert_array_equal(first[90, 120], color_for(3))
    with pytest.raises(ValueError, match="colours"):
        render_overlay(frame, [a, b], colors=[1])


def test_strided_and_read_only_frames() -> None:
    frame = _frame()
    mask = _box(20, 90, 30, 120)
    expected = render_overlay(np.ascontiguousarray(frame[:, ::-1]), [mask], text="hi")
    np.testing.assert_array_equal(render_overlay(frame[:, ::-1], [mask], text="hi"), expected)
    frozen = frame.copy()
    frozen.flags.writeable = False
    out = render_overlay(frozen, [mask[:, ::-1].copy()], text="hi")
    assert out.flags.writeable


def test_mask_value_conventions_are_equivalent() -> None:
    frame = _frame()
    base = _box(20, 90, 30, 120)
    outs = [render_overlay(frame, [m]) for m in (base, base * 255, base.astype(bool))]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_empty_mask_is_harmless() -> None:
    frame = _frame()
    np.testing.assert_array_equal(render_overlay(frame, [np.zeros((H, W), np.uint8)]), frame)


@pytest.mark.parametrize(
    "mask",
    [np.zeros((H, W + 1), np.uint8), np.zeros((H // 2, W // 2), np.uint8), np.zeros(W, np.uint8)],
    ids=["wider", "half-size", "1d"],
)
def test_mask_size_mismatch_raises(mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mask 1"):
        render_overlay(_frame(), [_box(0, 5, 0, 5), mask])
    with pytest.raises(ValueError):
        union_mask([mask], (H, W))


@pytest.mark.parametrize(
    "frame",
    [np.zeros((H, W), np.uint8), np.zeros((H, W, 4), np.uint8), np.zeros((H, W, 3), np.float32),
     np.zeros((0, W, 3), np.uint8)],
    ids=["gray", "rgba", "float", "empty"],
)
def test_bad_frames_raise(frame: np.ndarray) -> None:
    with pytest.raises(ValueError):
        render_overlay(frame, [])


def test_bad_alpha_and_labels_raise() -> None:
    with pytest.raises(ValueError, match="alpha"):
        render_overlay(_frame(), [], alpha=1.5)
    with pytest.raises(ValueError, match="labels"):
        render_overlay(_frame(), [_box(0, 5, 0, 5)], labels=["a", "b"])


def _banner_rows(out: np.ndarray, frame: np.ndarray) -> int:
    """Rows from the top that were darkened or written on by the banner."""
    changed = (out != frame).any(axis=(1, 2))
    return int(np.argmin(changed)) if not changed.all() else out.shape[0]


def test_text_banner_is_drawn_and_wraps_within_a_third_of_the_frame() -> None:
    frame = _frame()
    short = render_overlay(frame, [], text="A red mug.")
    rows_short = _banner_rows(short, frame)
    assert 0 < rows_short < H // 3
    assert (short[:rows_short] > 230).all(axis=2).any()  # white text
    np.testing.assert_array_equal(short[rows_short:], frame[rows_short:])

    long_text = "The red mug is to the left of the laptop on the second shelf. " * 3
    wrapped = render_overlay(frame, [], text=long_text)
    rows_long = _banner_rows(wrapped, frame)
    assert rows_short < rows_long <= H // 3 + 1

    huge = render_overlay(frame, [], text="word " * 2000)
    assert _banner_rows(huge, frame) <= H // 3 + 1


def test_non_ascii_text_and_labels_do_not_break_rendering() -> None:
    frame = _frame()
    text = "Der Becher „links“ — café 杯子 🙂\nzweite Zeile\u200b"
    out = render_overlay(frame, [_box(40, 80, 50, 110)], text=text, labels=["Tasse ü"])
    assert out.shape == frame.shape
    one_long_word = render_overlay(frame, [], text="x" * 500)  # must be split by characters
    assert _banner_rows(one_long_word, frame) > 0


@pytest.mark.parametrize("text", [None, "", "   ", "\u200b"])
def test_empty_text_draws_no_banner(text: str | None) -> None:
    frame = _frame()
    np.testing.assert_array_equal(render_overlay(frame, [], text=text), frame)


@pytest.mark.parametrize("index", [0, 1])
def test_labels_are_drawn_in_instance_colour(index: int) -> None:
    frame = np.full((H, W, 3), 128, np.uint8)
    masks = [_box(40, 80, 50, 110), _box(90, 110, 10, 30)]
    labels: list[str | None] = [None, None]
    labels[index] = "mug"
    with_labels = render_overlay(frame, masks, labels=labels)
    without = render_overlay(frame, masks)
    diff = (with_labels != without).any(axis=2)
    ys, xs = np.nonzero(diff)
    top, left = (40, 50) if index == 0 else (90, 10)
    assert top - 20 <= ys.min() and ys.max() <= top and left <= xs.min() <= left + 2
    # A box filled with the instance's own colour, with the text in black or white ink on it:
    # every changed pixel is the colour or an anti-aliased blend of colour and ink.
    colour = np.array(color_for(index), float)
    changed = with_labels[diff].astype(float)
    assert (changed == colour).all(axis=1).mean() > 0.5
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = np.zeros(3) if luminance > 140 else np.full(3, 255.0)
    t = np.clip((changed - colour) @ (ink - colour) / np.sum((ink - colour) ** 2), 0, 1)
    off_line = np.abs(changed - (colour + t[:, None] * (ink - colour))).max(axis=1)
    assert off_line.max() <= 3.0, changed[off_line > 3.0][:5]
    assert (t > 0.5).sum() >= 10  # the text itself is drawn


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 5, 3), (8, 8, 3)])
def test_tiny_frames(shape: tuple[int, int, int]) -> None:
    frame = np.zeros(shape, np.uint8)
    mask = np.ones(shape[:2], np.uint8)
    out = render_overlay(frame, [mask], text="a long answer that cannot fit", labels=["x"])
    assert out.shape == shape


def test_displayable_ascii() -> None:
    assert displayable_ascii("plain text 123") == "plain text 123"
    assert displayable_ascii("café naïve ﬁle Ａ") == "cafe naive file A"
    assert displayable_ascii("“q” ‘s’ a–b—c …") == "\"q\" 's' a-b-c ..."
    assert displayable_ascii("杯子🙂") == "???"
    assert displayable_ascii("a\u200bb\u0301\tc\nd") == "ab c\nd"


def test_union_mask() -> None:
    empty = union_mask([], (H, W, 3))
    assert empty.shape == (H, W) and empty.dtype == np.uint8 and not empty.any()
    a, b = _box(10, 20, 10, 20), _box(15, 30, 15, 40, value=255)
    u = union_mask([a, b.astype(bool), b], (H, W))
    assert set(np.unique(u)) == {0, 255}
    np.testing.assert_array_equal(u > 0, (a > 0) | (b > 0))
    with pytest.raises(ValueError):
        union_mask([], (H,))
