"""Listing photos for the search page: a JPEG thumbnail and a title per listing id, on disk.

The index holds vectors; a shopper wants to see the listings. Real deployments keep photos in a blob
store and put its URLs in the listing; this store is that, on a folder: `<root>/<id % 256>/<id>.jpg`
(at most 256 px on the longer side) and `<id>.json` ({"title": ...}), each written atomically. The
gateway writes the photo before the listing is committed, so every live listing has one (a write
that then fails leaves an orphan photo, which a later listing of the same id overwrites).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from spnas_core.files import write_bytes_atomic

THUMB_SIDE = 256


def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """JPEG bytes of an RGB image shrunk to at most `side` pixels on its longer side."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    im.thumbnail((side, side))
    b = io.BytesIO()
    im.save(b, "JPEG", quality=85)
    return b.getvalue()


class PhotoStore:
    """Thumbnails and titles of listings by id."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _base(self, item_id: int) -> Path:
        return self.root / f"{int(item_id) % 256:02x}" / str(int(item_id))

    def put(self, item_id: int, jpeg: bytes, title: str | None = None) -> None:
        base = self._base(item_id)
        write_bytes_atomic(base.with_suffix(".jpg"), jpeg)
        write_bytes_atomic(base.with_suffix(".json"), json.dumps({"title": title or ""}).encode())

    def photo(self, item_id: int) -> bytes | None:
        p = self._base(item_id).with_suffix(".jpg")
        return p.read_bytes() if p.is_file() else None

    def title(self, item_id: int) -> str:
        p = self._base(item_id).with_suffix(".json")
        try:
            return str(json.loads(p.read_text()).get("title", ""))
        except (OSError, ValueError):
            return ""

    def delete(self, item_id: int) -> None:
        for suffix in (".jpg", ".json"):
            self._base(item_id).with_suffix(suffix).unlink(missing_ok=True)
