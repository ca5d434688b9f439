"""Geometry against synthetic depth scenes whose answer is known in closed form.

The scene: a 160x120 camera (f = 100 px), a far wall at 5 m and an object at 2 m. The
expected numbers come from the pinhole model written out here, not from the code under
test, so a wrong sign, a half-pixel shift or a leaking background shows up as a number.
"""

from __future__ import annotations

import numpy as np
import pytest

from stamp_ros.spatial.geometry import (
    MIN_POINTS,
    CameraIntrinsics,
    depth_to_metres,
    mask_points,
    quaternion_to_matrix,
    summarise_points,
    transform_points,
)

W, H = 160, 120
F, CX, CY = 100.0, 79.5, 59.5
Z_OBJ, Z_BG = 2.0, 5.0
ROWS = (40, 79)  # inclusive pixel range of the object
COLS = (20, 79)


@pytest.fixture
def intr() -> CameraIntrinsics:
    return CameraIntrinsics(fx=F, fy=F, cx=CX, cy=CY, width=W, height=H)


def box_scene(z_obj: float = Z_OBJ) -> tuple[np.ndarray, np.ndarray]:
    """Depth (metres) with a fronto-parallel rectangle, and the exact mask of it."""
    depth = np.full((H, W), Z_BG, dtype=np.float32)
    mask = np.zeros((H, W), dtype=np.uint8)
    depth[ROWS[0] : ROWS[1] + 1, COLS[0] : COLS[1] + 1] = z_obj
    mask[ROWS[0] : ROWS[1] + 1, COLS[0] : COLS[1] + 1] = 1
    return depth, mask


def expected_rect(rows, cols, z, fx=F, fy=F, cx=CX, cy=CY):
    """Centroid, min, max of a fronto-parallel pixel rectangle at depth z."""
    us = np.arange(cols[0], cols[1] + 1, dtype=np.float64)
    vs = np.arange(rows[0], rows[1] + 1, dtype=np.float64)
    xs, ys = (us - cx) * z / fx, (vs - cy) * z / fy
    centroid = np.array([xs.mean(), ys.mean(), z])
    return centroid, np.array([xs.min(), ys.min(), z]), np.array([xs.max(), ys.max(), z])


# --- intrinsics ---------------------------------------------------------------------------


def test_from_k_accepts_flat_and_matrix():
    k = [F, 0.0, CX, 0.0, 90.0, CY, 0.0, 0.0, 1.0]
    a = CameraIntrinsics.from_k(k, W, H)
    b = CameraIntrinsics.from_k(np.array(k).reshape(3, 3), W, H)
    assert a == b == CameraIntrinsics(F, 90.0, CX, CY, W, H)


@pytest.mark.parametrize("k", [[0.0] * 9, [F, 0, CX, 0, F, CY, 0, 0]])
def test_from_k_rejects_unset_or_malformed(k):
    with pytest.raises(ValueError):
        CameraIntrinsics.from_k(k, W, H)


def test_scaled_to_maps_pixel_centres(intr):
    half = intr.scaled_to(W // 2, H // 2)
    assert (half.fx, half.fy, half.width, half.height) == (50.0, 50.0, 80, 60)
    assert half.cx == pytest.approx((CX + 0.5) / 2 - 0.5)
    assert half.cy == pytest.approx((CY + 0.5) / 2 - 0.5)
    # A 3D point seen at full-res pixel (u, v) lands at the resized pixel covering it.
    p = np.array([[0.3, -0.2, 1.7], [-1.0, 0.5, 4.0]])
    uv_full = intr.project(p)
    uv_half = half.project(p)
    np.testing.assert_allclose(uv_half, (uv_full + 0.5) / 2 - 0.5, atol=1e-9)
    assert intr.scaled_to(W, H) is intr
    # Round trip back to the original size is exact.
    back = half.scaled_to(W, H)
    assert back.cx == pytest.approx(CX) and back.fx == pytest.approx(F)


# --- depth conversion ---------------------------------------------------------------------


def test_depth_to_metres_uint16_mm_and_invalid():
    raw = np.array([[0, 1000, 2500], [65535, 1, 0]], dtype=np.uint16)
    d = depth_to_metres(raw)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d[0, 1:], [1.0, 2.5])
    assert np.isnan(d[0, 0]) and np.isnan(d[1, 2])
    np.testing.assert_allclose(depth_to_metres(raw, 0.00025)[0, 1], 0.25)


def test_depth_to_metres_float_is_metres_and_scale_ignored():
    raw = np.array([[1.5, 0.0, np.nan, np.inf, -np.inf, -1.0]], dtype=np.float32)
    for scale in (None, 0.001):
        d = depth_to_metres(raw, scale)
        assert d[0, 0] == np.float32(1.5)
        assert np.isnan(d[0, 1:]).all()
    assert not np.isnan(raw[0, 1])  # input untouched


# --- mask -> points -----------------------------------------------------------------------


def test_fronto_parallel_box_exact(intr):
    depth, mask = box_scene()
    pts = mask_points(mask, depth, intr, erode_px=2)
    assert pts.dtype == np.float32 and pts.shape[1] == 3
    obj = summarise_points(pts)
    assert obj is not None
    rows, cols = (ROWS[0] + 2, ROWS[1] - 2), (COLS[0] + 2, COLS[1] - 2)
    c, lo, hi = expected_rect(rows, cols, Z_OBJ)
    assert obj.n_points == (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1)
    np.testing.assert_allclose(obj.centroid, c, atol=1e-5)
    np.testing.assert_allclose(obj.box_min, lo, atol=1e-5)
    np.testing.assert_allclose(obj.box_max, hi, atol=1e-5)
    np.testing.assert_allclose(obj.size, hi - lo, atol=1e-5)
    np.testing.assert_allclose(obj.box_center, (lo + hi) / 2, atol=1e-5)


def test_no_erosion_recovers_full_extent(intr):
    depth, mask = box_scene()
    obj = summarise_points(mask_points(mask, depth, intr, erode_px=0))
    c, lo, hi = expected_rect(ROWS, COLS, Z_OBJ)
    assert obj.n_points == 40 * 60
    np.testing.assert_allclose(obj.centroid, c, atol=1e-5)
    np.testing.assert_allclose([obj.box_min, obj.box_max], [lo, hi], atol=1e-5)


def test_mask_dtype_bool_or_255(intr):
    depth, mask = box_scene()
    a = mask_points(mask, depth, intr)
    np.testing.assert_array_equal(a, mask_points(mask.astype(bool), depth, intr))
    np.testing.assert_array_equal(a, mask_points(mask * 255, depth, intr))


def test_depth_holes_inside_mask_are_skipped(intr):
    depth, mask = box_scene()
    raw = np.round(depth * 1000).astype(np.uint16)  # 16UC1 millimetres
    rng = np.random.default_rng(0)
    r = rng.integers(ROWS[0] + 3, ROWS[1] - 2, 60)
    c = rng.integers(COLS[0] + 3, COLS[1] - 2, 60)
    raw[r, c] = 0
    d = depth_to_metres(raw)
    # Float-side holes too: NaN and inf, as 32FC1 drivers emit them.
    d[50, 40], d[51, 41] = np.nan, np.inf
    n_holes = len(set(zip(r.tolist(), c.tolist(), strict=True))) + 2
    obj = summarise_points(mask_points(mask, d, intr, erode_px=2))
    assert obj.n_points == 36 * 56 - n_holes
    _, lo, hi = expected_rect((ROWS[0] + 2, ROWS[1] - 2), (COLS[0] + 2, COLS[1] - 2), Z_OBJ)
    np.testing.assert_allclose([obj.box_min, obj.box_max], [lo, hi], atol=1e-5)
    assert np.all(np.isfinite(obj.centroid))
    assert obj.centroid[2] == pytest.approx(Z_OBJ, abs=1e-6)


def dilated_mask(px: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[ROWS[0] - px : ROWS[1] + 1 + px, COLS[0] - px : COLS[1] + 1 + px] = 1
    return mask


def test_edge_bleeding_is_real_without_defences(intr):
    """Guards the two tests below: the bled mask does reach the 5 m wall."""
    depth, _ = box_scene()
    pts = mask_points(dilated_mask(3), depth, intr, erode_px=0, outlier_mad=None)
    assert pts[:, 2].max() == pytest.approx(Z_BG)


def test_edge_bleeding_removed_by_outlier_rejection(intr):
    depth, _ = box_scene()
    obj = summarise_points(mask_points(dilated_mask(3), depth, intr, erode_px=0))
    c, lo, hi = expected_rect(ROWS, COLS, Z_OBJ)
    assert obj.n_points == 40 * 60
    np.testing.assert_allclose([obj.box_min, obj.box_max], [lo, hi], atol=1e-5)
    np.testing.assert_allclose(obj.centroid, c, atol=1e-5)


def test_edge_bleeding_removed_by_erosion(intr):
    depth, _ = box_scene()
    obj = summarise_points(
        mask_points(dilated_mask(3), depth, intr, erode_px=3, outlier_mad=None)
    )
    _, lo, hi = expected_rect(ROWS, COLS, Z_OBJ)
    np.testing.assert_allclose([obj.box_min, obj.box_max], [lo, hi], atol=1e-5)


def test_background_leaking_through_interior_is_rejected(intr):
    depth, mask = box_scene()
    rng = np.random.default_rng(1)
    leak = (rng.random((H, W)) < 0.15) & (mask > 0)
    depth[leak] = Z_BG + rng.normal(0, 0.02, int(leak.sum())).astype(np.float32)
    # Sensor noise on the object itself must survive.
    noisy = (mask > 0) & ~leak
    depth[noisy] += rng.normal(0, 0.005, int(noisy.sum())).astype(np.float32)
    pts = mask_points(mask, depth, intr, erode_px=0)
    assert pts[:, 2].max() < Z_OBJ + 0.05
    assert len(pts) == int(noisy.sum())


def test_flat_quantised_surface_keeps_millimetre_steps(intr):
    """MAD of a flat 16UC1 surface is 0; the floor keeps its +-1 mm pixels."""
    depth, mask = box_scene()
    raw = np.round(depth * 1000).astype(np.uint16)
    raw[ROWS[0] : ROWS[1] + 1 : 4, COLS[0] : COLS[1] + 1] += 1
    pts = mask_points(mask, depth_to_metres(raw), intr, erode_px=0)
    assert len(pts) == 40 * 60


def test_tilted_plane_known_extent(intr):
    # Plane z = z0 + k*y (leaning away toward the bottom of the image). Along a pixel row
    # y = (v - cy) z / f, so z = z0 / (1 - k (v - cy) / f): a known depth gradient.
    z0, k = 2.0, 0.5
    v = np.arange(H, dtype=np.float64)[:, None]
    depth = np.broadcast_to(z0 / (1 - k * (v - CY) / F), (H, W)).astype(np.float32)
    mask = np.zeros((H, W), dtype=np.uint8)
    rows, cols = (30, 89), (40, 119)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 1
    pts = mask_points(mask, depth, intr, erode_px=0)
    assert len(pts) == 60 * 80  # the spread is geometry, not outliers
    obj = summarise_points(pts)

    z_top = z0 / (1 - k * (rows[0] - CY) / F)
    z_bot = z0 / (1 - k * (rows[1] - CY) / F)
    y_top = (rows[0] - CY) * z_top / F
    y_bot = (rows[1] - CY) * z_bot / F
    x_min = (cols[0] - CX) * z_bot / F  # widest at the far (bottom) edge
    x_max = (cols[1] - CX) * z_bot / F
    np.testing.assert_allclose(obj.box_min, [x_min, y_top, z_top], atol=1e-5)
    np.testing.assert_allclose(obj.box_max, [x_max, y_bot, z_bot], atol=1e-5)
    np.testing.assert_allclose(obj.size, [x_max - x_min, y_bot - y_top, z_bot - z_top], atol=1e-5)
    # Every point lies on the plane.
    np.testing.assert_allclose(pts[:, 2] - k * pts[:, 1], z0, atol=1e-5)


def test_mask_at_colour_resolution_depth_at_half(intr):
    # Depth at 80x60 with the object on the matching half-res pixels; mask and
    # intrinsics at full 160x120 resolution.
    dh, dw = H // 2, W // 2
    depth = np.full((dh, dw), Z_BG, dtype=np.float32)
    depth[ROWS[0] // 2 : (ROWS[1] + 1) // 2, COLS[0] // 2 : (COLS[1] + 1) // 2] = Z_OBJ
    _, mask = box_scene()
    pts = mask_points(mask, depth, intr, erode_px=0)
    obj = summarise_points(pts)
    half = intr.scaled_to(dw, dh)
    c, lo, hi = expected_rect(
        (ROWS[0] // 2, ROWS[1] // 2), (COLS[0] // 2, COLS[1] // 2), Z_OBJ,
        fx=half.fx, fy=half.fy, cx=half.cx, cy=half.cy,
    )
    assert obj.n_points == 20 * 30
    np.testing.assert_allclose([obj.centroid, obj.box_min, obj.box_max], [c, lo, hi], atol=1e-5)
    # Same object as seen at full resolution, to within one full-res pixel at 2 m.
    c_full, lo_full, hi_full = expected_rect(ROWS, COLS, Z_OBJ)
    np.testing.assert_allclose(obj.centroid, c_full, atol=1e-6 + Z_OBJ / F)
    np.testing.assert_allclose([obj.box_min, obj.box_max], [lo_full, hi_full], atol=Z_OBJ / F)
    # Passing intrinsics already scaled gives the identical answer.
    np.testing.assert_array_equal(pts, mask_points(mask, depth, half, erode_px=0))


def test_mask_smaller_than_depth(intr):
    depth, _ = box_scene()
    small = np.zeros((H // 2, W // 2), dtype=np.uint8)
    small[ROWS[0] // 2 : (ROWS[1] + 1) // 2, COLS[0] // 2 : (COLS[1] + 1) // 2] = 1
    obj = summarise_points(mask_points(small, depth, intr, erode_px=0))
    c, lo, hi = expected_rect(ROWS, COLS, Z_OBJ)
    np.testing.assert_allclose([obj.centroid, obj.box_min, obj.box_max], [c, lo, hi], atol=1e-5)


def test_depth_range_limits(intr):
    depth, mask = box_scene(z_obj=12.0)
    assert len(mask_points(mask, depth, intr)) == 0
    assert len(mask_points(mask, depth, intr, max_depth=20.0)) > 0
    depth, mask = box_scene(z_obj=0.05)
    assert len(mask_points(mask, depth, intr)) == 0


def test_thin_object_survives_erosion(intr):
    depth = np.full((H, W), Z_BG, dtype=np.float32)
    mask = np.zeros((H, W), dtype=np.uint8)
    depth[20:100, 60:63] = 1.0  # a 3-px-wide pen
    mask[20:100, 60:63] = 1
    obj = summarise_points(mask_points(mask, depth, intr, erode_px=2))
    assert obj is not None
    assert obj.centroid[2] == pytest.approx(1.0)


def test_max_points_is_deterministic_subset(intr):
    depth, mask = box_scene()
    full = mask_points(mask, depth, intr)
    a = mask_points(mask, depth, intr, max_points=100)
    b = mask_points(mask, depth, intr, max_points=100)
    assert a.shape == (100, 3)
    np.testing.assert_array_equal(a, b)
    assert {tuple(p) for p in a.tolist()} <= {tuple(p) for p in full.tolist()}
    # Evenly spread: the subset spans (nearly) the whole object.
    assert np.ptp(a[:, 1]) > 0.9 * np.ptp(full[:, 1])
    assert len(mask_points(mask, depth, intr, max_points=0)) == 0
    np.testing.assert_array_equal(mask_points(mask, depth, intr, max_points=10**6), full)


def test_max_pixels_samples_a_grid_of_the_image(intr):
    """A tracked frame's lift (max_pixels): every step-th row and column of the image, so the
    cost is bounded and the summary stays that of the whole object; the points are a subset
    of the full lift's, the same on every call."""
    z0, k = 2.0, 0.5  # a tilted plane: every pixel at its own depth
    v = np.arange(H, dtype=np.float64)[:, None]
    depth = np.broadcast_to(z0 / (1 - k * (v - CY) / F), (H, W)).astype(np.float32)
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[30:90, 40:120] = 1  # 4800 pixels
    full = mask_points(mask, depth, intr, erode_px=0)
    a = mask_points(mask, depth, intr, erode_px=0, max_pixels=1000)
    assert len(a) == 20 * 26  # step 3: rows 30, 33, ..., 87 and columns 42, 45, ..., 117
    np.testing.assert_array_equal(a, mask_points(mask, depth, intr, erode_px=0,
                                                 max_pixels=1000))
    assert {tuple(p) for p in a.tolist()} <= {tuple(p) for p in full.tolist()}
    np.testing.assert_array_equal(np.unique(np.round(a[:, 0] * F / a[:, 2] + CX) % 3), [0])
    whole, sampled = summarise_points(full), summarise_points(a)
    step_m = 3 * sampled.centroid[2] / F  # a step's footprint at the object
    assert np.abs(sampled.centroid - whole.centroid).max() <= step_m
    assert np.abs(sampled.box_min - whole.box_min).max() <= step_m
    assert np.abs(sampled.box_max - whole.box_max).max() <= step_m
    np.testing.assert_array_equal(mask_points(mask, depth, intr, erode_px=0,
                                              max_pixels=4800), full)


def test_empty_mask_gives_none(intr):
    depth, _ = box_scene()
    pts = mask_points(np.zeros((H, W), np.uint8), depth, intr)
    assert pts.shape == (0, 3) and pts.dtype == np.float32
    assert summarise_points(pts) is None


def test_all_invalid_depth_gives_none(intr):
    _, mask = box_scene()
    for raw in (np.zeros((H, W), np.uint16), np.full((H, W), np.nan, np.float32)):
        pts = mask_points(mask, depth_to_metres(raw), intr)
        assert pts.shape == (0, 3)
        assert summarise_points(pts) is None


def test_too_few_points_gives_none():
    pts = np.ones((MIN_POINTS - 1, 3), np.float32)
    assert summarise_points(pts) is None
    with_nan = np.vstack([pts, [[np.nan, 0, 1]]])
    assert summarise_points(with_nan) is None
    assert summarise_points(np.vstack([pts, [[1, 1, 1]]])).n_points == MIN_POINTS


def test_bad_shapes_raise(intr):
    depth, mask = box_scene()
    with pytest.raises(ValueError):
        mask_points(mask[None], depth, intr)
    with pytest.raises(ValueError):
        mask_points(mask, depth[None], intr)


# --- transforms ---------------------------------------------------------------------------


def test_quaternion_to_matrix_known_rotations():
    np.testing.assert_allclose(quaternion_to_matrix((0, 0, 0, 1)), np.eye(3))
    s = np.sqrt(0.5)
    rz = quaternion_to_matrix((0, 0, s, s))  # +90 deg about z
    np.testing.assert_allclose(rz @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # Not normalised (as after a float32 round trip): same rotation, no scaling.
    np.testing.assert_allclose(quaternion_to_matrix((0, 0, 3.0, 3.0)), rz, atol=1e-12)
    q = np.random.default_rng(2).normal(size=4)
    r = quaternion_to_matrix(q)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        quaternion_to_matrix((0, 0, 0, 0))


def test_transform_points_rotation_then_translation():
    s = np.sqrt(0.5)
    # Optical frame -> a body frame (x forward, y left, z up): the standard REP 103 turn.
    r = quaternion_to_matrix((-0.5, 0.5, -0.5, 0.5))
    out = transform_points(np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]), r, [0.1, 0.0, 1.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[2.1, 0.0, 1.0], [0.1, -1.0, 1.0]], atol=1e-6)
    rz = quaternion_to_matrix((0, 0, s, s))
    np.testing.assert_allclose(transform_points([[1, 0, 0]], rz, np.zeros(3)), [[0, 1, 0]],
                               atol=1e-7)
    assert transform_points(np.empty((0, 3)), np.eye(3), np.zeros(3)).shape == (0, 3)
    with pytest.raises(ValueError):
        transform_points(np.zeros((1, 3)), np.eye(4), np.zeros(3))
