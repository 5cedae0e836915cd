"""An index service over gRPC: the standard health service (NOT_SERVING until it caught up with the
listing store), caps on queries and k, the bundle check, listings removed after the build left out
as of the change number asked, and a request it cannot bring up to date refused, not answered stale."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from retrieval.config import SearchParams

from .test_security import BUNDLE, _service


def test_health_caps_bundle_and_removed_listings(tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from retrieval.service import IndexClient

    svc, c = _service(tmp_path)
    try:
        cl = IndexClient(svc.address, 5)
        h = health_pb2_grpc.HealthStub(cl.channel)
        for name in ("", "spnas.retrieval.v2.IndexService"):
            assert h.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
        i = cl.info()
        assert (i.granularity, i.period, i.count, i.factory, i.mmap) == ("hour", "2026-11-26T15", 5, "Flat", True)
        _, ids = cl.search(c.vecs, 5, bundle=BUNDLE)
        assert ids[:, 0].tolist() == c.ids.tolist()
        p = SearchParams()
        cases = [(lambda: cl.search(c.vecs[:1], 2, bundle="e" * 64), grpc.StatusCode.FAILED_PRECONDITION),
                 (lambda: cl.search(c.vecs[:1], 2, bundle=""), grpc.StatusCode.FAILED_PRECONDITION),
                 (lambda: cl.search(np.repeat(c.vecs[:1], p.max_queries + 1, 0), 2, bundle=BUNDLE),
                  grpc.StatusCode.INVALID_ARGUMENT),  # caps on queries per call
                 (lambda: cl.search(c.vecs[:1], p.max_k + 1, bundle=BUNDLE), grpc.StatusCode.INVALID_ARGUMENT),
                 (lambda: cl.search(c.vecs[:1] * 3, 2, bundle=BUNDLE), grpc.StatusCode.INVALID_ARGUMENT),  # not unit
                 (lambda: cl.search(np.ones((1, 5), np.float32), 2, bundle=BUNDLE), grpc.StatusCode.INVALID_ARGUMENT)]
        for call, code in cases:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == code, e.value.details()
        gone = int(c.ids[0])
        c.store.remove(gone)
        seq = c.store.max_seq()
        _, ids = cl.search(c.vecs[:1], 5, bundle=BUNDLE, as_of=seq)  # the service reads the store first
        assert gone not in ids and cl.info().excluded == 1
        _, ids = cl.search(c.vecs[:1], 5, bundle=BUNDLE, as_of=seq - 1)  # as the gateway's delta saw it then
        assert ids[0, 0] == gone
        for ahead in (seq + 1, 2**62):  # a change the store has not reached: refused, not answered as of now
            with pytest.raises(grpc.RpcError) as e:
                cl.search(c.vecs[:1], 5, bundle=BUNDLE, as_of=ahead)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "store is at change" in e.value.details()
        c.store.engine.dispose()
        (tmp_path / "listings.sqlite").rename(tmp_path / "away.sqlite")  # the store goes away ...
        (tmp_path / "listings.sqlite").mkdir()
        with pytest.raises(grpc.RpcError) as e:  # ... so a request needing newer changes is refused
            cl.search(c.vecs[:1], 5, bundle=BUNDLE, as_of=seq + 5)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "listing store" in e.value.details()
        assert cl.search(c.vecs[:1], 5, bundle=BUNDLE, as_of=seq)[1][0, 0] != gone  # what it has seen still answers
    finally:
        svc.stop(0)
    assert not IndexClient(svc.address, 1).serving()
