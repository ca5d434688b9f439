"""Why an object has no 3D: the reasons ``Instance.status_3d`` carries and /diagnostics counts.

Each reason has a *kind* (counted per report, so a skew of 180 ms and one of 190 ms are one
line on /diagnostics) and a *text* for the one object (what a planner or an integrator reads).
Pure string logic shared by the node and ``stamp-ros bag``; the tf texts turn tf2's exception
messages into one short line without importing tf2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KINDS", "Reason3D", "depth_skew", "depth_unusable", "empty_mask", "few_points",
           "no_camera_info", "no_depth", "tf_failure", "tf_unavailable"]

KINDS = ("no_depth", "no_camera_info", "depth_skew", "depth_unusable", "tf", "empty_mask",
         "few_points")
"""Every kind, in the order /diagnostics lists them."""


@dataclass(frozen=True)
class Reason3D:
    kind: str
    text: str


def no_depth() -> Reason3D:
    return Reason3D("no_depth", "no depth received")


def no_camera_info() -> Reason3D:
    return Reason3D("no_camera_info", "no camera_info received (intrinsics are needed for 3D)")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def depth_skew(skew_s: float, max_skew_s: float) -> Reason3D:
    """The nearest depth image is further from the colour frame than ``depth_max_skew``."""
    return Reason3D("depth_skew", f"depth {_ms(skew_s)} from the colour frame "
                                  f"(depth_max_skew {_ms(max_skew_s)})")


def depth_unusable(detail: str) -> Reason3D:
    return Reason3D("depth_unusable", f"depth image unusable: {detail}")


def empty_mask() -> Reason3D:
    return Reason3D("empty_mask", "empty mask")


def few_points(count: int, minimum: int) -> Reason3D:
    """Too few valid depth points under the mask to summarise (after erosion and outliers)."""
    return Reason3D("few_points", f"{count} valid points < {minimum}")


def tf_unavailable(target: str) -> Reason3D:
    return Reason3D("tf", f"tf: tf2_ros is not installed, no transform into target_frame "
                          f"{target!r}")


_MISSING = re.compile(r'"([^"]+)" passed to lookupTransform argument \w+ does not exist')
_UNCONNECTED = re.compile(r"connection between '([^']+)' and '([^']+)'")


def tf_failure(exc_type: str, message: str, source: str, target: str) -> Reason3D:
    """One line for a failed tf2 lookup of ``source`` -> ``target`` from the exception's class
    name and message (tf2's LookupException, ConnectivityException, ExtrapolationException,
    ...)."""
    missing = _MISSING.search(message)
    if missing or "does not exist" in message:
        frame = missing.group(1) if missing else target
        return Reason3D("tf", f"tf: frame {frame!r} does not exist")
    if exc_type == "ConnectivityException" or _UNCONNECTED.search(message):
        return Reason3D("tf", f"tf: no connection between {target!r} and {source!r} "
                              "(separate tf trees)")
    if exc_type == "ExtrapolationException" or "extrapolation" in message.lower():
        return Reason3D("tf", f"tf: no transform {source!r} -> {target!r} at the frame's stamp "
                              "(extrapolation: tf too old or too new)")
    first = message.strip().splitlines()[0][:160] if message.strip() else ""
    return Reason3D("tf", f"tf: {exc_type}{': ' + first if first else ''}")
