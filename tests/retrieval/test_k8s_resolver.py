"""The gateway's Kubernetes resolver against recorded API responses (tests/retrieval/fixtures/k8s/,
played back under the official client by tests/k8s_api.py): a list, then watches in which a version
becomes ready, a pod goes away, and the watch expires with 410 Gone (a fresh list follows). Over a
real socket (a scripted API server on loopback): a half-open watch is abandoned and listed again, a
hanging first list does not hold the gateway's start, `stop()` ends an open watch at once, and the
staleness figure says how current the addresses are."""

from __future__ import annotations

import os

import pytest

try:
    import kubernetes  # noqa: F401
except ImportError:  # outside CI a missing extra skips; in CI (CI=true) it fails
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("the k8s extra is not installed (pip install -e '.[k8s]')", allow_module_level=True)

from retrieval.k8s import INDEX_SELECTOR, selector_string  # noqa: E402
from retrieval.k8s.resolver import KubernetesResolver  # noqa: E402
from retrieval.resolver import make_resolver  # noqa: E402

from ..k8s_api import Hang, Reply, ScriptedApiServer, api_client  # noqa: E402
from .conftest import wait_for  # noqa: E402

LIST = "recorded-endpointslices-list.json"
READY = "recorded-watch-version-becomes-ready.jsonl"
GONE = "recorded-watch-pod-goes-away.jsonl"
EXPIRED = "recorded-watch-expired-410.jsonl"
RELIST = "recorded-endpointslices-list-after-expiry.json"
MONTH_A, MONTH_B, DAY, HOUR = "10.0.3.17:50051", "10.0.4.22:50051", "10.0.3.31:50051", "10.0.5.9:50051"


def resolver(*fixtures: str) -> tuple[KubernetesResolver, object]:
    api, fake = api_client([Reply.fixture(f) for f in fixtures])
    return KubernetesResolver("photo-search", api_client=api, start=False), fake


def test_the_list_gives_the_ready_endpoints_of_labelled_slices():
    r, fake = resolver(LIST)
    r.relist()
    assert r.addresses() == [MONTH_A, DAY]  # the month's second pod is not ready yet
    call = fake.calls[0]
    assert call.path == "/apis/discovery.k8s.io/v1/namespaces/photo-search/endpointslices"
    assert call.query["labelSelector"] == selector_string(INDEX_SELECTOR) and call.verb == "list"
    assert r.resource_version == "48211"


def test_a_version_becoming_ready_is_added_and_the_watch_resumes_from_the_bookmark():
    r, fake = resolver(LIST, READY, GONE)
    r.relist()
    r.watch_once()  # ADDED (no ready endpoint), MODIFIED (ready), BOOKMARK; then the server ends the watch
    assert r.addresses() == [MONTH_A, DAY, HOUR]
    assert fake.calls[1].verb == "watch" and fake.calls[1].query["resourceVersion"] == "48211"
    assert fake.calls[1].query["allowWatchBookmarks"] == "True"
    r.watch_once()
    assert fake.calls[2].query["resourceVersion"] == "48260"  # from the bookmark, not a fresh list


def test_a_pod_going_away_and_a_retired_version_leave_the_addresses():
    r, _ = resolver(LIST, GONE)
    r.relist()
    r.watch_once()  # the month's first pod terminating then gone (its second ready), the day's slice deleted
    assert r.addresses() == [MONTH_B]


def test_a_watch_expired_with_410_gone_lists_again():
    r, fake = resolver(LIST, READY, EXPIRED, RELIST)
    r.relist()
    r.watch_once()
    r.watch_once()  # 410 Expired: the resolver lists again instead of resuming
    assert [c.verb for c in fake.calls] == ["list", "watch", "watch", "list"]
    assert r.relists == 2 and r.resource_version == "49880"
    assert r.addresses() == [MONTH_B, HOUR]


def test_what_the_resolver_calls():
    """Only list and watch of endpointslices in its namespace (the gateway's Role grants exactly these:
    tests/deploy/test_manifests.py)."""
    r, fake = resolver(LIST, READY, EXPIRED, RELIST)
    r.relist()
    r.watch_once()
    r.watch_once()
    assert fake.verbs() == {("discovery.k8s.io", "endpointslices", "list"),
                            ("discovery.k8s.io", "endpointslices", "watch")}
    assert {c.path for c in fake.calls} == {"/apis/discovery.k8s.io/v1/namespaces/photo-search/endpointslices"}


def test_selected_by_config_without_a_cluster():
    r = make_resolver("kubernetes:photo-search")
    assert isinstance(r, KubernetesResolver) and r.namespace == "photo-search"
    assert make_resolver("dir:/tmp/services").__class__.__name__ == "DirectoryResolver"  # one machine: kept


def test_a_half_open_watch_is_abandoned_and_listed_again():
    """The watch's connection answers its headers, then nothing (a half-open connection): after
    `idle_timeout_s` without a message the resolver lists again, and its addresses are current."""
    import time

    with ScriptedApiServer([Reply.fixture(LIST), Hang(), Reply.fixture(RELIST), Hang()]) as srv:
        r = KubernetesResolver("photo-search", api_client=srv.client(), idle_timeout_s=0.5, request_timeout_s=2,
                               first_wait_s=5)
        try:
            assert r.addresses() == [MONTH_A, DAY]
            wait_for(lambda: r.relists >= 2, 15, "a list after the half-open watch")
            assert r.addresses() == [MONTH_B, HOUR] and r.failures >= 1 and r.staleness_s() < 5
            assert [p.split("?")[0].rsplit("/", 1)[-1] for p in srv.requests[:3]] == ["endpointslices"] * 3
            assert "watch=True" in srv.requests[1] and "watch" not in srv.requests[2]
        finally:
            t = time.monotonic()
            r.stop()
        assert not r._thread.is_alive() and time.monotonic() - t < 3


def test_stop_ends_an_open_watch_at_once():
    import time

    with ScriptedApiServer([Reply.fixture(LIST), Hang()]) as srv:
        r = KubernetesResolver("photo-search", api_client=srv.client(), idle_timeout_s=60, first_wait_s=5)
        r.addresses()
        wait_for(lambda: len(srv.requests) == 2 and r._watch is not None, 10, "the watch to be open")
        t = time.monotonic()
        r.stop()
        assert not r._thread.is_alive() and time.monotonic() - t < 2, "stop() left the watch thread blocked"


def test_stop_ends_a_watch_whose_response_has_not_begun():
    """stop() while the watch request is out but its headers are not back yet (the race the test above can hit
    on a loaded machine): the watch ends as soon as the headers arrive, not at its idle timeout."""
    import time

    with ScriptedApiServer([Reply.fixture(LIST), Hang(delay_s=1.0)]) as srv:
        r = KubernetesResolver("photo-search", api_client=srv.client(), idle_timeout_s=60, first_wait_s=5)
        r.addresses()
        wait_for(lambda: len(srv.requests) == 2, 10, "the watch request to arrive")
        t = time.monotonic()
        r.stop()
        assert not r._thread.is_alive() and time.monotonic() - t < 4, "stop() left the watch thread blocked"


def test_a_hanging_first_list_holds_nothing_and_shows_as_stale():
    """The API server accepts the first list and never answers: `addresses()` returns (empty) within
    `first_wait_s`, the staleness is infinite; the list's client timeout then lets the next one through."""
    import math
    import time

    with ScriptedApiServer([Hang(headers=False), Reply.fixture(LIST), Hang()]) as srv:
        r = KubernetesResolver("photo-search", api_client=srv.client(), request_timeout_s=0.5, idle_timeout_s=30,
                               first_wait_s=0.2)
        try:
            t = time.monotonic()
            assert r.addresses() == [] and time.monotonic() - t < 1.5
            assert math.isinf(r.staleness_s())
            wait_for(lambda: r.addresses() == [MONTH_A, DAY], 15, "the list after the hanging one")
            assert r.staleness_s() < 5
        finally:
            r.stop()
