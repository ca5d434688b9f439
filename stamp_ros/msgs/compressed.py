"""sensor_msgs ``CompressedImage`` -> numpy: JPEG/PNG colour and ``compressedDepth`` images.

The same rules as :mod:`stamp_ros.msgs.convert`: the payload comes from the network, so the
declared image size is read from the PNG/JPEG header and checked against ``MAX_PIXELS`` *before*
OpenCV decodes (a tiny file can declare a gigapixel image), and every failure is an
:class:`ImageConversionError`.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

from stamp_ros.msgs.convert import MAX_PIXELS, ImageConversionError, as_uint8_buffer, scale16_to_8

__all__ = ["compressed_depth_to_array", "compressed_msg_to_rgb"]



_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DEPTH_HEADER = struct.Struct("<iff")  # compressedDepth: int32 format, float quant_a, quant_b


def _png_size(data: memoryview) -> tuple[int, int]:
    # The IHDR chunk must come first: 8-byte magic, 4 length, 4 "IHDR", then width, height.
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise ImageConversionError("PNG data is truncated or has no IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """Width and height from the first SOF segment, walking marker segments from the start.

    Only headers are read, so a hostile 60000x60000 JPEG of a few kilobytes is refused
    before the decoder allocates gigabytes for it.
    """
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise ImageConversionError("JPEG data is corrupt (marker expected)")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # standalone markers carry no length
        if marker in (0xD9, 0xDA):
            break  # end of image / start of scan before any frame header
        if i + 2 > n:
            break
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise ImageConversionError("JPEG data is corrupt (bad segment length)")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return width, height
        i += length
    raise ImageConversionError("JPEG data is truncated or has no frame header")


def _decode_checked(payload: np.ndarray, what: str, max_pixels: int) -> np.ndarray:
    """Decode PNG/JPEG bytes with IMREAD_UNCHANGED after checking the header's pixel count.

    IMREAD_UNCHANGED keeps 16-bit PNGs and, unlike IMREAD_COLOR, ignores EXIF rotation:
    a camera frame must stay pixel-aligned with its CameraInfo and depth.
    """
    head = memoryview(payload)  # header parsing touches a few bytes; no copy of the payload
    if bytes(head[:8]) == _PNG_MAGIC:
        width, height = _png_size(head)
    elif bytes(head[:3]) == _JPEG_MAGIC:
        width, height = _jpeg_size(head)
    else:
        raise ImageConversionError(f"{what}: data is neither PNG nor JPEG")
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"{what}: header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise ImageConversionError(
            f"{what}: header declares {width}x{height}, over the limit of {max_pixels} pixels"
        )
    try:
        img = cv2.imdecode(payload, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageConversionError(f"{what}: decoding failed: {exc}") from None
    if img is None or img.size == 0:
        raise ImageConversionError(f"{what}: data could not be decoded")
    return img


def compressed_msg_to_rgb(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG or PNG) as an (H, W, 3) uint8 RGB array.

    The container is recognised from the payload's magic bytes rather than ``format``: the
    format string varies between publishers ("jpeg", "rgb8; jpeg compressed bgr8", ...), while
    the bytes cannot lie. The decoded image is always treated as BGR, as image_transport's own
    subscriber does, because encoders are fed BGR whatever the source encoding was.
    compressedDepth payloads are refused here; use :func:`compressed_depth_to_array`.
    """
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(
            f"format {fmt!r} is a depth image; use compressed_depth_to_array"
        )
    payload = as_uint8_buffer(getattr(msg, "data", b""))
    img = _decode_checked(payload, f"CompressedImage ({fmt or 'no format'})", max_pixels)
    if img.dtype == np.uint16:
        img = scale16_to_8(img)
    elif img.dtype != np.uint8:
        raise ImageConversionError(f"decoded image has unsupported dtype {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageConversionError(f"decoded image has {img.shape[2]} channels")


def compressed_depth_to_array(msg: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A ``compressedDepth`` CompressedImage as a depth array.

    Returns (H, W) uint16 millimetres for ``16UC1`` and float32 metres for ``32FC1`` (NaN where
    the sensor had no reading), i.e. what :func:`image_msg_to_array` returns for the raw topic.
    The payload is a 16-bit PNG behind a 12-byte header (int32 format, float32 quantisation
    parameters A and B); 32FC1 depth was stored as inverse depth ``A / d + B``. Payloads
    without the header (very old publishers) are accepted too. The RVL codec is not supported.
    """
    fmt = str(getattr(msg, "format", ""))
    if "rvl" in fmt.lower():
        raise ImageConversionError(f"compressedDepth codec in {fmt!r} is not supported (RVL)")
    encoding = fmt.split(";", 1)[0].strip().upper() if ";" in fmt else "16UC1"
    if encoding not in ("16UC1", "32FC1"):
        raise ImageConversionError(f"compressedDepth format {fmt!r}: unknown depth encoding")
    payload = as_uint8_buffer(getattr(msg, "data", b""))
    quant_a = quant_b = 0.0
    if payload[:8].tobytes() == _PNG_MAGIC:
        png = payload
    elif payload.size > _DEPTH_HEADER.size and (
        payload[_DEPTH_HEADER.size : _DEPTH_HEADER.size + 8].tobytes() == _PNG_MAGIC
    ):
        _, quant_a, quant_b = _DEPTH_HEADER.unpack(payload[: _DEPTH_HEADER.size].tobytes())
        png = payload[_DEPTH_HEADER.size :]
    else:
        raise ImageConversionError(f"compressedDepth ({fmt}): no PNG payload found")
    img = _decode_checked(png, f"compressedDepth ({fmt})", max_pixels)
    if img.dtype != np.uint16 or img.ndim != 2:
        raise ImageConversionError(
            f"compressedDepth ({fmt}): expected a one-channel 16-bit PNG, got "
            f"{img.dtype} with shape {img.shape}"
        )
    if encoding == "16UC1":
        return img
    if not np.isfinite(quant_a) or not np.isfinite(quant_b) or quant_a == 0.0:
        raise ImageConversionError(f"compressedDepth ({fmt}): invalid quantisation header")
    inv = img.astype(np.float32)
    valid = img != 0
    depth = np.full(img.shape, np.nan, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth[valid] = np.float32(quant_a) / (inv[valid] - np.float32(quant_b))
    return depth
