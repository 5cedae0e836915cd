"""Embedders agree across backends; gRPC index services and the REST gateway end to end on loopback."""

import io
import socket
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest

from ..conftest import compose


def _grocery_photos(root, n=12):
    from spnas.images import decode_rgb

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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(small_bundle, grocery_root, tmp_path_factory):
    import uvicorn

    from spnas.app.serve import start

    tmp = tmp_path_factory.mktemp("serve")
    cfg = compose("serve", [f"bundle={small_bundle}", f"data.root={grocery_root}", "data.train_limit=240",
                            "data.test_limit=20", "data.val_limit=10", f"data.cache_dir={tmp / 'cache'}",
                            f"index_dir={tmp / 'index'}", "limits.max_bytes=150000", "limits.max_pixels=4000000"])
    s = start(cfg)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(s["app"], host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", **s}
    server.should_exit = True
    th.join(timeout=10)
    for srv, _ in s["servers"].values():
        srv.stop(grace=0)


def _jpeg(img) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(img).save(b, "JPEG", quality=90)
    return b.getvalue()


def test_grpc_services_health_stats_search(served):
    from retrieval.service import IndexClient

    total = 0
    for key, (_, addr) in served["servers"].items():
        c = IndexClient(addr)
        assert c.healthy()
        st = c.stats()
        assert st.partition == key and st.bundle_sha256 == served["store"].bundle
        total += st.count
        c.close()
    assert total == 240, "every seeded listing is held by exactly one partition"
    key, (_, addr) = next((k, v) for k, v in served["servers"].items() if served["store"].open(k).live_count)
    idx = served["store"].open(key)
    c = IndexClient(addr)
    r = c.search(idx.vectors[:2], 3)
    assert [hl.hits[0].id for hl in r.results] == idx.ids[:2].tolist()
    import grpc

    with pytest.raises(grpc.RpcError) as e:
        c.search(idx.vectors[:1], 3, bundle="f" * 64)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        c.search(np.ones((1, 7), np.float32), 3)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rest_search_add_delete_with_real_photos(served, grocery_root):
    from spnas.app.retrieval_eval import originals as _originals
    from training.datasets import load_data

    url = served["url"]
    data = load_data(compose("serve", ["bundle=x", f"data.root={grocery_root}", "data.train_limit=240",
                                       "data.test_limit=20", "data.val_limit=10"]).data)
    photo = _originals(data.train, data.train.images)[5]
    r = httpx.post(f"{url}/search", files={"image": ("p.jpg", _jpeg(photo), "image/jpeg")}, data={"k": "5"}, timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["id"] == 5 and res[0]["score"] > 0.98  # its own listing (re-encoded JPEG)
    v = served["embedder"].embed([photo])[0].tolist()
    r = httpx.post(f"{url}/search", json={"vector": v, "k": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == 5
    # a new listing goes to the current hour and is found; a sold one disappears
    new = _originals(data.test, data.test.images)[0]
    r = httpx.post(f"{url}/items", files=[("images", ("n.jpg", _jpeg(new), "image/jpeg"))],
                   data={"ids": str(2**62 + 7)}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/search", files={"image": ("n.jpg", _jpeg(new), "image/jpeg")}, timeout=30)
    assert r.json()["results"][0]["id"] == 2**62 + 7
    assert httpx.delete(f"{url}/items/5", timeout=30).json()["deleted"] == 1
    r = httpx.post(f"{url}/search", json={"vector": v, "k": 10}, timeout=30)
    assert 5 not in [h["id"] for h in r.json()["results"]]
    # a time window only returns listings inside it
    now = int(time.time())
    r = httpx.post(f"{url}/search", json={"vector": v, "k": 10, "start": now - 3600 * 6, "end": now + 10}, timeout=30)
    assert all(now - 3600 * 6 <= h["ts"] < now + 10 for h in r.json()["results"])
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/search" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


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
def test_rest_rejects_bad_uploads_with_4xx(served, grocery_root, name, body, ctype, code):
    if body is None:
        photo, _ = _grocery_photos(grocery_root, 1)
        body = _jpeg(photo[0])[:1500]
    r = httpx.post(f"{served['url']}/search", files={"image": (name, body, ctype)}, timeout=30)
    assert r.status_code == code, r.text
    assert r.json()["detail"]


def test_rest_rejects_bad_parameters(served):
    url = served["url"]
    assert httpx.post(f"{url}/search", json={"vector": [1.0, 2.0]}).status_code == 422
    assert httpx.post(f"{url}/search", json={"vector": [0.1] * 1024, "k": 0}).status_code == 422
    assert httpx.post(f"{url}/search", json={"vector": [0.1] * 1024, "start": "yesterday"}).status_code == 422
    assert httpx.post(f"{url}/search", content=b"{bad", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{url}/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.post(f"{url}/search", files={"other": ("a", b"x", "image/jpeg")}).status_code == 422
    r = httpx.post(f"{url}/items", files=[("images", ("a.jpg", b"\xff\xd8\xffxx", "image/jpeg"))], data={"ids": "a,b"})
    assert r.status_code == 422
