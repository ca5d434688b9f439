"""sensor_msgs Image/CompressedImage <-> numpy: every encoding, odd layouts, hostile input."""

from __future__ import annotations

import os

# Humble asserts field types on every assignment; Jazzy+ only with this set. It must be set
# before sensor_msgs is first imported; _assert_humble_ok() re-checks per message regardless.
os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1"

import array
import struct
import tracemalloc
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from stamp_ros.msgs.compressed import compressed_depth_to_array, compressed_msg_to_rgb
from stamp_ros.msgs.convert import (
    MAX_PIXELS,
    ImageConversionError,
    image_msg_to_array,
    image_msg_to_rgb,
)
from stamp_ros.ros.kit import mono8_to_image_msg, rgb_to_image_msg
from stamp_ros.testing.images import array_to_image_msg

H, W = 12, 16  # small and even: every encoding (4:2:0, Bayer) accepts it, tests stay fast


def _assert_humble_ok(msg: Image) -> None:
    """Re-assign every field into a message with field checks forced on, as Humble would."""
    strict = Image(check_fields=True)
    strict.header = msg.header
    strict.height = msg.height
    strict.width = msg.width
    strict.encoding = msg.encoding
    strict.is_bigendian = msg.is_bigendian
    strict.step = msg.step
    strict.data = msg.data
    assert type(msg.data) is array.array and msg.data.typecode == "B"


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _rgb(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _alpha(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 1), dtype=np.uint8)


def _stretch(a: np.ndarray) -> np.ndarray:
    """Reference min-max display stretch over finite values, written out independently."""
    f = a.astype(np.float64)
    ok = np.isfinite(f)
    lo, hi = f[ok].min(), f[ok].max()
    out = np.zeros(a.shape, dtype=np.uint8)
    out[ok] = np.clip(np.round((f[ok] - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    return out


def _gray3(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _scale16(a: np.ndarray) -> np.ndarray:
    return np.round(a.astype(np.float64) / 257.0).astype(np.uint8)


def _depth_mm(rng: np.random.Generator) -> np.ndarray:
    d = rng.integers(300, 6000, (H, W)).astype(np.uint16)
    d[0, :3] = 0  # invalid readings
    return d


def _depth_m(rng: np.random.Generator) -> np.ndarray:
    d = rng.uniform(0.3, 6.0, (H, W)).astype(np.float32)
    d[1, 1] = np.nan
    d[2, 5] = np.inf
    return d


def _bayer(pattern: str, rgb: np.ndarray) -> np.ndarray:
    """Sample an RGB image through a colour filter array named by its top-left 2x2 cell."""
    chan = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, chan[pattern[k]]]
    return mosaic


def _cv2_ref(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda raw: cv2.cvtColor(np.ascontiguousarray(raw), code)


def _bayer16_ref(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda raw: _scale16(cv2.cvtColor(np.ascontiguousarray(raw), code))


# encoding -> (make the raw array image_msg_to_array returns, expected RGB from that raw array)
CASES: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], Callable]] = {
    "rgb8": (_rgb, lambda a: a),
    "bgr8": (lambda r: _rgb(r)[..., ::-1].copy(), lambda a: a[..., ::-1]),
    "rgba8": (lambda r: np.concatenate([_rgb(r), _alpha(r)], 2), lambda a: a[..., :3]),
    "bgra8": (lambda r: np.concatenate([_rgb(r), _alpha(r)], 2), lambda a: a[..., 2::-1]),
    "rgb16": (lambda r: r.integers(0, 65536, (H, W, 3)).astype(np.uint16), _scale16),
    "bgr16": (
        lambda r: r.integers(0, 65536, (H, W, 3)).astype(np.uint16),
        lambda a: _scale16(a[..., ::-1]),
    ),
    "rgba16": (
        lambda r: r.integers(0, 65536, (H, W, 4)).astype(np.uint16),
        lambda a: _scale16(a[..., :3]),
    ),
    "bgra16": (
        lambda r: r.integers(0, 65536, (H, W, 4)).astype(np.uint16),
        lambda a: _scale16(a[..., 2::-1]),
    ),
    "mono8": (lambda r: _rgb(r)[..., 0].copy(), _gray3),
    "mono16": (
        lambda r: r.integers(0, 65536, (H, W)).astype(np.uint16),
        lambda a: _gray3(_scale16(a)),
    ),
    "8UC1": (lambda r: _rgb(r)[..., 0].copy(), _gray3),
    "8UC3": (_rgb, lambda a: a[..., ::-1]),  # OpenCV convention: BGR
    "8UC4": (lambda r: np.concatenate([_rgb(r), _alpha(r)], 2), lambda a: a[..., 2::-1]),
    "16UC1": (_depth_mm, lambda a: _gray3(_stretch(a))),
    "32FC1": (_depth_m, lambda a: _gray3(_stretch(a))),
    "64FC1": (lambda r: r.normal(0, 100, (H, W)), lambda a: _gray3(_stretch(a))),
    "16SC1": (
        lambda r: r.integers(-30000, 30000, (H, W)).astype(np.int16),
        lambda a: _gray3(_stretch(a)),
    ),
    "32SC1": (
        lambda r: r.integers(-(2**31), 2**31 - 1, (H, W)).astype(np.int32),
        lambda a: _gray3(_stretch(a)),
    ),
    "uyvy": (lambda r: _rgb(r)[..., :2].copy(), _cv2_ref(cv2.COLOR_YUV2RGB_UYVY)),
    "yuv422": (lambda r: _rgb(r)[..., :2].copy(), _cv2_ref(cv2.COLOR_YUV2RGB_UYVY)),
    "yuyv": (lambda r: _rgb(r)[..., :2].copy(), _cv2_ref(cv2.COLOR_YUV2RGB_YUY2)),
    "yuv422_yuy2": (lambda r: _rgb(r)[..., :2].copy(), _cv2_ref(cv2.COLOR_YUV2RGB_YUY2)),
    "nv12": (
        lambda r: r.integers(0, 256, (H * 3 // 2, W)).astype(np.uint8),
        _cv2_ref(cv2.COLOR_YUV2RGB_NV12),
    ),
    "nv21": (
        lambda r: r.integers(0, 256, (H * 3 // 2, W)).astype(np.uint8),
        _cv2_ref(cv2.COLOR_YUV2RGB_NV21),
    ),
}
for _p, _code in (
    ("rggb", cv2.COLOR_BayerRGGB2RGB),
    ("bggr", cv2.COLOR_BayerBGGR2RGB),
    ("gbrg", cv2.COLOR_BayerGBRG2RGB),
    ("grbg", cv2.COLOR_BayerGRBG2RGB),
):
    CASES[f"bayer_{_p}8"] = (
        lambda r, p=_p: _bayer(p, _rgb(r)),
        _cv2_ref(_code),
    )
    CASES[f"bayer_{_p}16"] = (
        lambda r, p=_p: _bayer(p, r.integers(0, 65536, (H, W, 3)).astype(np.uint16)),
        _bayer16_ref(_code),
    )

MULTIBYTE = [e for e, (make, _) in CASES.items() if make(_rng()).dtype.itemsize > 1]


def _row_bytes(raw: np.ndarray) -> int:
    return raw[0].nbytes


@pytest.mark.parametrize("encoding", sorted(CASES))
def test_round_trip_every_encoding(encoding: str) -> None:
    make, expected = CASES[encoding]
    raw = make(_rng())
    header = Header(frame_id="cam")
    msg = array_to_image_msg(raw, encoding, header)
    _assert_humble_ok(msg)
    assert msg.encoding == encoding and msg.step == _row_bytes(raw)
    assert (msg.height, msg.width) == (H, W)
    assert msg.header.frame_id == "cam"

    back = image_msg_to_array(msg)
    assert back.dtype == raw.dtype and back.shape == raw.shape
    np.testing.assert_array_equal(back, raw)

    rgb = image_msg_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected(raw))


@pytest.mark.parametrize("encoding", sorted(CASES))
def test_padded_step(encoding: str) -> None:
    """Rows padded by an odd byte count (unaligned rows); padding bytes must never leak."""
    make, expected = CASES[encoding]
    raw = make(_rng())
    step = _row_bytes(raw) + 5
    msg = array_to_image_msg(raw, encoding, step=step, pad_value=0xAB)
    _assert_humble_ok(msg)
    assert msg.step == step and len(msg.data) == step * raw.shape[0]
    np.testing.assert_array_equal(image_msg_to_array(msg), raw)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), expected(raw))


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("encoding", MULTIBYTE)
def test_big_endian(encoding: str, padded: bool) -> None:
    make, expected = CASES[encoding]
    raw = make(_rng())
    step = _row_bytes(raw) + (3 if padded else 0)
    msg = array_to_image_msg(raw, encoding, is_bigendian=True, step=step)
    _assert_humble_ok(msg)
    assert msg.is_bigendian == 1
    first = raw.reshape(-1)[:1].astype(raw.dtype.newbyteorder(">")).tobytes()
    assert bytes(msg.data[: len(first)]) == first  # really big-endian on the wire
    back = image_msg_to_array(msg)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, raw)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), expected(raw))


def test_depth_array_is_zero_copy_and_read_only() -> None:
    depth = _depth_mm(_rng())
    msg = array_to_image_msg(depth, "16UC1")
    view = image_msg_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, dtype=np.uint8))
    assert not view.flags.writeable
    padded = array_to_image_msg(depth, "16UC1", step=W * 2 + 6)
    assert np.shares_memory(image_msg_to_array(padded), np.frombuffer(padded.data, np.uint8))
    rgb_msg = array_to_image_msg(_rgb(_rng()), "rgb8")
    assert np.shares_memory(image_msg_to_rgb(rgb_msg), np.frombuffer(rgb_msg.data, np.uint8))


def test_32fc1_display_handles_nan_and_constant_images() -> None:
    d = np.full((H, W), np.nan, dtype=np.float32)
    assert not image_msg_to_rgb(array_to_image_msg(d, "32FC1")).any()
    d[:] = 2.5
    assert not image_msg_to_rgb(array_to_image_msg(d, "32FC1")).any()
    d[0, 0] = np.nan
    d[0, 1] = 5.0
    rgb = image_msg_to_rgb(array_to_image_msg(d, "32FC1"))
    assert rgb[0, 0, 0] == 0 and rgb[0, 1, 0] == 255 and rgb[5, 5, 0] == 0


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_pattern_names_match_ros(pattern: str, bits: int) -> None:
    """A flat colour seen through the named filter array must demosaic to that colour.

    Independent of OpenCV's naming, which is shifted by one pixel from ROS's for historical
    reasons.
    """
    color = np.array([200, 100, 30])
    dtype = np.uint8 if bits == 8 else np.uint16
    flat = np.broadcast_to(color * (1 if bits == 8 else 257), (H, W, 3)).astype(dtype)
    msg = array_to_image_msg(_bayer(pattern, flat), f"bayer_{pattern}{bits}")
    rgb = image_msg_to_rgb(msg)
    np.testing.assert_allclose(rgb[2:-2, 2:-2].reshape(-1, 3), np.broadcast_to(color, (
        (H - 4) * (W - 4), 3)), atol=1)


def _pack_422(y: np.ndarray, u: np.ndarray, v: np.ndarray, layout: str) -> np.ndarray:
    raw = np.empty((*y.shape, 2), dtype=np.uint8)
    raw[..., 1 if layout == "uyvy" else 0] = y
    chroma = raw[..., 0 if layout == "uyvy" else 1]
    chroma[:, 0::2] = u
    chroma[:, 1::2] = v
    return raw


def test_yuv_layouts_are_not_swapped() -> None:
    """The same Y/U/V content packed as UYVY, YUYV, NV12 and NV21 decodes to one picture."""
    rng = _rng()
    y = rng.integers(40, 220, (H, W)).astype(np.uint8)
    u = np.full((H, W // 2), 90, np.uint8)
    v = np.full((H, W // 2), 200, np.uint8)  # strongly red
    uyvy = image_msg_to_rgb(array_to_image_msg(_pack_422(y, u, v, "uyvy"), "uyvy"))
    yuyv = image_msg_to_rgb(array_to_image_msg(_pack_422(y, u, v, "yuyv"), "yuyv"))
    np.testing.assert_array_equal(uyvy, yuyv)
    assert (uyvy[..., 0].astype(int) > uyvy[..., 2]).mean() > 0.9

    uv = np.empty((H // 2, W // 2, 2), np.uint8)
    uv[..., 0], uv[..., 1] = 90, 200
    nv12 = np.concatenate([y, uv.reshape(H // 2, W)])
    nv21 = np.concatenate([y, uv[..., ::-1].reshape(H // 2, W)])
    a = image_msg_to_rgb(array_to_image_msg(nv12, "nv12"))
    b = image_msg_to_rgb(array_to_image_msg(nv21, "nv21"))
    np.testing.assert_array_equal(a, b)
    assert (a[..., 0].astype(int) > a[..., 2]).mean() > 0.9


def test_16bit_scaling_rounds_and_inverts_8_to_16_expansion() -> None:
    values = np.arange(256, dtype=np.uint16)[None, :]
    msg = array_to_image_msg(values * 257, "mono16")
    np.testing.assert_array_equal(image_msg_to_rgb(msg)[0, :, 0], np.arange(256))
    edge = np.array([[0, 128, 129, 385, 65535]], dtype=np.uint16)
    out = image_msg_to_rgb(array_to_image_msg(edge, "mono16"))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 255])


def test_hand_built_messages_with_bytes_or_lists() -> None:
    """Messages assembled by hand (not via rclpy) may carry bytes or a list as data."""
    rgb = _rgb(_rng(), 2, 3)
    for data in (rgb.tobytes(), list(rgb.tobytes()), bytearray(rgb.tobytes())):
        msg = Image(height=2, width=3, encoding="rgb8", step=9)
        msg.data = data
        np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)

    class Plain:  # duck-typed stand-in, as a deserialiser or a test double would produce
        height, width, encoding, step, is_bigendian = 2, 3, "rgb8", 9, 0
        data = [300] * 18

    with pytest.raises(ImageConversionError):
        image_msg_to_rgb(Plain())
    Plain.data = rgb.tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(Plain()), rgb)


def _msg(encoding: str = "rgb8", h: int = 4, w: int = 6, step: int | None = None,
         nbytes: int | None = None) -> Image:
    msg = Image(height=h, width=w, encoding=encoding, step=w * 3 if step is None else step)
    msg.data = array.array("B", bytes(msg.step * h if nbytes is None else nbytes))
    return msg


@pytest.mark.parametrize(
    "msg, match",
    [
        (_msg(nbytes=4 * 18 - 1), "needs"),
        (_msg(nbytes=0), "needs"),
        (_msg(h=0, nbytes=0), "height"),
        (_msg(w=0, step=0, nbytes=0), "width"),
        (_msg(encoding="foo"), "unsupported"),
        (_msg(encoding=""), "encoding"),
        (_msg(encoding="nv24"), "unsupported"),
        (_msg(encoding="8UC5"), "unsupported"),
        (_msg(encoding="32UC1"), "unsupported"),
        (_msg(step=17), "step"),
        (_msg(encoding="16UC1", step=11, nbytes=44), "step"),
        (_msg(encoding="uyvy", w=5, step=10), "even width"),
        (_msg(encoding="nv12", h=3, w=4, step=4, nbytes=24), "even"),
        (_msg(h=100_000, w=100_000, step=300_000, nbytes=10), "limit"),
        (_msg(h=2**32 - 1, w=2**32 - 1, step=2**32 - 1, nbytes=10), "limit"),
    ],
    ids=[
        "short-by-one", "empty-data", "zero-height", "zero-width", "unknown", "empty-encoding",
        "nv24", "8UC5", "32UC1", "step-too-small", "step-too-small-16bit", "uyvy-odd-width",
        "nv12-odd-height", "huge-declared", "huge-declared-uint32-max",
    ],
)
def test_malformed_images_raise(msg: Image, match: str) -> None:
    with pytest.raises(ImageConversionError, match=match):
        image_msg_to_rgb(msg)
    with pytest.raises(ImageConversionError, match=match):
        image_msg_to_array(msg)


def test_large_declared_size_with_tiny_data_allocates_nothing() -> None:
    """Under the pixel limit (80 MP) but with 10 bytes of data: refuse before allocating."""
    msg = _msg(h=4000, w=20000, step=60000, nbytes=10)
    assert MAX_PIXELS >= 4000 * 20000
    tracemalloc.start()
    try:
        with pytest.raises(ImageConversionError, match="needs"):
            image_msg_to_rgb(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_max_pixels_is_configurable_and_error_is_a_value_error() -> None:
    msg = array_to_image_msg(_rgb(_rng()), "rgb8")
    with pytest.raises(ValueError, match="limit"):
        image_msg_to_rgb(msg, max_pixels=H * W - 1)
    assert image_msg_to_rgb(msg, max_pixels=H * W).shape == (H, W, 3)


def test_two_channel_generic_has_no_rgb_but_a_raw_array() -> None:
    raw = np.zeros((H, W, 2), np.float32)
    msg = array_to_image_msg(raw, "32FC2")
    assert image_msg_to_array(msg).shape == (H, W, 2)
    with pytest.raises(ImageConversionError, match="channels"):
        image_msg_to_rgb(msg)


# --------------------------------------------------------------------------------- builders


def test_rgb_to_image_msg_builds_humble_safe_messages() -> None:
    rgb = _rgb(_rng())
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 42
    msg = rgb_to_image_msg(rgb, header)
    _assert_humble_ok(msg)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("rgb8", W * 3, 0)
    assert msg.header.stamp.sec == 42 and msg.header.frame_id == "camera_optical"
    assert bytes(msg.data) == rgb.tobytes()

    bgr = rgb_to_image_msg(rgb[:, ::-1], None, encoding="bgr8")  # non-contiguous input
    _assert_humble_ok(bgr)
    assert bgr.encoding == "bgr8"
    np.testing.assert_array_equal(image_msg_to_rgb(bgr), rgb[:, ::-1])

    for bad in (rgb.astype(np.float32), rgb[..., 0], np.zeros((H, W, 4), np.uint8)):
        with pytest.raises(ValueError):
            rgb_to_image_msg(bad, header)
    with pytest.raises(ValueError):
        rgb_to_image_msg(rgb, header, encoding="rgba8")


def test_mono8_to_image_msg() -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[2:5, 3:9] = 255
    msg = mono8_to_image_msg(mask, Header(frame_id="cam"))
    _assert_humble_ok(msg)
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("mono8", W, H, W)
    np.testing.assert_array_equal(image_msg_to_array(msg), mask)
    np.testing.assert_array_equal(image_msg_to_array(mono8_to_image_msg(mask > 0, None)), mask)
    with pytest.raises(ValueError):
        mono8_to_image_msg(mask.astype(np.float32), None)
    with pytest.raises(ValueError):
        mono8_to_image_msg(np.zeros((H, W, 3), np.uint8), None)


def test_array_to_image_msg_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((H, W), np.uint8), "16UC1")
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((H, W, 3), np.uint8), "rgba8")
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((H, W, 3), np.uint8), "rgb8", step=W * 3 - 1)
    with pytest.raises(ValueError):
        array_to_image_msg(np.zeros((H + 1, W), np.uint8), "nv12")
    with pytest.raises(ImageConversionError):
        array_to_image_msg(np.zeros((H, W), np.uint8), "bogus")


# ------------------------------------------------------------------------------- compressed


def _smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], 2).astype(np.uint8)


def _compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    return msg


def _encode(ext: str, img: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "fmt", ["rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", "jpeg"]
)
def test_jpeg_round_trip(fmt: str) -> None:
    rgb = _smooth_rgb()
    data = _encode(".jpg", rgb[..., ::-1], cv2.IMWRITE_JPEG_QUALITY, 95)
    out = compressed_msg_to_rgb(_compressed(data, fmt))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3  # colours not swapped, only JPEG loss


def test_png_round_trips_are_exact() -> None:
    rgb = _smooth_rgb()
    out = compressed_msg_to_rgb(_compressed(_encode(".png", rgb[..., ::-1]), "png"))
    np.testing.assert_array_equal(out, rgb)
    gray = rgb[..., 0].copy()
    out = compressed_msg_to_rgb(_compressed(_encode(".png", gray), "mono8; png compressed mono8"))
    np.testing.assert_array_equal(out, _gray3(gray))
    g16 = gray.astype(np.uint16) * 257
    out = compressed_msg_to_rgb(_compressed(_encode(".png", g16), "mono16; png compressed mono16"))
    np.testing.assert_array_equal(out, _gray3(gray))
    bgra = np.concatenate([rgb[..., ::-1], np.full((*rgb.shape[:2], 1), 7, np.uint8)], 2)
    out = compressed_msg_to_rgb(_compressed(_encode(".png", bgra), "bgra8; png compressed bgra8"))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        b"\xff\xd8\xff" + bytes(200),
        b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(40),
        b"\x89PNG\r\n\x1a\n" + bytes(8),
    ],
    ids=["empty", "text", "random", "jpeg-magic-zeros", "jpeg-no-sof", "png-no-ihdr"],
)
def test_garbage_compressed_data_raises(data: bytes) -> None:
    with pytest.raises(ImageConversionError):
        compressed_msg_to_rgb(_compressed(data, "jpeg"))


def test_truncated_compressed_data_raises() -> None:
    png = _encode(".png", _smooth_rgb())
    with pytest.raises(ImageConversionError):
        compressed_msg_to_rgb(_compressed(png[: len(png) // 2], "png"))
    jpg = _encode(".jpg", _smooth_rgb())
    with pytest.raises(ImageConversionError):
        compressed_msg_to_rgb(_compressed(jpg[:100], "jpeg"))


def test_jpeg_with_large_metadata_before_the_frame_header() -> None:
    """EXIF thumbnails and ICC profiles can push the SOF marker well past 64 KB."""
    rgb = _smooth_rgb()
    jpg = _encode(".jpg", rgb[..., ::-1], cv2.IMWRITE_JPEG_QUALITY, 95)
    app = b"\xff\xe9" + struct.pack(">H", 65000) + bytes(64998)
    padded = jpg[:2] + app * 3 + jpg[2:]
    out = compressed_msg_to_rgb(_compressed(padded, "jpeg"))
    assert np.abs(out.astype(int) - rgb).mean() < 3


def test_decompression_bombs_are_refused_from_the_header() -> None:
    png = bytearray(_encode(".png", _smooth_rgb()))
    png[16:24] = struct.pack(">II", 100_000, 100_000)
    with pytest.raises(ImageConversionError, match="limit"):
        compressed_msg_to_rgb(_compressed(bytes(png), "png"))

    jpg = bytearray(_encode(".jpg", _smooth_rgb()))
    sof = next(i for i in range(2, len(jpg) - 1) if jpg[i] == 0xFF and jpg[i + 1] == 0xC0)
    jpg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageConversionError, match="limit"):
            compressed_msg_to_rgb(_compressed(bytes(jpg), "jpeg"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000

    small = _compressed(_encode(".png", _smooth_rgb()), "png")
    with pytest.raises(ImageConversionError, match="limit"):
        compressed_msg_to_rgb(small, max_pixels=48 * 64 - 1)


def test_compressed_depth_16uc1_with_and_without_header() -> None:
    depth = _depth_mm(_rng())
    png = _encode(".png", depth)
    with_header = struct.pack("<iff", 0, 0.0, 0.0) + png
    out = compressed_depth_to_array(_compressed(with_header, "16UC1; compressedDepth png"))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)
    np.testing.assert_array_equal(
        compressed_depth_to_array(_compressed(png, "16UC1; compressedDepth")), depth
    )
    with pytest.raises(ImageConversionError, match="compressed_depth_to_array"):
        compressed_msg_to_rgb(_compressed(with_header, "16UC1; compressedDepth png"))


def test_compressed_depth_32fc1_inverse_depth_quantisation() -> None:
    """compressed_depth_image_transport stores 32FC1 as A / depth + B in a 16-bit PNG."""
    depth = np.linspace(0.5, 8.0, H * W, dtype=np.float32).reshape(H, W)
    depth[0, 0] = np.nan
    quantisation, depth_max = 100.0, 10.0
    qa = np.float32(quantisation * (quantisation + 1.0))
    qb = np.float32(1.0 - qa / depth_max)
    inv = np.zeros((H, W), np.uint16)
    ok = np.isfinite(depth)
    inv[ok] = np.round(qa / depth[ok] + qb).astype(np.uint16)
    data = struct.pack("<iff", 0, qa, qb) + _encode(".png", inv)
    out = compressed_depth_to_array(_compressed(data, "32FC1; compressedDepth png"))
    assert out.dtype == np.float32 and np.isnan(out[0, 0])
    rel = np.abs(out[ok] - depth[ok]) / depth[ok]
    assert rel.max() < 0.01


@pytest.mark.parametrize(
    "data, fmt",
    [
        (b"garbage", "16UC1; compressedDepth png"),
        (bytes(12) + b"garbage", "16UC1; compressedDepth png"),
        (struct.pack("<iff", 0, 0, 0) + b"\x89PNG\r\n\x1a\n", "16UC1; compressedDepth png"),
        (b"", "32FC1; compressedDepth png"),
        (bytes(100), "16UC1; compressedDepth rvl"),
        (bytes(100), "mono8; compressedDepth png"),
    ],
    ids=["garbage", "header-garbage", "header-png-magic-only", "empty", "rvl", "bad-encoding"],
)
def test_compressed_depth_garbage_raises(data: bytes, fmt: str) -> None:
    with pytest.raises(ImageConversionError):
        compressed_depth_to_array(_compressed(data, fmt))


def test_compressed_depth_rejects_color_png_and_zero_quantisation() -> None:
    color = struct.pack("<iff", 0, 0, 0) + _encode(".png", _smooth_rgb())
    with pytest.raises(ImageConversionError, match="16-bit"):
        compressed_depth_to_array(_compressed(color, "16UC1; compressedDepth png"))
    inv = struct.pack("<iff", 0, 0, 0) + _encode(".png", _depth_mm(_rng()))
    with pytest.raises(ImageConversionError, match="quantisation"):
        compressed_depth_to_array(_compressed(inv, "32FC1; compressedDepth png"))
