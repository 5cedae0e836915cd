"""The supervised deployment with processes killed (SIGKILL): an index service, the gateway, the
gateway between a transaction's decision and its commits. Searches say what is missing, writes stay
all-or-nothing, deletes are retried, and every acknowledged listing is there exactly once afterwards."""

import time

import httpx
import numpy as np
import pytest

from retrieval.partitions import partition_key

from ..conftest import compose
from .conftest import Deployment, jpeg, make_token, serve_overrides, wait_for


@pytest.fixture(scope="module")
def deployment(small_bundle, grocery_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    token, tf = make_token(tmp)
    d = Deployment(compose("serve", serve_overrides(small_bundle, grocery_root, tmp, tf, n=120)), token)
    yield d
    d.close()


def _photo(grocery_root, i=0):
    from spnas_core.images import decode_rgb

    return decode_rgb(sorted((grocery_root / "test").rglob("*.jpg"))[i])


def _holders(d, item_id):
    """Partitions whose live listings include `item_id`, read from disk by a fresh store."""
    from spnas.app.serve import open_store

    s = open_store(d.cfg, d.store.dim)
    keys = s.keys()
    absorbed = {a for k in keys for a in s.partition(k).absorbed}
    return [k for k in keys if k not in absorbed and item_id in s.partition(k).live()[0]]


def _found(d, vec, item_id, k=20):
    r = httpx.post(f"{d.url}/search", json={"vector": vec.tolist(), "k": k}, timeout=30)
    return r.status_code == 200 and item_id in [h["id"] for h in r.json()["results"]]


def test_one_service_down(deployment, grocery_root):
    d = deployment
    now = int(time.time())
    hour = partition_key(now)
    old = next(k for k in d.store.keys() if not k.startswith("h/") and d.store.partition(k).live()[0].size)
    old_ids, old_vecs, old_ts = d.store.partition(old).live()
    d.pause_supervisor()
    try:
        _service_down(d, grocery_root, now, hour, old, old_ids, old_vecs, old_ts)
    finally:
        d.resume_supervisor()
    d.wait_ready()
    victim = int(old_ids[0])
    wait_for(lambda: not _found(d, old_vecs[0], victim), 30, "the queued delete to be delivered")
    assert _holders(d, victim) == []
    photos = [("images", (f"{i}.jpg", jpeg(_photo(grocery_root, i + 1)), "image/jpeg")) for i in range(2)]
    r = httpx.post(f"{d.url}/items", files=photos, data={"ids": "5000,5001", "ts": f"{now},{int(old_ts[0])}"},
                   headers=d.auth, timeout=30)
    assert r.status_code == 200 and len(r.json()["added"]) == 2, r.text
    assert _holders(d, 5000) == [hour] and _holders(d, 5001) == [old]


def _service_down(d, grocery_root, now, hour, old, old_ids, old_vecs, old_ts):
    d.kill_service(old)
    # search answers with the partitions it has and names the missing one
    r = httpx.post(f"{d.url}/search", files={"image": ("q.jpg", jpeg(_photo(grocery_root)), "image/jpeg")},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["partial"] and r.json()["missing"] == [old] and old not in r.json()["partitions"]
    ready = httpx.get(f"{d.url}/ready", timeout=10)
    assert ready.status_code == 503 and ready.json()["services"][old] is False
    assert httpx.get(f"{d.url}/health").status_code == 200, "/health is the gateway process, which is fine"
    # an add spanning the live hour and the dead partition: refused whole, nothing left behind
    photos = [("images", (f"{i}.jpg", jpeg(_photo(grocery_root, i + 1)), "image/jpeg")) for i in range(2)]
    ts = f"{now},{int(old_ts[0])}"
    r = httpx.post(f"{d.url}/items", files=photos, data={"ids": "5000,5001", "ts": ts}, headers=d.auth, timeout=30)
    assert r.status_code == 503 and old in r.json()["detail"] and r.headers["retry-after"], r.text
    assert _holders(d, 5000) == [] and _holders(d, 5001) == []
    assert not d.store.partition(hour).refresh().pending, "the prepared half was aborted"
    # a delete of a listing in the dead partition is queued and reported per partition
    victim = int(old_ids[0])
    r = httpx.delete(f"{d.url}/items/{victim}", headers=d.auth, timeout=30)
    assert r.status_code == 202 and r.json()["deleted"] == "pending", r.text
    assert r.json()["partitions"][old].startswith("retrying")
    r = httpx.post(f"{d.url}/items", files=photos[:1], data={"ids": str(victim)}, headers=d.auth, timeout=30)
    assert r.status_code == 409 and "pending" in r.json()["detail"]
    # then the supervisor restarts the service; the delete is delivered; the add goes through on retry


def test_partial_results_policy_fail(deployment, grocery_root, tmp_path):
    """With partial=fail a search answers 503 naming the missing partition instead of partial results."""
    import asyncio

    from retrieval.config import PartialResults
    from retrieval.embedders import make_embedder
    from retrieval.gateway import DirectoryResolver, create_app

    d = deployment
    old = next(k for k in d.store.keys() if not k.startswith("h/"))
    app = create_app(lambda: make_embedder("litert", d.cfg.bundle), DirectoryResolver(d.s["discovery"]),
                     d.cfg.limits, token=d.token, state_dir=tmp_path / "gw", partial=PartialResults.fail)
    d.pause_supervisor()
    try:
        d.kill_service(old)

        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
                return await c.post("/search", files={"image": ("q.jpg", jpeg(_photo(grocery_root)), "image/jpeg")})

        r = asyncio.run(go())
        assert r.status_code == 503 and old in r.json()["detail"], r.text
    finally:
        d.resume_supervisor()
        d.wait_ready()


def test_gateway_killed_keeps_every_acknowledged_listing(deployment, grocery_root):
    d = deployment
    photo = _photo(grocery_root, 5)
    acked = []
    for i in range(3):
        r = httpx.post(f"{d.url}/items", files=[("images", ("a.jpg", jpeg(photo), "image/jpeg"))],
                       data={"ids": str(7000 + i)}, headers=d.auth, timeout=30)
        assert r.status_code == 200
        acked.append(7000 + i)
    old = d.kill_gateway()
    wait_for(lambda: d.sup.gateway_pid() not in (None, old), 30, "the supervisor to restart the gateway")
    d.wait_ready()
    for i in acked:
        assert len(_holders(d, i)) == 1
    r = httpx.post(f"{d.url}/items", files=[("images", ("a.jpg", jpeg(photo), "image/jpeg"))],
                   data={"ids": str(acked[0])}, headers=d.auth, timeout=30)
    assert r.status_code == 409, "the restarted gateway re-read the live ids from the services"


def test_gateway_killed_between_decision_and_commits(deployment, grocery_root):
    """The coordinator dies right after logging its commit decision: the restarted gateway delivers the
    commits, so the listing spanning two partitions appears in both, once."""
    d = deployment
    now = int(time.time())
    old = next(k for k in d.store.keys() if not k.startswith("h/"))
    from retrieval.partitions import key_range

    past = max(key_range(old)[0], now - 40 * 3600) + 60
    d.sup.env["SPNAS_FAILPOINTS"] = "txn.after_decision"
    pid = d.kill_gateway()
    wait_for(lambda: d.sup.gateway_pid() not in (None, pid), 30, "a gateway armed with the failpoint")
    d.wait_ready()
    armed = d.sup.gateway_pid()
    del d.sup.env["SPNAS_FAILPOINTS"]
    photos = [("images", (f"{i}.jpg", jpeg(_photo(grocery_root, 10 + i)), "image/jpeg")) for i in range(2)]
    with pytest.raises(httpx.HTTPError):  # the gateway dies mid-request: the client gets no answer
        httpx.post(f"{d.url}/items", files=photos, data={"ids": "8000,8001", "ts": f"{now},{past}"},
                   headers=d.auth, timeout=30)
    wait_for(lambda: d.sup.gateway_pid() not in (None, armed), 30, "the gateway to be restarted")
    d.wait_ready()
    wait_for(lambda: len(_holders(d, 8000)) == 1 and len(_holders(d, 8001)) == 1, 30,
             "the decided commits to be delivered")
    from spnas.app.serve import open_store

    s = open_store(d.cfg, d.store.dim)
    assert not any(s.partition(k).pending for k in s.keys())
    vecs = d.embedder.embed([_photo(grocery_root, 10), _photo(grocery_root, 11)])
    assert _found(d, vecs[0], 8000) and _found(d, vecs[1], 8001)
    assert np.isfinite(vecs).all()
