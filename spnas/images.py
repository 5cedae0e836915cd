"""Image decoding and resizing shared by training, export calibration and every embedder.

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

RESIZE_METHOD = "mediapipe-warp-corners-bilinear/2"  # part of cache keys: change it when the resize changes


def decode_rgb(data: bytes | str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image (path or bytes) to uint8 RGB [H, W, 3]; grey and palette become RGB.

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
                rgb = im.convert("RGB")
                return np.asarray(rgb, dtype=np.uint8).copy()
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
