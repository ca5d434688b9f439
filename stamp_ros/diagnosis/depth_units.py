"""Is a depth image in the units the node thinks? The "3D positions are wrong" check.

REP 118: 16UC1 depth is millimetres (the node multiplies by ``depth_scale``, 0.001), 32FC1 is
metres. Two mistakes are common and silent: a 16UC1 stream declared as metres
(``depth_scale:=1.0``: a 1.5 m table becomes 1500 m away and nothing has 3D) and a float stream
in millimetres. A room-scale scene has a median valid depth of a few metres, so a median outside
:data:`PLAUSIBLE_M` almost certainly means the scale is wrong; the scale that brings it back into
range names the unit. Pure numpy: the node checks every depth image it receives (on a sparse
sample, microseconds), ``stamp-ros doctor`` the ones it measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PLAUSIBLE_M = (0.05, 20.0)
"""Median valid depth (metres) of a real scene: closer than 5 cm or beyond 20 m is a unit error
far more often than a scene."""

INTEGER_ENCODINGS = ("16UC1", "mono16", "16SC1", "32SC1")
FLOAT_ENCODINGS = ("32FC1", "64FC1")
SAMPLES = 4096
"""Pixels read per image: a median of ~4k pixels is stable to well under 1 %, and costs
microseconds instead of a full-image median."""

UNITS = ((0.001, "millimetres"), (0.0001, "tenths of a millimetre"), (0.01, "centimetres"),
         (1.0, "metres"))
"""Scales a 16-bit depth camera uses, most common first."""


@dataclass(frozen=True)
class DepthCheck:
    """The median valid depth in metres as the node reads it (None: no valid pixel, or not a
    depth encoding) and, when it looks wrong, the warning naming the likely mistake and fix."""

    median_m: float | None
    problem: str | None


def sample(raw: np.ndarray, count: int = SAMPLES) -> np.ndarray:
    """About ``count`` pixels spread over the image, flattened: every k-th pixel in raster
    order, k coprime to the width so the samples fall in every column (a regular grid would
    alias with interlaced or striped invalid pixels)."""
    flat = np.asarray(raw).reshape(-1)
    width = raw.shape[1] if raw.ndim > 1 else 1
    step = max(1, flat.size // max(1, count))
    while step > 1 and math.gcd(step, width) != 1:
        step += 1
    return flat[::step]


def _median_valid(values: np.ndarray) -> float | None:
    values = values.astype(np.float64)
    valid = values[np.isfinite(values) & (values > 0)]
    return float(np.median(valid)) if valid.size else None


def _plausible(metres: float) -> bool:
    return PLAUSIBLE_M[0] <= metres <= PLAUSIBLE_M[1]


def check_depth(encoding: str, raw: np.ndarray, depth_scale: float) -> DepthCheck:
    """Check one depth image (its pixel array as decoded, any size) against its encoding and
    ``depth_scale``."""
    low, high = PLAUSIBLE_M
    if encoding in INTEGER_ENCODINGS:
        median_raw = _median_valid(sample(raw))
        if median_raw is None:
            return DepthCheck(None, None)
        metres = median_raw * depth_scale
        if _plausible(metres):
            return DepthCheck(metres, None)
        text = (f"median valid depth {metres:.3g} m ({encoding} value {median_raw:.0f} x "
                f"depth_scale {depth_scale:g}) is outside {low:g}-{high:g} m")
        fits = [(scale, unit) for scale, unit in UNITS
                if scale != depth_scale and _plausible(median_raw * scale)]
        if fits:
            scale, unit = fits[0]
            text += (f": the {encoding} values look like {unit}, not "
                     f"{_unit_name(depth_scale)}: set depth_scale:={scale:g}")
        else:
            text += ": check depth_scale against the driver's depth units"
        return DepthCheck(metres, text)
    if encoding in FLOAT_ENCODINGS:
        metres = _median_valid(sample(raw))
        if metres is None or _plausible(metres):
            return DepthCheck(metres, None)
        text = (f"median valid depth {metres:.3g} m ({encoding}, metres by definition) is "
                f"outside {low:g}-{high:g} m")
        if _plausible(metres * 0.001):
            text += (": the values look like millimetres; depth_scale applies to 16UC1 only, so "
                     "make the driver publish 32FC1 in metres (REP 118) or 16UC1 millimetres")
        else:
            text += ": check the driver's depth units (32FC1 must be metres, REP 118)"
        return DepthCheck(metres, text)
    return DepthCheck(None, f"encoding {encoding!r} is not a depth image (16UC1 millimetres or "
                            "32FC1 metres): remap depth to the aligned depth topic")


def _unit_name(scale: float) -> str:
    for value, unit in UNITS:
        if np.isclose(scale, value):
            return unit
    return f"{scale:g} m per unit"
