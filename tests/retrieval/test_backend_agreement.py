"""Every embedder backend returns unit vectors that agree (cos >= 0.999) on real photos of any aspect
ratio and odd formats: grey, RGBA, CMYK, 16-bit, palette and EXIF-rotated JPEGs; MediaPipe with its
default options included, and a phone-side vector from MediaPipe's own file loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spnas_core.images import decode_rgb

BACKENDS = ("mediapipe", "litert", "onnx", "torch")


def _odd_photos(grocery_root: Path, tmp: Path) -> list[Path]:
    src = sorted((grocery_root / "test").rglob("*.jpg"))[:3]
    photo = Image.open(src[0]).convert("RGB")
    w, h = photo.size
    out = []
    photo.crop((0, 0, w, h // 3)).save(tmp / "wide.jpg", quality=95)  # 3:1
    photo.crop((0, 0, w // 4, h)).save(tmp / "tall.jpg", quality=95)  # 1:4
    photo.convert("L").save(tmp / "grey.png")
    rgba = photo.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[: h // 2, :, 3] = 0
    Image.fromarray(a).save(tmp / "rgba.png")
    photo.convert("CMYK").save(tmp / "cmyk.jpg", quality=95)
    Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257)).save(tmp / "grey16.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp / "palette.png")
    rot = Image.open(src[1]).convert("RGB")
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(tmp / "exif6.jpg", exif=exif.tobytes(), quality=95)
    out += [tmp / n for n in ("wide.jpg", "tall.jpg", "grey.png", "rgba.png", "cmyk.jpg", "grey16.png", "palette.png",
                               "exif6.jpg")]
    return out + src


def test_backends_agree_on_odd_inputs_and_return_unit_vectors(small_bundle, grocery_root, tmp_path):
    from retrieval.embedders import make_embedder

    files = _odd_photos(grocery_root, tmp_path)
    images = [decode_rgb(f) for f in files]
    vecs = {b: make_embedder(b, small_bundle).embed(images) for b in BACKENDS}
    for b, v in vecs.items():
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4), b
    for b in BACKENDS[1:]:
        cos = (vecs[b] * vecs["mediapipe"]).sum(1)
        assert cos.min() >= 0.999, (b, dict(zip([f.name for f in files], cos.round(5))))


def test_mediapipe_default_options_return_unit_vectors(small_bundle, grocery_root):
    from export.mediapipe_tasks import MediaPipeEmbedder

    mp = MediaPipeEmbedder(small_bundle / "embedder.tflite")  # default options: no l2_normalize asked
    try:
        v = mp.embed([decode_rgb(p) for p in sorted((grocery_root / "test").rglob("*.jpg"))[:5]])
    finally:
        mp.close()
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)


def test_exif_rotated_phone_photo_matches_the_phone_side_vector(small_bundle, grocery_root, tmp_path):
    """A phone app hands MediaPipe the file (its loader applies EXIF); the server decodes the upload with
    spnas_core.images: both vectors must agree, and the upright original must be the rotated photo's nearest."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from retrieval.embedders import make_embedder

    src = sorted((grocery_root / "test").rglob("*.jpg"))[4]
    files = _odd_photos(grocery_root, tmp_path)
    upright = Image.open(src).convert("RGB")
    exif = upright.transpose(Image.Transpose.ROTATE_90).getexif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    opts = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(small_bundle / "embedder.tflite")))
    with vision.ImageEmbedder.create_from_options(opts) as task:
        phone = np.asarray(task.embed(mp.Image.create_from_file(str(tmp_path / "phone.jpg"))).embeddings[0].embedding)
    server = make_embedder("litert", small_bundle)
    v = server.embed([decode_rgb(tmp_path / "phone.jpg")])[0]
    assert float(phone @ v / np.linalg.norm(phone)) >= 0.999
    gallery = server.embed([decode_rgb(f) for f in files] + [decode_rgb(src)])
    assert int(np.argmax(gallery @ v)) == len(files)  # the upright original ranks first


def _grocery_photos(root, n=12):
    from spnas_core.images import decode_rgb

    paths = sorted((root / "test" / "Fruit").rglob("*.jpg"))[:: max(1, 400 // n)][:n]
    return [decode_rgb(p) for p in paths], paths


def test_embedders_agree_across_backends(small_bundle, grocery_root):
    from retrieval.embedders import BACKENDS, make_embedder

    imgs, _ = _grocery_photos(grocery_root)  # 128 px originals: every backend resizes (MediaPipe itself)
    vecs = {b: make_embedder(b, small_bundle).embed(imgs) for b in BACKENDS}
    for b, v in vecs.items():
        assert v.shape == (len(imgs), 1024) and v.dtype == np.float32
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    for a in BACKENDS:
        for b in BACKENDS:
            cos = (vecs[a] * vecs[b]).sum(1)
            assert cos.min() >= 0.999, (a, b, cos.min())
