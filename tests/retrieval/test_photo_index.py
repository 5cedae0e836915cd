"""`spnas.open_photo_index`: the Python API of the photo search on the new backend, in one process:
added photos are found at once (the delta), `build()` turns finished periods into versions searched
memory-mapped, deletes apply everywhere, and `spnas-serve root=<same folder>` would serve the same."""

from __future__ import annotations

import time

import numpy as np


def test_photo_index_adds_searches_builds_and_deletes(small_bundle, grocery_root, tmp_path):
    import spnas

    photos = sorted((grocery_root / "test" / "Fruit").rglob("*.jpg"))[:40]
    index = spnas.open_photo_index(small_bundle, tmp_path / "index")
    assert len(index) == 0
    now = int(time.time())
    ts = [now - 7200 - 60 * i for i in range(30)] + [now] * 10  # 30 in finished hours, 10 now
    assert index.add(list(range(40)), photos, ts) == 40
    assert index.add(list(range(40)), photos, ts) == 0  # the same listings again: nothing new
    assert len(index) == 40
    for i in (0, 35):
        assert index.search(photos[i], k=1)[0][0] == i
    built = index.build()
    assert built["built"] and all("/hour/" in k or "/day/" in k or "/month/" in k for k in built["built"])
    hits = index.search(photos[3], k=40)
    assert hits[0][0] == 3 and sorted(i for i, _ in hits) == list(range(40))  # each listing once
    assert index.delete(3) and not index.delete(3)
    assert 3 not in [i for i, _ in index.search(photos[3], k=40)]
    scores = [s for _, s in index.search(photos[10], k=5)]
    assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
