"""Image decoding and resizing shared by training, export calibration, evaluation and every embedder.

One decoder for every path, so a photo gives the same pixels whichever backend embeds it:
- EXIF orientation is applied exactly as MediaPipe's own loader (`mp.Image.create_from_file`) applies
  it: a phone photo stored sideways with an orientation tag is embedded upright;
- transparency (RGBA, LA, palette with transparency) is composited on white (`BACKGROUND`: catalogue
  cut-outs sit on a white studio background); an app that hands MediaPipe RGBA pixels should do the same;
- palette, grey, grey+alpha, CMYK and 16-bit images become 8-bit RGB (16-bit values keep their top
  byte, as MediaPipe's loader does).

MediaPipe's ImageEmbedder stretches the whole image to the model's input size (no crop, no
aspect-preserving pad) with bilinear sampling; every other path in the project resizes with
`resize_like_mediapipe` so that query and gallery embeddings agree across backends.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError, ImageTooLargeError

# Per-channel normalisation used for training (ImageNet statistics on the 0..255 scale).
# MediaPipe metadata holds one scalar mean/std, so the exporters fold these into the model.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

RESIZE_METHOD = "mediapipe-warp-corners-bilinear/2+exif+alpha-white"  # part of cache keys: change it with the decode
BACKGROUND = (255, 255, 255)  # transparency is composited on this colour


def to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded PIL image as uint8 RGB [H, W, 3]: EXIF orientation applied, alpha composited on
    `BACKGROUND`, palette / grey / CMYK / 16-bit converted."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im) or im
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.uint32)
        a = (a >> 8) if mode.startswith("I;16") or a.max() > 255 else a  # 16-bit: keep the top byte
        return to_rgb_array(np.clip(a, 0, 255).astype(np.uint8))
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        return to_rgb_array(np.clip(a if a.max() > 1.0 else a * 255.0, 0, 255).astype(np.uint8))
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        im = Image.alpha_composite(bg, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def to_rgb_array(x: "np.ndarray | Image.Image") -> np.ndarray:
    """Pixels handed to an embedder as uint8 RGB [H, W, 3]: a PIL image (any mode, see `to_rgb`), or an
    array [H, W] (grey), [H, W, 1], [H, W, 2] (grey + alpha), [H, W, 3] (RGB) or [H, W, 4] (RGBA), of
    uint8, uint16 (top byte kept) or float in [0, 1]. Anything else is an `ImageDecodeError`."""
    if isinstance(x, Image.Image):
        return to_rgb(x)
    a = np.asarray(x)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageDecodeError("image array holds NaN or infinity")
        a = np.clip(np.rint(a * 255.0) if a.max() <= 1.0 else np.rint(a), 0, 255).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ImageDecodeError(f"image array of dtype {a.dtype}: pass uint8, uint16 or float in [0, 1]")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageDecodeError(f"image array of shape {list(a.shape)}: expected [H, W] or [H, W, 1-4 channels]")
    c = a.shape[2]
    if c in (2, 4):  # colour + alpha: composite on the background
        alpha = a[:, :, -1:].astype(np.float32) / 255.0
        colour = a[:, :, :1].repeat(3, axis=2) if c == 2 else a[:, :, :3]
        bg = np.asarray(BACKGROUND, np.float32)
        return np.ascontiguousarray(np.rint(colour * alpha + bg * (1 - alpha)).astype(np.uint8))
    if c == 1:
        return np.ascontiguousarray(a.repeat(3, axis=2))
    return np.ascontiguousarray(a)


def decode_rgb(data: bytes | str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image (path or bytes) to uint8 RGB [H, W, 3] the one way every path uses (`to_rgb`:
    EXIF orientation, alpha on white, palette / grey / CMYK / 16-bit to RGB).

    Truncated files raise `ImageDecodeError` instead of returning half an image.
    `max_pixels` guards against decompression bombs before the pixels are decoded.
    """
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise ImageTooLargeError(
                        f"image is {im.width}x{im.height} = {im.width * im.height} pixels, "
                        f"over the limit of {max_pixels}"
                    )
                im.load()
                return to_rgb(im)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"image declares too many pixels ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        name = src if not isinstance(src, io.BytesIO) else "<bytes>"
        raise ImageDecodeError(f"{name}: not a readable image ({type(e).__name__}: {e})") from None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) an encoded image declares in its header, without decoding its pixels (so a
    request's pixel budget is checked before any decoding); `ImageDecodeError` when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller compares the size
            with Image.open(io.BytesIO(data)) as im:
                return int(im.width), int(im.height)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image declares too many pixels ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"<bytes>: not a readable image ({type(e).__name__}: {e})") from None


def resize_like_mediapipe(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Stretch an RGB uint8 image to `size` (square int or (height, width)) exactly as MediaPipe does.

    MediaPipe's ImageToTensorCalculator (CPU) maps the image's corners onto the output's corners
    (output pixel x samples input x * W / w, no half-pixel shift) with bilinear interpolation,
    border-replicate, on uint8. `cv2.resize` uses half-pixel centres and disagrees by up to 97 grey
    levels on a 128 -> 32 downscale; this warp matches MediaPipe's tensor to float rounding
    (tests/export checks it against MediaPipe itself).
    """
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    if img.shape[0] == h and img.shape[1] == w:
        return img
    m = np.float32([[w / img.shape[1], 0, 0], [0, h / img.shape[0], 0]])
    return cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def normalize(batch_uint8_nhwc: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NHWC normalised with the training mean/std."""
    x = batch_uint8_nhwc.astype(np.float32)
    return (x - np.asarray(MEAN_RGB, np.float32)) / np.asarray(STD_RGB, np.float32)


EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867  # "YYYY:MM:DD HH:MM:SS", when the shot was taken (camera clock)
OFFSET_TIME_ORIGINAL = 36881  # "+02:00": the camera clock's UTC offset, where the camera wrote one


def photo_time(path: str | Path) -> tuple[int, str]:
    """When a photo was taken, in unix seconds, and where that came from: EXIF DateTimeOriginal (read as UTC
    unless OffsetTimeOriginal gives the camera's offset) -> "exif", else the file's modification time ->
    "file". Photo search windows are about these times, so a user's own photos keep theirs."""
    import datetime as dt

    p = Path(path)
    try:
        with Image.open(p) as im:
            exif = im.getexif().get_ifd(EXIF_IFD)
        raw, off = exif.get(DATETIME_ORIGINAL), exif.get(OFFSET_TIME_ORIGINAL)
        if raw:
            t = dt.datetime.strptime(str(raw).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
            tz = dt.timezone.utc
            if off and len(str(off).strip()) >= 6:
                sign = -1 if str(off).strip()[0] == "-" else 1
                hh, mm = str(off).strip()[1:6].split(":")
                tz = dt.timezone(sign * dt.timedelta(hours=int(hh), minutes=int(mm)))
            return int(t.replace(tzinfo=tz).timestamp()), "exif"
    except (OSError, ValueError, UnidentifiedImageError, AttributeError):
        pass  # no EXIF, an unreadable tag, or not an image PIL opens: the file's time
    return int(p.stat().st_mtime), "file"
