"""One decoder for every path: EXIF orientation as MediaPipe's loader, alpha on white, every mode to RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spnas_core.errors import ImageDecodeError
from spnas_core.images import BACKGROUND, decode_rgb, to_rgb_array


def _rotated_jpeg(src: np.ndarray, path: Path, orientation: int = 6) -> Path:
    im = Image.fromarray(src)
    exif = im.getexif()
    exif[0x0112] = orientation  # stored sideways, displayed upright
    im.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_matches_mediapipe_loader(tmp_path, grocery_root):
    import mediapipe as mp

    photo = np.asarray(Image.open(sorted((grocery_root / "test").rglob("*.jpg"))[0]).convert("RGB"))
    for orientation in (3, 6, 8):
        p = _rotated_jpeg(photo, tmp_path / f"o{orientation}.jpg", orientation)
        ours = decode_rgb(p)
        m = mp.Image.create_from_file(str(p))
        theirs = np.array(m.numpy_view())[:, :, :3]  # copy while the image is alive
        assert ours.shape == theirs.shape  # rotated the same way (6 and 8 swap height and width)
        assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 2  # decoders differ by rounding only


def test_alpha_is_composited_on_white_and_modes_become_rgb(tmp_path):
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = decode_rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 0, 0] and out[7, 0].tolist() == list(BACKGROUND)
    grey16 = (np.arange(80).reshape(8, 10) * 700).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert decode_rgb(tmp_path / "g16.png")[5, 5].tolist() == [int(grey16[5, 5]) >> 8] * 3
    Image.fromarray(rgba[..., 0]).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    Image.fromarray(rgba[..., :3]).convert("CMYK").save(tmp_path / "c.jpg")
    for f in ("p.png", "la.png", "c.jpg"):
        im = decode_rgb(tmp_path / f)
        assert im.shape == (8, 10, 3) and im.dtype == np.uint8, f
    assert decode_rgb(tmp_path / "la.png")[7, 0].tolist() == list(BACKGROUND)


def test_raw_arrays_are_converted_or_refused():
    assert to_rgb_array(np.full((4, 5), 7, np.uint8)).shape == (4, 5, 3)
    assert to_rgb_array(np.full((4, 5, 2), 255, np.uint8))[0, 0].tolist() == [255, 255, 255]
    assert to_rgb_array(np.full((2, 2, 3), 0x1234, np.uint16))[0, 0].tolist() == [0x12] * 3
    assert to_rgb_array(np.full((2, 2, 3), 0.5, np.float32))[0, 0].tolist() == [128] * 3
    assert to_rgb_array(Image.new("P", (3, 2))).shape == (2, 3, 3)
    for bad in (np.zeros((4, 5, 6), np.uint8), np.zeros((4, 5), np.int64), np.full((2, 2), np.nan, np.float32)):
        with pytest.raises(ImageDecodeError):
            to_rgb_array(bad)
