"""The partition lifecycle with an injected clock: a new hour gets its partition and service as the
clock advances, finished hours roll into days and days into months (scheduled, and by the cron
command while services run), retired services exit, queries use the coarsest partitions."""

import asyncio
import datetime as dt
import time

import httpx
import numpy as np

from retrieval.partitions import partition_key

from ..conftest import compose
from .conftest import Deployment, jpeg, make_token, serve_overrides, wait_for

UTC = dt.timezone.utc
T0 = int(dt.datetime(2025, 1, 15, 10, 59, 0, tzinfo=UTC).timestamp())  # one minute before 11:00


def _keys_served(d):
    from retrieval.gateway import DirectoryResolver

    return sorted(DirectoryResolver(d.s["discovery"], ttl_s=0).endpoints())


def _gateway_sees(d, keys):
    """The gateway's /ready lists exactly `keys` as services, all up (its view of the discovery folder)."""
    r = httpx.get(f"{d.url}/ready", timeout=5)
    return r.status_code == 200 and sorted(r.json()["services"]) == sorted(keys)


def _all_live(d):
    from spnas.app.serve import open_store

    s = open_store(d.cfg, d.store.dim)
    keys = s.keys()
    absorbed = {a for k in keys for a in s.partition(k).absorbed}
    return sorted(np.concatenate([s.partition(k).live()[0] for k in keys if k not in absorbed]).tolist())


def test_hour_rollover_rollups_and_retirement(small_bundle, grocery_root, tmp_path):
    from retrieval.embedders import make_embedder
    from retrieval.gateway import DirectoryResolver, create_app
    from spnas.app.serve import compact_once
    from spnas_core.images import decode_rgb

    clock = [float(T0)]
    token, tf = make_token(tmp_path)
    cfg = compose("serve", serve_overrides(small_bundle, grocery_root, tmp_path, tf, n=60) +
                  ["seed_hours=3", "compact_every_s=3600", "precreate_s=120"])
    d = Deployment(cfg, token, clock=lambda: clock[0], loop=False)
    try:
        seeded = list(range(60))
        # at 10:59 the finished hours of today are in their day; this hour and the next have partitions
        assert d.store.keys() == ["h/2025-01-15T10", "h/2025-01-15T11", "d/2025-01-15"]
        assert _keys_served(d) == sorted(d.store.keys())
        assert _all_live(d) == seeded

        # an in-process gateway on the same fake clock: a default add (no ts) goes to the hour it is now
        app = create_app(lambda: make_embedder("litert", cfg.bundle), DirectoryResolver(d.s["discovery"]),
                         cfg.limits, token=token, state_dir=tmp_path / "gw2", clock=lambda: clock[0])
        photo = jpeg(decode_rgb(sorted((grocery_root / "test").rglob("*.jpg"))[3]))

        async def add(item_id: int):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
                gw = app.app.state.gateway  # the FastAPI app behind the body limit
                await asyncio.to_thread(gw.maintain)  # read the live ids (the lifespan thread does it when served)
                return await c.post("/items", files=[("images", ("a.jpg", photo, "image/jpeg"))],
                                    data={"ids": str(item_id)}, headers={"Authorization": f"Bearer {token}"})

        r = asyncio.run(add(100))
        assert r.status_code == 200 and r.json()["added"] == {"h/2025-01-15T10": 1}, r.text
        clock[0] = T0 + 65  # 11:00:05: the hour changed; adds keep working
        d.sup.tick()
        r = asyncio.run(add(101))
        assert r.status_code == 200 and r.json()["added"] == {"h/2025-01-15T11": 1}, r.text

        # 12:10: the supervisor starts 12:00's partition; a cron job rolls 10:00 and 11:00 into the day
        clock[0] = T0 + 71 * 60
        d.sup.last_compaction = clock[0]  # the cron command does this round, not the schedule
        d.sup.tick()
        assert "h/2025-01-15T12" in d.store.keys()
        rep = compact_once(cfg, now=clock[0])
        assert rep.rolled == {"d/2025-01-15": ["h/2025-01-15T10", "h/2025-01-15T11"]}
        day = ["d/2025-01-15", "h/2025-01-15T12"]
        wait_for(lambda: d.sup.tick() or _keys_served(d) == day, 30, "retired hourly services to exit and withdraw")
        assert sorted(d.sup.services) == day
        wait_for(lambda: _gateway_sees(d, day), 30, "the gateway to see the day's services")
        assert _all_live(d) == seeded + [100, 101]
        vec = d.embedder.embed([decode_rgb(sorted((grocery_root / "test").rglob("*.jpg"))[3])])[0]
        window = [T0 - 11 * 3600, T0 + 13 * 3600]
        r = httpx.post(f"{d.url}/search", json={"vector": vec.tolist(), "k": 5, "start": window[0], "end": window[1]})
        assert r.status_code == 200 and r.json()["partitions"] == ["d/2025-01-15", "h/2025-01-15T12"], r.text
        assert {100, 101} <= {h["id"] for h in r.json()["results"]}

        # the next day: the schedule rolls the last hour into its day and the finished day into its month
        clock[0] = T0 + 14 * 3600  # 2025-01-16T00:59
        d.sup.tick()
        month = ["h/2025-01-16T00", "h/2025-01-16T01", "m/2025-01"]
        wait_for(lambda: d.sup.tick() or _keys_served(d) == month, 30, "the day to roll into its month")
        wait_for(lambda: _gateway_sees(d, month), 30, "the gateway to see the month's services")
        assert _all_live(d) == seeded + [100, 101]
        r = httpx.post(f"{d.url}/search", json={"vector": vec.tolist(), "k": 5})
        assert r.json()["partitions"] == ["m/2025-01", "h/2025-01-16T00", "h/2025-01-16T01"]
        ids = [h["id"] for h in r.json()["results"]]
        assert len(ids) == len(set(ids)) and {100, 101} <= set(ids)
    finally:
        d.close()


def test_compaction_command_is_idempotent(small_bundle, tmp_path):
    """`spnas-serve command=compact` on a store with nothing to roll, twice: no change, no error."""
    from spnas.app.serve import compact_once

    cfg = compose("serve", [f"bundle={small_bundle}", f"index_dir={tmp_path / 'i'}"])
    assert compact_once(cfg, now=time.time()).rolled == {}
    assert compact_once(cfg, now=time.time()).rolled == {}
    assert partition_key(0) == "h/1970-01-01T00"
