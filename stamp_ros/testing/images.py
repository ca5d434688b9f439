"""Synthetic inputs for tests, benchmarks and the demo's offline fallback.

``sample_image`` is the picture the generated checkpoints are calibrated on and every engine test
and benchmark feeds the model; ``array_to_image_msg`` writes any encoding and byte layout a camera
or a bag from another machine may send (padded rows, big-endian), so each reader path of
:mod:`stamp_ros.msgs.convert` can be exercised. Neither belongs in the node: a node only reads
such messages, and builds its own outputs with ``rgb_to_image_msg`` / ``mono8_to_image_msg``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["array_to_image_msg", "sample_image"]


def sample_image(seed: int, h: int = 84, w: int = 112) -> np.ndarray:
    """A smooth random picture: blobs give the vision tower spatial structure to react to."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 30)
        color = rng.uniform(0, 255, 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + color * blob
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def array_to_image_msg(
    arr: np.ndarray,
    encoding: str,
    header: Any = None,
    *,
    is_bigendian: bool = False,
    step: int | None = None,
    pad_value: int = 0,
) -> Any:
    """A raw array as a ``sensor_msgs/Image`` of any supported encoding.

    The inverse of :func:`stamp_ros.msgs.convert.image_msg_to_array`: ``arr`` has the layout that
    function returns ((H, W) or (H, W, C) of the encoding's dtype, (H, W, 2) uint8 for packed
    YUV 4:2:2, (1.5*H, W) uint8 for NV12/NV21). ``is_bigendian`` and a ``step`` larger than the
    row size produce the byte layouts other machines send, so every reader path can be tested;
    padding bytes get ``pad_value`` so a reader that leaks them is caught.
    """
    from stamp_ros.msgs.convert import encoding_layout
    from stamp_ros.ros.kit import build_image_msg

    dtype, channels, kind = encoding_layout(encoding)
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1 and channels == 1:
        a = a[..., 0]
    expected_ndim = 2 if channels == 1 else 3
    if a.ndim != expected_ndim or (channels > 1 and a.shape[2] != channels):
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"{encoding} needs an array of shape {want}, got {a.shape}")
    if a.dtype.kind != dtype.kind or a.dtype.itemsize != dtype.itemsize:
        raise ValueError(f"{encoding} needs dtype {dtype.name}, got {a.dtype}")
    rows, width = a.shape[:2]
    height = rows
    if kind in ("nv12", "nv21"):
        if rows % 3:
            raise ValueError(f"{encoding} needs 1.5*H rows (a multiple of 3), got {rows}")
        height = rows * 2 // 3
    if kind in ("uyvy", "yuyv", "nv12", "nv21") and width % 2:
        raise ValueError(f"{encoding} needs an even width, got {width}")
    big = bool(is_bigendian) and dtype.itemsize > 1
    out_dtype = dtype.newbyteorder(">" if big else "<")
    row_bytes = width * channels * dtype.itemsize
    if step is None:
        step = row_bytes
    if step < row_bytes:
        raise ValueError(f"step {step} is smaller than the row size {row_bytes}")
    packed = np.ascontiguousarray(a, dtype=out_dtype).reshape(rows, -1).view(np.uint8)
    if step != row_bytes:
        padded = np.full((rows, step), pad_value, dtype=np.uint8)
        padded[:, :row_bytes] = packed
        packed = padded
    return build_image_msg(header, height, width, encoding, step, big, packed.reshape(-1))
