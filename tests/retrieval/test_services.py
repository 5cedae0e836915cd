"""Embedders agree across backends; the supervised deployment (index service processes + gateway
process) end to end on loopback: search, writes with a token, hostile input, limits."""

import socket
import struct
import time
import zlib

import httpx
import numpy as np
import pytest

from ..conftest import compose
from .conftest import jpeg, wait_for


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


# ---------------------------------------------------------------------------------- gRPC
def test_grpc_services_check_token_bundle_and_vectors(deployment):
    import grpc

    from retrieval.service import IndexClient

    d = deployment
    eps = d.sup.announced()
    assert set(eps) == set(d.store.keys()) and len(eps) >= 2
    from retrieval.gateway import DirectoryResolver

    addrs = DirectoryResolver(d.s["discovery"]).endpoints()
    total = 0
    for key, addr in addrs.items():
        c = IndexClient(addr, token=d.token)
        assert c.healthy()
        st = c.stats()
        assert st.partition == key and st.bundle_sha256 == d.store.bundle
        total += st.live
        c.close()
    assert total >= 240, "every seeded listing is held by a partition"
    key = next(k for k in addrs if d.store.partition(k).live()[0].size)
    ids, vecs, _ = d.store.partition(key).live()
    c = IndexClient(addrs[key], token=d.token)
    r = c.search(vecs[:2], 3, bundle=d.store.bundle)
    assert [hl.hits[0].id for hl in r.results] == ids[:2].tolist()
    cases = [
        (lambda: c.search(vecs[:1], 3, bundle="f" * 64), grpc.StatusCode.FAILED_PRECONDITION),  # another bundle
        (lambda: c.search(vecs[:1], 3, bundle=""), grpc.StatusCode.INVALID_ARGUMENT),  # no bundle: no longer skipped
        (lambda: c.search(np.ones((1, 7), np.float32), 3, bundle=d.store.bundle), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.add([2**40], vecs[:1] * 2.8e6, [int(time.time())], d.store.bundle),
         grpc.StatusCode.INVALID_ARGUMENT),  # |v| = 2.8e6 would be top-1 for every query
        (lambda: c.add([2**40], np.full((1, vecs.shape[1]), np.nan, np.float32), [int(time.time())], d.store.bundle),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.add([-3], vecs[:1], [int(time.time())], d.store.bundle), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.add([2**41], vecs[:1], [int(time.time()) - 10**7], d.store.bundle),
         grpc.StatusCode.INVALID_ARGUMENT),  # outside this partition's time range
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code, (code, e.value.details())
    anon = IndexClient(addrs[key])  # no token
    with pytest.raises(grpc.RpcError) as e:
        anon.search(vecs[:1], 3, bundle=d.store.bundle)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert anon.healthy(), "health checks stay open (Kubernetes gRPC probes send no token)"


# ---------------------------------------------------------------------------------- REST
def _data(grocery_root):
    from training.datasets import load_data

    return load_data(compose("serve", ["bundle=x", f"data.root={grocery_root}", "data.train_limit=240",
                                       "data.test_limit=20", "data.val_limit=10"]).data)


def test_rest_search_add_delete_with_real_photos(deployment, grocery_root):
    from spnas.app.retrieval_eval import originals

    d, url = deployment, deployment.url
    data = _data(grocery_root)
    photo = originals(data.train, data.train.images)[5]
    v = d.embedder.embed([photo])[0].tolist()
    r = httpx.post(f"{url}/search", json={"vector": v, "k": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == 5, r.text
    r = httpx.post(f"{url}/search", files={"image": ("p.jpg", jpeg(photo), "image/jpeg")}, data={"k": "5"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"] and not body["partial"] and set(body["partitions"]) == set(d.store.keys())
    assert all(h["photo"] == f"/items/{h['id']}/photo" and h["title"] for h in body["results"])
    assert httpx.get(f"{url}{body['results'][0]['photo']}").headers["content-type"] == "image/jpeg"
    # a new listing goes to the current hour and is found; a sold one disappears
    new = originals(data.test, data.test.images)[0]
    nid = 2**62 + 7
    r = httpx.post(f"{url}/items", files=[("images", ("n.jpg", jpeg(new), "image/jpeg"))],
                   data={"ids": str(nid), "title": "new listing"}, headers=d.auth, timeout=30)
    assert r.status_code == 200, r.text
    nv = d.embedder.embed([new])[0].tolist()
    r = httpx.post(f"{url}/search", json={"vector": nv, "k": 1}, timeout=30)
    assert r.json()["results"][0]["id"] == nid and r.json()["results"][0]["title"] == "new listing"
    r = httpx.delete(f"{url}/items/5", headers=d.auth, timeout=30)
    assert r.status_code == 200 and r.json()["deleted"] is True, r.text
    r = httpx.post(f"{url}/search", json={"vector": v, "k": 10}, timeout=30)
    assert 5 not in [h["id"] for h in r.json()["results"]]
    assert httpx.delete(f"{url}/items/5", headers=d.auth).status_code == 404
    # relisting a sold id is allowed; listing a live id again is not (in another hour either)
    r = httpx.post(f"{url}/items", files=[("images", ("p.jpg", jpeg(photo), "image/jpeg"))],
                   data={"ids": "5", "ts": str(int(time.time()) - 3600 * 20)}, headers=d.auth, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/items", files=[("images", ("p.jpg", jpeg(photo), "image/jpeg"))],
                   data={"ids": "5"}, headers=d.auth, timeout=30)
    assert r.status_code == 409 and "already live" in r.json()["detail"]
    # a time window only returns listings inside it
    now = int(time.time())
    r = httpx.post(f"{url}/search", json={"vector": v, "k": 10, "start": now - 3600 * 6, "end": now + 10}, timeout=30)
    assert r.status_code == 200 and all(now - 3600 * 6 <= h["ts"] < now + 10 for h in r.json()["results"])
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/search" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_writes_need_the_token(deployment, grocery_root):
    url = deployment.url
    photo, _ = _grocery_photos(grocery_root, 1)
    files = [("images", ("a.jpg", jpeg(photo[0]), "image/jpeg"))]
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"}):
        r = httpx.post(f"{url}/items", files=files, data={"ids": "777"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert httpx.delete(f"{url}/items/0", headers=headers).status_code == 401
    assert httpx.post(f"{url}/items", files=files, data={"ids": "777"}, headers=deployment.auth).status_code == 200


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
    one = _png(1800, 1600)  # 2.9 Mpx, a few KiB
    assert len(one) < 40_000
    files = [("images", (f"{i}.png", one, "image/png")) for i in range(3)]
    r = httpx.post(f"{deployment.url}/items", files=files, data={"ids": "900001,900002,900003"},
                   headers=deployment.auth, timeout=30)
    assert r.status_code == 413 and "per-request budget" in r.json()["detail"], r.text


def test_body_limit_is_enforced_before_the_body_is_read(deployment):
    """A request declaring 40 MB gets its 413 after sending a few bytes: the server does not read on."""
    host, port = deployment.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 40000000\r\n\r\n--b\r\n")
        reply = b""
        while chunk := s.recv(4096):  # the server answers and closes without reading the 40 MB
            reply += chunk
        reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "over the limit" in reply, reply[:300]


@pytest.mark.parametrize("payload,fragment", [
    ({"vector": [1.0, 2.0]}, "list of"),
    ({"vector": "unit"}, "list of"),
    ({"k": 0}, "between 1 and"),
    ("k=1e400", "between 1 and"),                       # JSON 1e400 is infinity: was an OverflowError (500)
    ({"k": 2.5}, "integer"),
    ({"start": "yesterday"}, "ISO 8601"),
    ({"start": 1e30}, "outside"),                       # was an OverflowError (500)
    ({"end": "inf"}, "ISO 8601"),
    ({"start": 200, "end": 100}, "before"),
    ({"scale": 2.8e6}, "L2-normalised"),               # a scaled vector is refused, not normalised silently
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
        (one, {"ids": "-5"}, 422),                                  # negative ids can never be returned (-1 pads)
        (one, {"ids": "\u0661\u0662\u0663"}, 422),                  # Arabic-Indic digits are not an id
        (one, {"ids": str(2**63)}, 422),
        (one, {"ids": "1,2"}, 422),
        (two, {"ids": "600,600"}, 422),                             # the same id twice
        (one, {"ids": "601", "ts": "inf"}, 422),                    # was an OverflowError (500)
        (one, {"ids": "601", "ts": "1e30"}, 422),
        (one, {"ids": "601", "ts": str(now + 86400)}, 422),         # far in the future
        (one, {"ids": "601", "ts": "\u0661\u0662"}, 422),
        (one, {"ids": "0"}, 409),                                   # a seeded listing, live in another hour
    ]
    for files, data, code in cases:
        r = httpx.post(f"{url}/items", files=files, data=data, headers=d.auth, timeout=30)
        assert r.status_code == code, (data, r.text)
        assert r.json()["detail"]
    r = httpx.delete(f"{url}/items/\u0661\u0662", headers=d.auth)
    assert r.status_code == 422
    assert httpx.delete(f"{url}/items/-1", headers=d.auth).status_code == 422
    assert httpx.post(f"{url}/search", content=b"{bad", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{url}/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.post(f"{url}/search", files={"other": ("a", b"x", "image/jpeg")}).status_code == 422


def test_health_is_the_process_and_ready_is_the_services(deployment):
    assert httpx.get(f"{deployment.url}/health").json()["status"] == "ok"
    r = httpx.get(f"{deployment.url}/ready")
    assert r.status_code == 200 and all(r.json()["services"].values())
    wait_for(lambda: not deployment.store.partition(deployment.store.keys()[0]).pending, 5, "no pending writes")


def test_blocking_work_runs_off_the_event_loop_with_bounded_admission(deployment, grocery_root, tmp_path):
    """Searches whose embedding is held (a gate in front of the real embedder) occupy the workers and
    the queue; meanwhile /health answers, and one request more is refused with 503 + Retry-After."""
    import asyncio
    import threading

    from retrieval.config import ServeLimits
    from retrieval.embedders import make_embedder
    from retrieval.gateway import DirectoryResolver, create_app

    gate, entered = threading.Event(), threading.Semaphore(0)

    class Held:
        def __init__(self):
            self.inner = make_embedder("litert", deployment.cfg.bundle)
            self.dim, self.bundle_sha256, self.name = self.inner.dim, self.inner.bundle_sha256, "held"

        def embed(self, images, progress=None):
            entered.release()
            gate.wait(30)
            return self.inner.embed(images, progress)

    limits = ServeLimits(workers=2, queue=1, retry_after_s=3)
    app = create_app(Held, DirectoryResolver(deployment.s["discovery"]), limits, state_dir=tmp_path / "gw")
    photo = jpeg(_grocery_photos(grocery_root, 1)[0][0])

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw", timeout=60) as c:
            def search():
                return c.post("/search", files={"image": ("q.jpg", photo, "image/jpeg")})

            held = [asyncio.create_task(search()) for _ in range(3)]  # 2 on the workers, 1 queued
            for _ in range(2):
                await asyncio.to_thread(entered.acquire, True, 30)
            while app.app.state.gateway.admission.n < 3:  # the third is admitted and queued for a worker
                await asyncio.sleep(0.01)
            health = await asyncio.wait_for(c.get("/health"), 5)  # the loop is free while the workers are held
            refused = await search()
            gate.set()
            return health, refused, await asyncio.gather(*held)

    health, refused, held = asyncio.run(go())
    assert health.status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3", refused.text
    assert "saturated" in refused.json()["detail"]
    assert [r.status_code for r in held] == [200, 200, 200]
