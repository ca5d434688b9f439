"""Human-facing renderings of a result: the coloured overlay for RViz and the union mask.

numpy + OpenCV only (no ROS), so the CLI can write the same overlay the node publishes.
Colours come from :mod:`stamp_ros.render.palette`, so instance ``i`` looks the same in the overlay,
the RViz markers and the point cloud.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import cv2
import numpy as np

from stamp_ros.render.palette import color_for

__all__ = ["displayable_ascii", "render_overlay", "union_mask"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX

# Typographic characters that NFKD leaves alone but have an obvious ASCII stand-in; models
# and planners emit these often, and a row of "?" where a quote was reads like a bug.
_ASCII_STANDINS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2026": "...", "\u00d7": "x", "\u2022": "*", "\u00b7": "*",
}


def displayable_ascii(text: str) -> str:
    """``text`` reduced to what cv2.putText can draw (printable ASCII).

    The Hershey fonts only have ASCII glyphs and draw anything else as "?"-like garbage, so
    accents are stripped (é -> e, ﬁ -> fi), typographic punctuation gets its ASCII twin,
    invisible format characters vanish, and what is left (CJK, emoji) becomes "?" so the
    reader still sees that something was there. Newlines are kept for the caller to break on.
    """
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if 32 <= code < 127 or ch == "\n":
            out.append(ch)
            continue
        if ch in _ASCII_STANDINS:
            out.append(_ASCII_STANDINS[ch])
            continue
        if ch.isspace():
            out.append(" ")
            continue
        category = unicodedata.category(ch)
        if category[0] in "CM":  # controls, zero-width formatting, stray combining marks
            continue
        decomposed = "".join(
            c for c in unicodedata.normalize("NFKD", ch) if 32 <= ord(c) < 127
        )
        out.append(decomposed or "?")
    return "".join(out)


def _check_mask(mask: np.ndarray, hw: tuple[int, int], index: int) -> np.ndarray:
    """The mask as bool (nonzero = foreground), accepting 0/1, 0/255 and bool masks alike."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != hw:
        raise ValueError(f"mask {index} has shape {m.shape}, the frame is {hw[0]}x{hw[1]}")
    return m if m.dtype == np.bool_ else m != 0


def union_mask(masks: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """All instances in one (H, W) uint8 image, 0 or 255.

    Published as the node's mono8 ``~/mask``: 255 rather than 1 so it is visible as is in
    RViz and image viewers. ``shape`` is the frame's shape ((H, W) or (H, W, C)), so an
    answer with no masks still yields a correctly sized, empty mask.
    """
    if len(shape) < 2:
        raise ValueError(f"shape must be (H, W) or (H, W, C), got {tuple(shape)}")
    hw = (int(shape[0]), int(shape[1]))
    cover = np.zeros(hw, dtype=np.bool_)
    for i, mask in enumerate(masks):
        np.logical_or(cover, _check_mask(mask, hw, i), out=cover)
    return cover.view(np.uint8) * np.uint8(255)


def _text_width(text: str, scale: float, thickness: int) -> int:
    return cv2.getTextSize(text, _FONT, scale, thickness)[0][0]


def _wrap(text: str, max_width: int, scale: float, thickness: int) -> list[str]:
    """Greedy word wrap by rendered width; words longer than a line are split by character."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _text_width(candidate, scale, thickness) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
                line = ""
            while _text_width(word, scale, thickness) > max_width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and _text_width(word[:cut], scale, thickness) > max_width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        if line:
            lines.append(line)
    return lines


def _draw_banner(out: np.ndarray, text: str) -> int:
    """Answer text, wrapped, white on a darkened band across the top of the frame.

    Darkening (rather than a solid box) keeps the scene visible behind short answers, and the
    band is capped at a third of the frame so a long answer never hides the masks; lines that
    do not fit end in "...". Returns the band's height (0 when nothing was drawn).
    """
    h, w = out.shape[:2]
    clean = displayable_ascii(text).strip()
    if not clean:
        return 0
    scale = float(np.clip(w / 1400.0, 0.35, 1.2))
    thickness = max(1, round(scale * 2))
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line_h = text_h + baseline + max(2, text_h // 3)
    margin = max(2, text_h // 2)
    lines = _wrap(clean, max(1, w - 2 * margin), scale, thickness)
    max_lines = max(1, int((h / 3 - 2 * margin) // line_h))
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and _text_width(last + "...", scale, thickness) > w - 2 * margin:
            last = last[:-1]
        lines[-1] = last + "..."
    band = min(h, 2 * margin + line_h * len(lines))
    region = out[:band]
    region[...] = (region.astype(np.uint16) * 90 // 256).astype(np.uint8)
    for i, line in enumerate(lines):
        y = margin + i * line_h + text_h
        cv2.putText(out, line, (margin, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return band


def _draw_label(
    out: np.ndarray, label: str, contours: Sequence[np.ndarray], color, top: int
) -> None:
    """Instance label in a box of the instance's colour at the top-left of its outline,
    kept below row ``top`` so the answer banner never hides it."""
    text = displayable_ascii(label).replace("\n", " ").strip()
    if not text or not contours:
        return
    h, w = out.shape[:2]
    x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
    scale = float(np.clip(w / 2000.0, 0.3, 0.8))
    thickness = max(1, round(scale * 1.5))
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = 2
    x0 = int(min(max(0, x), max(0, w - tw - 2 * pad)))
    y0 = int(min(max(top, y - th - baseline - 2 * pad), max(0, h - th - baseline - 2 * pad)))
    cv2.rectangle(out, (x0, y0), (x0 + tw + 2 * pad, y0 + th + baseline + 2 * pad), color, -1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(out, text, (x0 + pad, y0 + pad + th), _FONT, scale, ink, thickness, cv2.LINE_AA)


def render_overlay(
    rgb: np.ndarray,
    masks: Sequence[np.ndarray],
    text: str | None = None,
    alpha: float = 0.5,
    labels: Sequence[str | None] | None = None,
    colors: Sequence[int] | None = None,
) -> np.ndarray:
    """A new rgb8 frame: instances tinted and outlined in palette colours, answer on top.

    Masks are (H, W) and nonzero means foreground (0/1, 0/255 or bool); later masks are drawn
    over earlier ones where they overlap. The tint is blended with ``alpha`` so the object
    stays recognisable underneath, while the solid outline shows the exact boundary.
    ``labels`` (one per mask, ``None`` to skip one) name the instances; ``colors`` (one palette
    index per mask, default its position) keeps a tracked object's colour from frame to frame
    whatever its position in the list. The input frame is
    never modified. Raises ValueError for a frame that is not (H, W, 3) uint8, a mask of
    another size, an alpha outside [0, 1] or a labels list of the wrong length.
    """
    frame = np.asarray(rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 frame, got {frame.dtype} "
                         f"{frame.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    masks = list(masks)
    if labels is not None and len(labels) != len(masks):
        raise ValueError(f"got {len(labels)} labels for {len(masks)} masks")
    if colors is not None and len(colors) != len(masks):
        raise ValueError(f"got {len(colors)} colours for {len(masks)} masks")
    palette = [color_for(i if colors is None else int(colors[i])) for i in range(len(masks))]
    h, w = frame.shape[:2]
    bool_masks = [_check_mask(m, (h, w), i) for i, m in enumerate(masks)]
    frame = np.ascontiguousarray(frame)  # OpenCV rejects e.g. negative strides
    out = frame.copy()  # always a fresh, writable result; the input is never touched

    thickness = max(1, round(max(h, w) / 640))
    a = float(alpha)
    for i, m in enumerate(bool_masks):
        m8 = np.ascontiguousarray(m).view(np.uint8)
        x, y, bw, bh = cv2.boundingRect(m8)  # work inside the mask's box only
        if bw == 0 or bh == 0:
            continue
        color = palette[i]
        roi = (slice(y, y + bh), slice(x, x + bw))
        # Blend from the untouched frame, so where instances overlap the later one wins
        # instead of tints accumulating into mud.
        faded = cv2.addWeighted(frame[roi], 1.0 - a, frame[roi], 0.0, 0.0)
        tint = (color[0] * a, color[1] * a, color[2] * a, 0.0)
        cv2.add(faded, tint, dst=out[roi], mask=m8[roi])
    outlines = []
    for i, m in enumerate(bool_masks):
        # Outlines after all tints, so no instance's fill hides another's boundary.
        found = cv2.findContours(
            np.ascontiguousarray(m).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        contours = found[-2]  # OpenCV 3 returns (image, contours, hierarchy)
        if contours:
            cv2.drawContours(out, contours, -1, palette[i], thickness, cv2.LINE_8)
        outlines.append(contours)

    band = _draw_banner(out, text) if text else 0
    for i, contours in enumerate(outlines):
        if labels is not None and labels[i]:
            _draw_label(out, str(labels[i]), contours, palette[i], band)
    return out
