"""The REST gateway over a real one-machine deployment (`spnas-serve`'s own start: built versions,
in-process index services, the gateway on a free port): search by photo and vector, idempotent adds
and deletes with the token, new listings searchable within a refresh, a late change to a built
hour answered once and built in at the next build, hostile input, limits, the versions listing."""

from __future__ import annotations

import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest

from ..conftest import compose
from .conftest import jpeg, wait_for
from .test_backend_agreement import _grocery_photos


def _data(grocery_root):
    from training.datasets import load_data

    return load_data(compose("serve", ["bundle=x", "data=grocery", f"data.root={grocery_root}", "data.train_limit=240",
                                       "data.test_limit=20", "data.val_limit=10"]).data)


def _top(url, v, k=10, **kw):
    r = httpx.post(f"{url}/search", json={"vector": v, "k": k, **kw}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_rest_search_add_delete_with_real_photos(deployment, grocery_root):
    from spnas.app.jobs.retrieval_eval import originals

    d, url = deployment, deployment.url
    data = _data(grocery_root)
    photo = originals(data.train, data.train.images)[5]
    v = d.embedder.embed([photo])[0].tolist()
    body = _top(url, v, 3)
    assert body["results"][0]["id"] == 5 and body["versions"] and not body["partial"], body
    r = httpx.post(f"{url}/search", files={"image": ("p.jpg", jpeg(photo), "image/jpeg")}, data={"k": "5"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"] and all(h["photo"] == f"/items/{h['id']}/photo" and h["title"] for h in body["results"])
    assert httpx.get(f"{url}{body['results'][0]['photo']}").headers["content-type"] == "image/jpeg"

    # a new listing: acknowledged once committed, searchable at the delta's next refresh; repeating it changes nothing
    new = originals(data.test, data.test.images)[0]
    nid = 2**62 + 7
    files = [("images", ("n.jpg", jpeg(new), "image/jpeg"))]
    r = httpx.post(f"{url}/items", files=files, data={"ids": str(nid), "title": "new listing"}, headers=d.auth, timeout=30)
    acked = time.monotonic()
    assert r.status_code == 200 and r.json()["outcomes"] == {str(nid): "created"}, r.text
    nv = d.embedder.embed([new])[0].tolist()
    wait_for(lambda: _top(url, nv, 1)["results"][0]["id"] == nid, 60, "the new listing in the search")
    assert time.monotonic() - acked < 60
    assert _top(url, nv, 1)["results"][0]["title"] == "new listing"
    r = httpx.post(f"{url}/items", files=files, data={"ids": str(nid)}, headers=d.auth, timeout=30)
    assert r.status_code == 200 and r.json() == {"added": 0, "outcomes": {str(nid): "exists"}}  # a retried add
    r = httpx.post(f"{url}/items", files=[("images", ("p.jpg", jpeg(photo), "image/jpeg"))], data={"ids": str(nid)},
                   headers=d.auth, timeout=30)
    assert r.status_code == 409 and "another photo" in r.json()["detail"]

    # a sold listing leaves the search (its version leaves it out as of the delta's change number)
    r = httpx.delete(f"{url}/items/5?status=sold", headers=d.auth, timeout=30)
    assert r.status_code == 200 and r.json()["deleted"] is True and not r.json()["already"], r.text
    wait_for(lambda: 5 not in [h["id"] for h in _top(url, v)["results"]], 30, "listing 5 to leave the search")
    r = httpx.delete(f"{url}/items/5", headers=d.auth, timeout=30)
    assert r.status_code == 200 and r.json()["already"] is True  # deleting again answers the same
    assert httpx.delete(f"{url}/items/123456789012", headers=d.auth).status_code == 404

    # listed again with a time inside an hour that has a version: answered once, from the delta
    t20 = int(time.time()) - 3600 * 20
    r = httpx.post(f"{url}/items", files=[("images", ("p.jpg", jpeg(photo), "image/jpeg"))],
                   data={"ids": "5", "ts": str(t20)}, headers=d.auth, timeout=30)
    assert r.status_code == 200 and r.json()["outcomes"] == {"5": "relisted"}, r.text
    wait_for(lambda: [h["id"] for h in _top(url, v)["results"]].count(5) == 1, 30, "listing 5 back, once")
    hit = next(h for h in _top(url, v)["results"] if h["id"] == 5)
    assert hit["ts"] == t20

    # a time window only returns listings inside it
    now = int(time.time())
    body = _top(url, v, 10, start=now - 3600 * 6, end=now + 10)
    assert body["results"] and all(now - 3600 * 6 <= h["ts"] < now + 10 for h in body["results"])
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/search" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_a_late_change_is_built_into_its_hour_at_the_next_build(deployment, grocery_root):
    """An add into an hour that already has a version is answered by the delta; the next build-due
    rebuilds that hour, the new version takes over and the delta lets the listing go."""
    from spnas.app.jobs.retrieval_eval import originals

    d, url = deployment, deployment.url
    photo = originals(_data(grocery_root).test, _data(grocery_root).test.images)[3]
    t = int(time.time()) - 3600 * 2 - 600
    r = httpx.post(f"{url}/items", files=[("images", ("l.jpg", jpeg(photo), "image/jpeg"))],
                   data={"ids": "777000", "ts": str(t)}, headers=d.auth, timeout=30)
    assert r.status_code == 200, r.text
    v = d.embedder.embed([photo])[0].tolist()
    wait_for(lambda: _top(url, v, 1)["results"][0]["id"] == 777000, 30, "the late listing from the delta")
    delta_before = _top(url, v, 1)["delta"]
    summary = d.s.sync()  # what the schedule runs every build_every_s
    assert any("/hour/" in k for k in summary["built"]), summary

    def settled():
        b = _top(url, v, 3)
        return b["delta"] < delta_before and b["results"][0]["id"] == 777000 and b

    b = wait_for(settled, 30, "the rebuilt hour to take over from the delta")
    assert [h["id"] for h in b["results"]].count(777000) == 1


def test_writes_need_the_token(deployment, grocery_root):
    url = deployment.url
    photo, _ = _grocery_photos(grocery_root, 1)
    files = [("images", ("a.jpg", jpeg(photo[0]), "image/jpeg"))]
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"},
                    {"Authorization": deployment.token}):  # the right token without its "Bearer " scheme
        r = httpx.post(f"{url}/items", files=files, data={"ids": "777"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert httpx.delete(f"{url}/items/0", headers=headers).status_code == 401
    assert httpx.post(f"{url}/items", files=files, data={"ids": "777"}, headers=deployment.auth).status_code == 200


def test_the_versions_listing_shows_addresses_only_with_the_token(deployment):
    url = deployment.url
    anon = httpx.get(f"{url}/versions").json()
    assert anon["versions"] and all("address" not in v for v in anon["versions"]) and not anon["addresses_shown"]
    assert httpx.get(f"{url}/versions", headers={"Authorization": "Bearer wrong-token-0123456789"}).json()[
        "addresses_shown"] is False
    full = httpx.get(f"{url}/versions", headers=deployment.auth).json()
    assert all(v["address"].startswith("127.0.0.1:") for v in full["versions"])
    # The plan serves the finished hours of the current UTC day as hours and the days before as days: in the
    # first hour of a day (when no hour of it is finished) only days and the delta carry the listings.
    day_started = deployment.started % 86400 >= 3600
    assert ("hour" if day_started else "day") in {v["granularity"] for v in full["versions"] if v["in_plan"]}


def test_health_is_the_process_and_ready_is_the_worker(deployment):
    assert httpx.get(f"{deployment.url}/health").json()["status"] == "ok"
    r = httpx.get(f"{deployment.url}/ready")
    assert r.status_code == 200 and r.json()["versions"] > 0 and r.json()["missing"] == [], r.text
    assert r.json()["backends"] > 0 and r.json()["reasons"] == []
    m = httpx.get(f"{deployment.url}/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert "spnas_gateway_ready 1" in m.text and "spnas_gateway_view_age_seconds" in m.text


def _png(w, h) -> bytes:
    """A real, tiny PNG of w x h black pixels (compresses to almost nothing, decodes to w*h*3 bytes)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + b"\0" * (3 * w) for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _png_header_bomb(w=30000, h=30000) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name,body,ctype,code", [
    ("big.jpg", b"\xff\xd8\xff" + b"\0" * 200_000, "image/jpeg", 413),       # over max_bytes
    ("trunc.jpg", None, "image/jpeg", 400),                                  # truncated JPEG
    ("note.jpg", b"this is not an image", "image/jpeg", 415),               # bytes are not a JPEG
    ("note.txt", b"plain text", "text/plain", 415),                          # not an image type
    ("bomb.png", _png_header_bomb(), "image/png", 413),                      # decompression bomb
    ("empty.jpg", b"", "image/jpeg", 400),
])
def test_rest_rejects_bad_uploads_with_4xx(deployment, grocery_root, name, body, ctype, code):
    if body is None:
        photo, _ = _grocery_photos(grocery_root, 1)
        body = jpeg(photo[0])[:1500]
    r = httpx.post(f"{deployment.url}/search", files={"image": (name, body, ctype)}, timeout=30)
    assert r.status_code == code, r.text
    assert r.json()["detail"]


def test_pixel_budget_is_per_request_and_checked_before_decoding(deployment):
    """Each PNG is under the per-image limit (4 Mpx) and tiny on the wire, but three of them declare
    more pixels than the request budget (6 Mpx): refused from their headers."""
    one = _png(1800, 1600)
    assert len(one) < 40_000
    files = [("images", (f"{i}.png", one, "image/png")) for i in range(3)]
    r = httpx.post(f"{deployment.url}/items", files=files, data={"ids": "900001,900002,900003"},
                   headers=deployment.auth, timeout=30)
    assert r.status_code == 413 and "per-request budget" in r.json()["detail"], r.text


def test_body_limit_is_enforced_before_the_body_is_read(deployment):
    host, port = deployment.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 40000000\r\n\r\n--b\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "over the limit" in reply, reply[:300]


@pytest.mark.parametrize("payload,fragment", [
    ({"vector": [1.0, 2.0]}, "list of"),
    ({"vector": "unit"}, "list of"),
    ({"k": 0}, "between 1 and"),
    ("k=1e400", "between 1 and"),
    ({"k": 2.5}, "integer"),
    ({"start": "yesterday"}, "ISO 8601"),
    ({"start": 1e30}, "outside"),
    ({"end": "inf"}, "ISO 8601"),
    ({"start": 200, "end": 100}, "before"),
    ({"scale": 2.8e6}, "L2-normalised"),
])
def test_rest_rejects_bad_search_parameters(deployment, payload, fragment):
    dim = deployment.embedder.dim
    v = np.full(dim, 1 / np.sqrt(dim)).tolist()
    if payload == "k=1e400":
        body = ('{"vector": [' + ",".join(map(str, v)) + '], "k": 1e400}').encode()
        r = httpx.post(f"{deployment.url}/search", content=body, headers={"content-type": "application/json"})
    else:
        p = {"vector": v, **payload}
        if "scale" in p:
            p["vector"] = (np.asarray(v) * p.pop("scale")).tolist()
        r = httpx.post(f"{deployment.url}/search", json=p)
    assert r.status_code == 422 and fragment in r.json()["detail"], r.text


def test_rest_rejects_bad_listings(deployment, grocery_root):
    d, url = deployment, deployment.url
    photo, _ = _grocery_photos(grocery_root, 2)
    one = [("images", ("a.jpg", jpeg(photo[0]), "image/jpeg"))]
    two = one + [("images", ("b.jpg", jpeg(photo[1]), "image/jpeg"))]
    now = int(time.time())
    cases = [
        (one, {"ids": "-5"}, 422),
        (one, {"ids": "\u0661\u0662\u0663"}, 422),                  # Arabic-Indic digits are not an id
        (one, {"ids": str(2**63)}, 422),
        (one, {"ids": "1,2"}, 422),
        (two, {"ids": "600,600"}, 422),
        (one, {"ids": "601", "ts": "inf"}, 422),
        (one, {"ids": "601", "ts": "1e30"}, 422),
        (one, {"ids": "601", "ts": str(now + 86400)}, 422),         # far in the future
        (one, {"ids": "601", "ts": "\u0661\u0662"}, 422),
        (one, {"ids": "1"}, 409),                                   # a seeded listing, active with another photo
    ]
    for files, data, code in cases:
        r = httpx.post(f"{url}/items", files=files, data=data, headers=d.auth, timeout=30)
        assert r.status_code == code, (data, r.text)
        assert r.json()["detail"]
    assert httpx.delete(f"{url}/items/\u0661\u0662", headers=d.auth).status_code == 422
    assert httpx.delete(f"{url}/items/-1", headers=d.auth).status_code == 422
    assert httpx.delete(f"{url}/items/3?status=gone", headers=d.auth).status_code == 422
    assert httpx.post(f"{url}/search", content=b"{bad", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{url}/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.post(f"{url}/search", files={"other": ("a", b"x", "image/jpeg")}).status_code == 422


def test_blocking_work_runs_off_the_event_loop_with_bounded_admission(deployment, grocery_root):
    """Searches whose embedding is held (a gate in front of the real embedder) occupy the threads and
    the queue; meanwhile /health answers, and one request more is refused with 503 + Retry-After."""
    import asyncio
    import dataclasses
    import threading

    from retrieval.config import Limits
    from retrieval.embedders import make_embedder
    from retrieval.gateway import create_app
    from spnas.app.serving.serve import gateway_spec

    gate, entered = threading.Event(), threading.Semaphore(0)

    class Held:
        def __init__(self, path):
            self.inner = make_embedder("litert", path)
            self.dim, self.bundle_sha256, self.name = self.inner.dim, self.inner.bundle_sha256, "held"

        def embed(self, images, progress=None):
            entered.release()
            gate.wait(30)
            return self.inner.embed(images, progress)

    spec = dataclasses.replace(gateway_spec(deployment.cfg, deployment.s.loc, deployment.s.auth, 0),
                               limits=Limits(threads=2, queue=1, retry_after_s=3))
    app = create_app(spec, deployment.token, embedder_factory=Held)
    app.app.state.gateway.start()
    photo = jpeg(_grocery_photos(grocery_root, 1)[0][0])

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw", timeout=60) as c:
            def search():
                return c.post("/search", files={"image": ("q.jpg", photo, "image/jpeg")})

            held = [asyncio.create_task(search()) for _ in range(3)]  # 2 on the threads, 1 queued
            for _ in range(2):
                await asyncio.to_thread(entered.acquire, True, 30)
            while app.app.state.gateway.admission.n < 3:
                await asyncio.sleep(0.01)
            health = await asyncio.wait_for(c.get("/health"), 5)
            refused = await search()
            gate.set()
            return health, refused, await asyncio.gather(*held)

    try:
        health, refused, held = asyncio.run(go())
    finally:
        gate.set()
        app.app.state.gateway.stop()
    assert health.status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3", refused.text
    assert "saturated" in refused.json()["detail"]
    assert [r.status_code for r in held] == [200, 200, 200]


def _png_short(w: int, h: int, rows: int) -> bytes:
    """A PNG whose header declares w x h pixels and whose (complete, valid) zlib stream holds `rows` rows."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + bytes([(7 * y) % 256]) * (3 * w) for y in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def test_bad_input_gets_one_clear_4xx_and_stores_nothing(deployment, grocery_root):
    from retrieval.photos import PhotoStore, photo_hash

    d, url = deployment, deployment.url
    dim = d.embedder.dim
    v = ",".join(["0"] * (dim - 1))
    huge = "9" * 400
    for body in (f'{{"vector": [{huge}, {v}]}}', f'{{"vector": [1, {v}], "start": {huge}}}',
                 f'{{"vector": [1, {v}], "end": -{huge}}}', f'{{"vector": [1, {v}], "k": {huge}}}'):
        r = httpx.post(f"{url}/search", content=body, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 422 and r.json()["detail"], (body[:40], r.status_code, r.text[:200])
    # a chunked multipart body over the limit: 413 like a declared one, whichever endpoint reads it
    def chunks(field):
        yield (f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="a.jpg"\r\n'
               f'Content-Type: image/jpeg\r\n\r\n').encode()
        for _ in range(30):
            yield b"\xff" * 100_000
    for path, headers in (("/search", {}), ("/items", d.auth)):
        r = httpx.post(f"{url}{path}", content=chunks("image" if path == "/search" else "images"),
                       headers={**headers, "content-type": "multipart/form-data; boundary=b"}, timeout=30)
        assert r.status_code == 413 and "over the limit" in r.json()["detail"], (path, r.status_code, r.text[:200])
    # a PNG whose data stops after half the rows its header declares
    short = _png_short(64, 64, 32)
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(short)).load() is not None  # Pillow itself takes it (the rest as zeros)
    r = httpx.post(f"{url}/search", files={"image": ("short.png", short, "image/png")}, timeout=30)
    assert r.status_code == 400 and "truncated" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/items", files=[("images", ("short.png", short, "image/png"))], data={"ids": "880001"},
                   headers=d.auth, timeout=30)
    assert r.status_code == 400 and photo_hash(short) not in _stored(d)
    assert httpx.post(f"{url}/search", files={"image": ("full.png", _png_short(64, 64, 64), "image/png")},
                      timeout=30).status_code == 200
    # an add refused with 409 (the id is active with another photo) keeps neither its photo nor its embedding
    photo, _ = _grocery_photos(grocery_root, 3)
    fresh = jpeg(np.ascontiguousarray(photo[2][::-1]))  # bytes no listing has
    r = httpx.post(f"{url}/items", files=[("images", ("f.jpg", fresh, "image/jpeg"))], data={"ids": "1"},
                   headers=d.auth, timeout=30)
    assert r.status_code == 409, r.text
    h = photo_hash(fresh)
    assert PhotoStore(d.s.loc.photos).original(h) is None and h not in _stored(d)
    assert not d.store.cached(d.embedder.bundle_sha256, [h], dim)[1][0]


def _stored(d) -> set[str]:
    root = __import__("pathlib").Path(d.s.loc.photos.removeprefix("file://"))
    return {p.name for p in root.rglob("*") if p.is_file() and "." not in p.name}


def test_a_deleted_listings_photo_is_gone(deployment, grocery_root):
    d, url = deployment, deployment.url
    photo, _ = _grocery_photos(grocery_root, 4)
    r = httpx.post(f"{url}/items", files=[("images", ("g.jpg", jpeg(photo[3]), "image/jpeg"))],
                   data={"ids": "880077"}, headers=d.auth, timeout=30)
    assert r.status_code == 200 and httpx.get(f"{url}/items/880077/photo").status_code == 200
    assert httpx.delete(f"{url}/items/880077", headers=d.auth).status_code == 200
    assert httpx.get(f"{url}/items/880077/photo").status_code == 404


def test_a_write_is_searchable_at_once_on_the_worker_that_acknowledged_it(deployment, grocery_root, tmp_path):
    """A gateway process of one worker refreshing every 20 ms (a refresh nearly always in progress) over
    the deployment's store and index services: every acknowledged add is found, and every acknowledged
    delete missed, by the search sent right after it (no wait)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import wait_for

    d = deployment
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    loc = d.s.loc
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "spnas-serve"), "gateway", f"bundle={d.cfg.bundle}", f"root={tmp_path}",
         "workers=1", f"port={port}", f"resolver=dir:{d.s.announce}", f"auth.token_file={d.cfg.auth.token_file}",
         f"locations.store={loc.store}", f"locations.photos={loc.photos}", f"locations.repository={loc.repository}",
         "delta.refresh_s=0.02", "limits.rpc_timeout_s=5"], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gateway.log", "w"), env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(f"{url}/ready"), 90, "the gateway process")
        photos, _ = _grocery_photos(grocery_root, 8)
        now = int(time.time())
        misses = []
        with httpx.Client(timeout=30) as cl:
            for n in range(24):
                j, item, ts = n % len(photos), 990_000 + n, now - 40 - n
                data = jpeg(photos[j])
                r = cl.post(f"{url}/items", files=[("images", ("p.jpg", data, "image/jpeg"))],
                            data={"ids": str(item), "ts": str(ts)}, headers=d.auth)
                assert r.status_code == 200, r.text
                found = _ids(cl, url, data, ts)
                misses += [("add", item)] if item not in found else []
                assert cl.delete(f"{url}/items/{item}", headers=d.auth).status_code == 200
                misses += [("delete", item)] if item in _ids(cl, url, data, ts) else []
        assert misses == [], f"{len(misses)} of 48 searches right after an acknowledged write missed it: {misses}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _ok(u: str) -> bool:
    try:
        return httpx.get(u, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ids(cl, url, photo: bytes, ts: int) -> list[int]:
    r = cl.post(f"{url}/search", files={"image": ("q.jpg", photo, "image/jpeg")},
                data={"k": "10", "start": str(ts), "end": str(ts + 1)})
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["results"]]
