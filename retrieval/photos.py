"""The photo store: listing photos by content (sha256 of their bytes), on any fsspec filesystem.

    <root>/<h[:2]>/<h>             the photo as uploaded (what a rebuild with a new bundle embeds)
    <root>/<h[:2]>/<h>.thumb.jpg   a JPEG of at most 256 px on its longer side (what the page shows)

A photo is written under a temporary name and moved into place, so a reader never sees half of one;
the same bytes always land at the same name, so a retried upload changes nothing. Photos are written
before the listing is committed: a crash between the two leaves an unreferenced photo, never a
listing without one.
"""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np

THUMB_SIDE = 256


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """JPEG bytes of an RGB image shrunk to at most `side` pixels on its longer side."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    im.thumbnail((side, side))
    b = io.BytesIO()
    im.save(b, "JPEG", quality=85)
    return b.getvalue()


def photo_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PhotoStore:
    """Photos and thumbnails by content hash (`file://...` by default, any fsspec URL)."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)

    def _path(self, h: str, suffix: str = "") -> str:
        return f"{self.root}/{h[:2]}/{h}{suffix}"

    def _put(self, path: str, data: bytes) -> None:
        if self.fs.exists(path):
            return
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, path)

    def put(self, data: bytes, rgb: np.ndarray | None = None) -> str:
        """Store a photo (and its thumbnail, from `rgb` when given, else decoded); returns its hash."""
        h = photo_hash(data)
        if rgb is None:
            from spnas_core.images import decode_rgb

            rgb = decode_rgb(data)
        self._put(self._path(h, ".thumb.jpg"), thumbnail(rgb))
        self._put(self._path(h), data)  # last: a photo present means its thumbnail is too
        return h

    def _get(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def original(self, h: str) -> bytes | None:
        return self._get(self._path(h))

    def thumbnail(self, h: str) -> bytes | None:
        return self._get(self._path(h, ".thumb.jpg"))
