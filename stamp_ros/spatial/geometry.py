"""Mask + aligned depth + pinhole intrinsics -> 3D points, centroid and box.

Pure numpy on purpose: the node, the offline CLI and the tests all need the same numbers,
and none of them should have to start ROS (or tf2) to get them. The node converts
``CameraInfo``/``TransformStamped`` into the plain values taken here.

Conventions (REP 103/105/118): points are in the camera *optical* frame (x right, y down,
z forward, metres); pixel centres sit at integer coordinates, as in ``CameraInfo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_POINTS",
    "CameraIntrinsics",
    "Object3D",
    "depth_to_metres",
    "mask_points",
    "quaternion_to_matrix",
    "summarise_points",
    "transform_points",
    "valid_depth_fraction",
]

# Fewer valid points than this is not an object, it is noise (a few stray depth pixels):
# a centroid from them would send a manipulation planner to the wrong place with confidence.
MIN_POINTS = 10

# 1.4826 * MAD estimates the standard deviation of normally distributed data, so
# ``outlier_mad`` reads as "how many sigmas" whatever the depth noise is.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the image the depth pixels are indexed in.

    Width and height are stored with the focal lengths because intrinsics are only
    meaningful for one resolution; carrying the size lets callers detect (and fix with
    :meth:`scaled_to`) a depth image whose size differs from ``CameraInfo``'s.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        # Fail at construction: a zero focal length (an unset CameraInfo) would otherwise
        # surface much later as inf/NaN points far from the cause.
        if not (np.isfinite(self.fx) and np.isfinite(self.fy) and self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if not (np.isfinite(self.cx) and np.isfinite(self.cy)):
            raise ValueError(f"principal point must be finite, got cx={self.cx} cy={self.cy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_k(cls, k: Sequence[float] | np.ndarray, width: int, height: int) -> CameraIntrinsics:
        """Build from ``CameraInfo.k`` (row-major 9 values or a 3x3 matrix)."""
        km = np.asarray(k, dtype=np.float64)
        if km.size != 9:
            raise ValueError(f"K must have 9 elements, got {km.size}")
        km = km.reshape(3, 3)
        return cls(
            fx=float(km[0, 0]),
            fy=float(km[1, 1]),
            cx=float(km[0, 2]),
            cy=float(km[1, 2]),
            width=int(width),
            height=int(height),
        )

    def scaled_to(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics for the same camera resampled to ``width`` x ``height``.

        Aligned depth is often published at a lower resolution than the ``CameraInfo`` it
        shares (or the mask is at colour resolution). The principal point is mapped
        through pixel *centres* -- ``(c + 0.5) * s - 0.5`` -- because that is how image
        resizing maps pixels; scaling ``c`` directly would shift every point by half a
        (source) pixel.
        """
        width, height = int(width), int(height)
        if (width, height) == (self.width, self.height):
            return self
        if width <= 0 or height <= 0:
            raise ValueError(f"target size must be positive, got {width}x{height}")
        sx = width / self.width
        sy = height / self.height
        return CameraIntrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (u, v) of optical-frame points; the inverse of back-projection.

        Lets callers (and tests) check a 3D result against the image it came from.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * p[:, 0] / p[:, 2] + self.cx
            v = self.fy * p[:, 1] / p[:, 2] + self.cy
        return np.stack([u, v], axis=1)


@dataclass(frozen=True, eq=False)
class Object3D:
    """What a planner needs about one segmented instance, in the points' frame.

    The box is axis-aligned and covers only the *visible* surface: depth sees the front
    of an object, so the extent along the viewing axis is a lower bound on its true depth.
    """

    centroid: np.ndarray  # (3,) float64, mean of the points
    box_min: np.ndarray  # (3,) float64
    box_max: np.ndarray  # (3,) float64
    size: np.ndarray  # (3,) float64, box_max - box_min
    n_points: int

    @property
    def box_center(self) -> np.ndarray:
        """Centre of the box; differs from the centroid when points are unevenly spread."""
        return (self.box_min + self.box_max) / 2.0


def depth_to_metres(depth: np.ndarray, depth_scale: float | None = None) -> np.ndarray:
    """Depth image -> float32 metres with every "no reading" value as NaN.

    Sensors mark missing depth as 0 (16UC1) or NaN/inf (32FC1); unifying them to NaN means
    later code needs a single ``isfinite`` test. ``depth_scale`` (metres per raw unit)
    applies to integer images only -- default 0.001, the millimetres of REP 118 -- because
    32FC1 is metres by definition, so one node-wide parameter set for an unusual integer
    camera cannot silently corrupt a float stream.
    """
    d = np.asarray(depth)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[:, :, 0]
    if d.ndim != 2:
        raise ValueError(f"depth must be 2-D (H, W), got shape {d.shape}")
    if np.issubdtype(d.dtype, np.integer) or d.dtype == np.bool_:
        scale = 0.001 if depth_scale is None else float(depth_scale)
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"depth_scale must be positive, got {depth_scale}")
        out = d.astype(np.float32) * np.float32(scale)
    elif np.issubdtype(d.dtype, np.floating):
        out = d.astype(np.float32, copy=True)
    else:
        raise TypeError(f"unsupported depth dtype {d.dtype}")
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask, pixel-centre aligned.

    Sampling at pixel centres matches :meth:`CameraIntrinsics.scaled_to`, so a mask pixel
    and the depth pixel it lands on see the same ray.
    """
    src_h, src_w = mask.shape
    rows = np.minimum(((np.arange(height) + 0.5) * (src_h / height)).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (src_w / width)).astype(np.intp), src_w - 1)
    return mask[rows[:, None], cols[None, :]]


def _erode_axis(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """1-D erosion along ``axis``: the AND of the ``2 radius + 1`` shifted copies (the radius
    is a few pixels; boolean ANDs of the whole crop cost less than window sums in int32)."""
    # Edge-replicate: the frame border is not an object boundary, so an object cut off by
    # the image edge should not lose extra pixels there.
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.moveaxis(np.pad(mask, pad, mode="edge"), axis, 0)
    n = mask.shape[axis]
    out = padded[:n].copy()
    for k in range(1, 2 * radius + 1):
        out &= padded[k:k + n]
    return np.moveaxis(out, 0, axis)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) erosion: removes every pixel within ``radius`` of the boundary."""
    return _erode_axis(_erode_axis(mask, radius, 0), radius, 1)


def mask_points(
    mask: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    *,
    erode_px: int = 2,
    min_depth: float = 0.1,
    max_depth: float = 10.0,
    outlier_mad: float | None = 3.0,
    max_points: int | None = None,
    mad_floor_m: float = 0.01,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Back-project the masked depth pixels to an (N, 3) float32 array of optical-frame points.

    A mask predicted on the colour image never lines up perfectly with depth: its border
    pixels often read the background (edge bleeding), and depth edges themselves are
    smeared by the sensor. Two defences, both cheap:

    * the mask is eroded by ``erode_px`` depth pixels, dropping the uncertain border. Thin
      objects that erosion would wipe out get the largest radius that still leaves
      ``MIN_POINTS`` pixels, so a pen stays a pen rather than becoming "no 3D";
    * depths further than ``outlier_mad`` robust sigmas (1.4826 * MAD, at least
      ``mad_floor_m`` so a flat, quantised surface keeps its 1 mm steps) from the median
      are dropped, removing background that leaks through the interior. ``None`` or 0
      disables it.

    ``mask`` may be at any resolution (e.g. colour while depth is smaller); it is resampled
    to the depth grid with nearest neighbour. ``intrinsics`` whose size differs from the
    depth image are scaled to it, since they cannot be right for the depth pixels otherwise.
    ``max_points`` thins the result with evenly spaced indices -- deterministic, so the same
    frame always publishes the same cloud, and spatially uniform since pixels are in raster
    order. ``max_pixels`` instead samples the eroded mask before anything is computed, on
    every ``step``-th row and column of the image (the smallest step that leaves at most
    ``max_pixels``): the cost of a large object is then bounded, and its centroid and box
    (from a regular grid over all of it) differ from the full ones by about a step's
    footprint at most, as the tracked frames need (one lift per object per camera frame).
    """
    depth = np.asarray(depth_m)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D (H, W), got shape {depth.shape}")
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    empty = np.empty((0, 3), dtype=np.float32)
    if max_points is not None and max_points <= 0:
        return empty

    height, width = depth.shape
    m = m != 0
    if m.shape != (height, width):
        m = _resize_nearest(m, height, width)
    intr = intrinsics.scaled_to(width, height)

    # Work inside the mask's bounding box (plus room for erosion): masks are usually a
    # small part of the frame, and this keeps the cost proportional to the object.
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return empty
    cols = np.flatnonzero(m.any(axis=0))
    radius = max(int(erode_px), 0)
    r0, r1 = max(rows[0] - radius - 1, 0), min(rows[-1] + radius + 2, height)
    c0, c1 = max(cols[0] - radius - 1, 0), min(cols[-1] + radius + 2, width)
    sub = m[r0:r1, c0:c1]
    for r in range(radius, 0, -1):
        eroded = _erode(sub, r)
        if np.count_nonzero(eroded) >= MIN_POINTS:
            sub = eroded
            break

    z_crop = depth[r0:r1, c0:c1]
    step, ro, co = 1, 0, 0  # every pixel, or every step-th row and column of the image
    if max_pixels is not None and (count := int(np.count_nonzero(sub))) > max_pixels:
        step = int(np.ceil(np.sqrt(count / max(int(max_pixels), 1))))
        ro, co = (-r0) % step, (-c0) % step
        sub, z_crop = sub[ro::step, co::step], z_crop[ro::step, co::step]
    with np.errstate(invalid="ignore"):
        valid = sub & np.isfinite(z_crop) & (z_crop >= min_depth) & (z_crop <= max_depth)
    v, u = np.nonzero(valid)
    z = z_crop[v, u].astype(np.float64)
    if z.size == 0:
        return empty

    if outlier_mad and z.size >= 3:
        med = np.median(z)
        dev = np.abs(z - med)
        sigma = max(_MAD_TO_SIGMA * float(np.median(dev)), float(mad_floor_m))
        keep = dev <= float(outlier_mad) * sigma
        v, u, z = v[keep], u[keep], z[keep]

    if max_points is not None and z.size > max_points:
        idx = np.round(np.linspace(0, z.size - 1, int(max_points))).astype(np.intp)
        v, u, z = v[idx], u[idx], z[idx]

    x = (u * step + (co + c0) - intr.cx) * z / intr.fx
    y = (v * step + (ro + r0) - intr.cy) * z / intr.fy
    return np.stack([x, y, z], axis=1).astype(np.float32)


def valid_depth_fraction(
    mask: np.ndarray, depth_m: np.ndarray, *, min_depth: float = 0.1, max_depth: float = 10.0
) -> float:
    """Share of the mask's pixels (on the depth grid) with a usable depth reading.

    "Usable" is what :func:`mask_points` accepts before erosion and outlier removal (finite,
    within ``min_depth``..``max_depth``), so a low value explains a small ``num_points``:
    holes in the depth image, an object closer than the sensor's minimum range, or a depth
    image in the wrong units. 0.0 for an empty mask.
    """
    depth = np.asarray(depth_m)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    m = m != 0
    if m.shape != depth.shape:
        m = _resize_nearest(m, *depth.shape)
    total = int(np.count_nonzero(m))
    if total == 0:
        return 0.0
    z = depth[m]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z >= min_depth) & (z <= max_depth)
    return float(np.count_nonzero(valid)) / total


def summarise_points(points: np.ndarray, min_points: int = MIN_POINTS) -> Object3D | None:
    """Centroid and axis-aligned box of a point set, or ``None`` when there is too little.

    ``None`` (rather than a zero centroid) is what lets the node set ``has_3d = False``:
    a planner must be able to tell "no depth on this object" from "object at the origin".
    Non-finite rows are ignored so a caller's own points cannot poison the mean.
    """
    p = np.asarray(points).reshape(-1, 3)
    if not np.isfinite(p).all():
        p = p[np.isfinite(p).all(axis=1)]
    if p.shape[0] < max(int(min_points), 1):
        return None
    # one contiguous row per axis, in the points' own precision (the lift's float32), the
    # mean accumulated in float64: reducing the (N, 3) rows directly, or a float64 copy of
    # them, cost 10 ms for 90k points, this 0.7 ms (the tracked frames lift every object)
    axes = np.ascontiguousarray(p.T)
    box_min = axes.min(axis=1).astype(np.float64)
    box_max = axes.max(axis=1).astype(np.float64)
    return Object3D(
        centroid=axes.mean(axis=1, dtype=np.float64),
        box_min=box_min,
        box_max=box_max,
        size=box_max - box_min,
        n_points=int(p.shape[0]),
    )


def quaternion_to_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 rotation matrix from a quaternion in ROS order ``(x, y, z, w)``.

    Normalises first: quaternions that went through float32 or text (YAML, launch args)
    are rarely unit length, and an unnormalised one would scale the points too.
    """
    x, y, z, w = (float(c) for c in np.asarray(q, dtype=np.float64).reshape(4))
    n = np.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion must have non-zero finite norm, got {(x, y, z, w)}")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=np.float64,
    )


def transform_points(
    points: np.ndarray,
    rotation: np.ndarray | Sequence[Sequence[float]],
    translation: np.ndarray | Sequence[float],
) -> np.ndarray:
    """Apply ``p' = R p + t`` to (N, 3) points; returns float32 like :func:`mask_points`.

    Takes a plain matrix and vector so a tf2 ``TransformStamped`` (via
    :func:`quaternion_to_matrix`) can be applied without tf2 in the geometry code, keeping
    it testable offline. Computed in float64 so large map-frame offsets keep mm precision
    before the final cast.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    if r.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got shape {r.shape}")
    if t.shape != (3,):
        raise ValueError(f"translation must have 3 elements, got shape {t.shape}")
    return (p @ r.T + t).astype(np.float32)
