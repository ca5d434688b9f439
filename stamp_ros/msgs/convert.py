"""sensor_msgs ``Image`` -> numpy, for every common encoding (and the layout of each encoding).

There is no usable cv_bridge for ROS 2 on PyPI (the ``cv-bridge`` wheel is a ROS 1 port that
breaks on NumPy 2 and OpenCV 5 and silently mangles 16UC1), so the node converts images itself.

Design rules, each one learnt from a way image callbacks go wrong on robots:

* Messages come from the network and may be malformed. Every declared size is checked against
  the payload *before* anything is allocated from it, and every failure is an
  :class:`ImageConversionError` (a ``ValueError``) that the node turns into a logged error,
  never an unhandled exception or a multi-gigabyte allocation.
* ``step`` and ``is_bigendian`` are honoured: padded rows come from GPU/ISP drivers, big-endian
  data from some industrial cameras and from rosbag files recorded on other machines.
* Incoming data is read through strided numpy *views* of ``msg.data`` (no copy) and copied only
  when a conversion has to produce new pixels anyway.

The other direction (numpy -> rclpy ``Image``) builds rclpy messages, so it lives with the node:
:mod:`stamp_ros.ros.kit`.
"""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np

__all__ = [
    "MAX_PIXELS",
    "ImageConversionError",
    "as_uint8_buffer",
    "encoding_layout",
    "image_msg_to_array",
    "image_msg_to_rgb",
    "scale16_to_8",
]

MAX_PIXELS = 100_000_000
"""Largest width*height accepted (100 MP). No robot camera comes close; anything above is a
corrupt or hostile header, and refusing it early keeps one bad message from exhausting memory."""


class ImageConversionError(ValueError):
    """A message that cannot be turned into pixels (malformed, unsupported or undecodable).

    A ``ValueError`` so that generic input-validation handlers catch it too.
    """


# ---------------------------------------------------------------------------------------------
# Encoding table

# name -> (element dtype without byte order, channels, how to turn it into RGB)
_NAMED: dict[str, tuple[str, int, str]] = {
    "rgb8": ("u1", 3, "rgb"),
    "bgr8": ("u1", 3, "bgr"),
    "rgba8": ("u1", 4, "rgba"),
    "bgra8": ("u1", 4, "bgra"),
    "rgb16": ("u2", 3, "rgb"),
    "bgr16": ("u2", 3, "bgr"),
    "rgba16": ("u2", 4, "rgba"),
    "bgra16": ("u2", 4, "bgra"),
    "mono8": ("u1", 1, "mono"),
    "mono16": ("u2", 1, "mono"),
    # uyvy and yuyv are the current names; yuv422 / yuv422_yuy2 the older aliases for them.
    "uyvy": ("u1", 2, "uyvy"),
    "yuv422": ("u1", 2, "uyvy"),
    "yuyv": ("u1", 2, "yuyv"),
    "yuv422_yuy2": ("u1", 2, "yuyv"),
    # Semi-planar 4:2:0: a full-resolution Y plane followed by a half-height interleaved UV plane.
    "nv12": ("u1", 1, "nv12"),
    "nv21": ("u1", 1, "nv21"),
}
for _pattern in ("rggb", "bggr", "gbrg", "grbg"):
    _NAMED[f"bayer_{_pattern}8"] = ("u1", 1, f"bayer_{_pattern}")
    _NAMED[f"bayer_{_pattern}16"] = ("u2", 1, f"bayer_{_pattern}")

# OpenCV encodings as ROS spells them ("16UC1"); a missing channel count means one channel.
_GENERIC_RE = re.compile(r"^(8|16|32|64)([USF])C([1-4]?)$")
_GENERIC_DTYPES = {
    ("8", "U"): "u1",
    ("8", "S"): "i1",
    ("16", "U"): "u2",
    ("16", "S"): "i2",
    ("32", "S"): "i4",
    ("32", "F"): "f4",
    ("64", "F"): "f8",
}

# Named by the colour of the top-left 2x2 cell, as ROS does; the constants with the full
# four-letter name are aliases of OpenCV's historically confusing two-letter ones.
_BAYER_CODES = {
    "bayer_rggb": cv2.COLOR_BayerRGGB2RGB,
    "bayer_bggr": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg": cv2.COLOR_BayerGBRG2RGB,
    "bayer_grbg": cv2.COLOR_BayerGRBG2RGB,
}
_SWIZZLE_CODES = {
    "bgr": cv2.COLOR_BGR2RGB,
    "rgba": cv2.COLOR_RGBA2RGB,
    "bgra": cv2.COLOR_BGRA2RGB,
}
_YUV_CODES = {
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "nv12": cv2.COLOR_YUV2RGB_NV12,
    "nv21": cv2.COLOR_YUV2RGB_NV21,
}


def encoding_layout(encoding: Any) -> tuple[np.dtype, int, str]:
    """(little-endian element dtype, channels, kind) of an encoding, or ImageConversionError."""
    if not isinstance(encoding, str) or not encoding.strip():
        raise ImageConversionError(f"missing or invalid image encoding {encoding!r}")
    enc = encoding.strip()
    entry = _NAMED.get(enc) or _NAMED.get(enc.lower())
    if entry is not None:
        base, channels, kind = entry
        return np.dtype("<" + base), channels, kind
    m = _GENERIC_RE.match(enc.upper())
    if m is not None and (m.group(1), m.group(2)) in _GENERIC_DTYPES:
        base = _GENERIC_DTYPES[(m.group(1), m.group(2))]
        return np.dtype("<" + base), int(m.group(3) or 1), "generic"
    raise ImageConversionError(f"unsupported image encoding {encoding!r}")


def as_uint8_buffer(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's ``data`` without copying it where possible.

    rclpy hands out ``array.array('B')``; hand-built messages may carry bytes, lists or arrays.
    """
    if isinstance(data, np.ndarray) and data.dtype == np.uint8:
        return np.ascontiguousarray(data).reshape(-1)
    if not isinstance(data, np.ndarray):
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (TypeError, ValueError):  # no buffer protocol, or a non-contiguous one
            pass
    try:
        values = np.asarray(data).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ImageConversionError(f"image data is not a byte sequence: {exc}") from None
    # Range-check explicitly: NumPy 1.x would silently wrap 300 to 44.
    if values.dtype.kind not in "uib" or (
        values.size and (int(values.min()) < 0 or int(values.max()) > 255)
    ):
        raise ImageConversionError("image data is not a sequence of byte values 0..255")
    return values.astype(np.uint8)


def _positive_int(value: Any, name: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ImageConversionError(f"image {name} is not an integer: {value!r}") from None
    if out <= 0:
        raise ImageConversionError(f"image {name} must be positive, got {out}")
    return out


def _raw_view(msg: Any, max_pixels: int) -> tuple[np.ndarray, str]:
    """Validate ``msg`` and return a read-only strided view of its pixels (file byte order).

    The view has shape (rows, width) for one channel and (rows, width, channels) otherwise,
    where rows is ``height`` except for NV12/NV21 (1.5 x height, Y plane then UV plane).
    """
    dtype, channels, kind = encoding_layout(getattr(msg, "encoding", None))
    height = _positive_int(getattr(msg, "height", 0), "height")
    width = _positive_int(getattr(msg, "width", 0), "width")
    if width * height > max_pixels:
        raise ImageConversionError(
            f"declared size {width}x{height} exceeds the limit of {max_pixels} pixels"
        )
    rows = height
    if kind in ("uyvy", "yuyv") and width % 2:
        raise ImageConversionError(f"{msg.encoding} needs an even width, got {width}")
    if kind in ("nv12", "nv21"):
        if width % 2 or height % 2:
            raise ImageConversionError(
                f"{msg.encoding} needs even width and height, got {width}x{height}"
            )
        rows = height * 3 // 2
    pixel_bytes = dtype.itemsize * channels
    raw_step = getattr(msg, "step", None)
    try:
        step = int(raw_step)
    except (TypeError, ValueError):
        raise ImageConversionError(f"image step is not an integer: {raw_step!r}") from None
    if step < width * pixel_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{pixel_bytes}"
        )
    buf = as_uint8_buffer(getattr(msg, "data", b""))
    needed = step * rows
    if buf.size < needed:
        raise ImageConversionError(
            f"image data has {buf.size} bytes, {msg.encoding} {width}x{height} with step "
            f"{step} needs {needed}"
        )
    if dtype.itemsize > 1 and getattr(msg, "is_bigendian", 0):
        dtype = dtype.newbyteorder(">")
    if channels == 1:
        shape: tuple[int, ...] = (rows, width)
        strides: tuple[int, ...] = (step, dtype.itemsize)
    else:
        shape = (rows, width, channels)
        strides = (step, pixel_bytes, dtype.itemsize)
    view = np.ndarray(shape=shape, dtype=dtype, buffer=buf, strides=strides)
    # Writing through the view would silently edit a message other subscribers may share.
    view.flags.writeable = False
    return view, kind


def _native(a: np.ndarray) -> np.ndarray:
    """Same values in the machine's byte order; copies only when the order differs."""
    if a.dtype.isnative:
        return a
    return a.astype(a.dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------
# Image -> numpy


def image_msg_to_array(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image`` in their own dtype and channel count.

    This is the depth path (16UC1 millimetres, 32FC1 metres with NaN for invalid), where any
    rescaling would destroy the measurement. The result is a read-only view sharing memory with
    ``msg.data`` whenever the data is in native byte order (padded ``step`` included); copy it
    before writing. Shape is (H, W) for one channel, (H, W, C) otherwise; packed YUV 4:2:2 is
    (H, W, 2) and NV12/NV21 is the (1.5*H, W) plane stack, as OpenCV expects them.
    """
    view, _ = _raw_view(msg, max_pixels)
    return _native(view)


def scale16_to_8(a: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by round(v / 257), which maps 0..65535 exactly onto 0..255 and
    inverts the usual 8->16 bit expansion v * 257."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _normalise(a: np.ndarray) -> np.ndarray:
    """Min-max stretch to uint8 over the finite values, non-finite pixels -> 0.

    Generic depth/float images have no display range of their own; stretching what is there
    is what a human looking at an overlay expects.
    """
    work = a.astype(np.float64 if a.dtype.itemsize >= 4 else np.float32)
    finite = np.isfinite(work)
    all_finite = bool(finite.all())
    if not all_finite and not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    values = work if all_finite else work[finite]
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:  # no contrast to show
        return np.zeros(a.shape, dtype=np.uint8)
    scaled = (work - lo) * (255.0 / (hi - lo))
    if not all_finite:
        scaled[~finite] = 0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_uint8(a: np.ndarray, generic: bool = False) -> np.ndarray:
    """Named 16-bit encodings are intensities and get scaled; generic ones (16UC1, 32FC1...)
    carry measurements such as depth, whose useful range is whatever the frame contains."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16 and not generic:
        return scale16_to_8(a)
    return _normalise(a)


def _cvt(a: np.ndarray, code: int, encoding: str) -> np.ndarray:
    try:
        return cv2.cvtColor(a, code)
    except cv2.error as exc:
        raise ImageConversionError(f"OpenCV could not convert {encoding}: {exc}") from None


def image_msg_to_rgb(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A ``sensor_msgs/Image`` as an (H, W, 3) uint8 RGB array, whatever its encoding.

    The model, the overlay and the CLI all want 8-bit RGB, so every encoding is brought there:
    16-bit colour/mono is scaled (v/257), float and other generic single-channel images are
    min-max stretched (NaN -> 0), Bayer is demosaiced and YUV converted by OpenCV, alpha is
    dropped. 3- and 4-channel generic encodings (8UC3, 8UC4) are read as BGR(A), OpenCV's
    convention. For rgb8 with unpadded rows the result is a read-only view of ``msg.data``
    (no copy); everything else is a new array.

    Raises ImageConversionError for malformed or unsupported messages.
    """
    view, kind = _raw_view(msg, max_pixels)
    a = _native(view)
    encoding = msg.encoding
    if kind == "rgb":
        out = _to_uint8(a)
    elif kind in _SWIZZLE_CODES:
        # cv2 swaps channels several times faster than a numpy [..., ::-1] copy.
        out = _cvt(_to_uint8(a), _SWIZZLE_CODES[kind], encoding)
    elif kind == "mono":
        out = _cvt(_to_uint8(a), cv2.COLOR_GRAY2RGB, encoding)
    elif kind.startswith("bayer_"):
        # Demosaic at full depth first so 16-bit sensors keep their precision in the
        # interpolation, then scale.
        out = _to_uint8(_cvt(np.ascontiguousarray(a), _BAYER_CODES[kind], encoding))
    elif kind in _YUV_CODES:
        out = _cvt(np.ascontiguousarray(a), _YUV_CODES[kind], encoding)
    else:  # generic nUC/nSC/nFC
        channels = 1 if a.ndim == 2 else a.shape[2]
        if channels == 1:
            out = _cvt(_to_uint8(a, generic=True), cv2.COLOR_GRAY2RGB, encoding)
        elif channels in (3, 4):
            code = _SWIZZLE_CODES["bgr" if channels == 3 else "bgra"]
            out = _cvt(_to_uint8(a, generic=True), code, encoding)
        else:
            raise ImageConversionError(
                f"{encoding} has {channels} channels and no RGB interpretation; "
                "use image_msg_to_array"
            )
    return np.ascontiguousarray(out)
