"""The gateway's resolver on Kubernetes: the ready endpoints of the index services' EndpointSlices.

    resolver=kubernetes               the gateway's own namespace (its service account's)
    resolver=kubernetes:<namespace>

It lists the EndpointSlices labelled as index services (`INDEX_SELECTOR`; an EndpointSlice carries
its Service's labels), then watches them from the list's resourceVersion, so a version that becomes
ready or a pod that goes away reaches the gateway's next refresh without polling the API server.
A watch the server ends (its timeout) is resumed from the last resourceVersion seen; one that has
expired (410 Gone: the server no longer has that version) is replaced by a fresh list. The gateway
then asks each address for its health and what it serves (`GrpcBackends`), so the resolver needs
to know nothing about versions.

Nothing waits on the API server unbounded: every call has a client-side timeout (a list `request_timeout_s`;
a watch `idle_timeout_s` between two messages, so a half-open connection is abandoned and listed again),
the state is listed afresh at least every `relist_s`, failures back off up to 30 s, the first list runs
in the background (`addresses()` waits for it at most `first_wait_s`), and `stop()` shuts the open watch
down at once. `staleness_s()` is how long ago the resolver last knew its addresses were current (the
gateway shows it in /ready and /metrics). Calls made, all in one namespace: list and watch of
discovery.k8s.io/v1 endpointslices (what deploy/base/gateway.yaml's Role grants, and nothing more).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from retrieval.interface import Resolver

from . import GRPC_PORT_NAME, INDEX_SELECTOR, own_namespace, selector_string

log = logging.getLogger(__name__)


def load_config() -> Any:
    """An ApiClient: in a pod, its service account; elsewhere the kubeconfig (`$KUBECONFIG`, ~/.kube/config)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def ready_addresses(slice_: Any) -> list[str]:
    """host:port of each ready endpoint of an EndpointSlice (its port named `grpc`); a missing `ready`
    condition counts as ready, as the API documents."""
    port = next((p.port for p in slice_.ports or [] if p.name == GRPC_PORT_NAME and p.port), None)
    if port is None:
        return []
    out = []
    for ep in slice_.endpoints or []:
        cond = ep.conditions
        if cond is not None and cond.ready is False:
            continue
        for a in ep.addresses or []:
            out.append(f"[{a}]:{port}" if ":" in a else f"{a}:{port}")
    return out


class KubernetesResolver(Resolver):
    """Addresses of ready index-service endpoints, kept current by a list + watch thread."""

    def __init__(self, namespace: str | None = None, api_client: Any = None, watch_timeout_s: int = 240,
                 selector: dict[str, str] | None = None, start: bool = True, *, request_timeout_s: float = 10.0,
                 idle_timeout_s: float = 90.0, relist_s: float = 600.0, first_wait_s: float = 2.0) -> None:
        self.namespace = namespace or own_namespace()
        self._api_client, self._api = api_client, None
        self.selector = selector_string(selector or INDEX_SELECTOR)
        self.watch_timeout_s, self.request_timeout_s = watch_timeout_s, request_timeout_s
        self.idle_timeout_s, self.relist_s, self.first_wait_s = idle_timeout_s, relist_s, first_wait_s
        self.resource_version: str | None = None
        self.slices: dict[str, list[str]] = {}
        self.relists = 0
        self.failures = 0
        self.synced_at: float | None = None  # monotonic time the addresses were last known current
        self.listed_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listed = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None
        self._start = start

    @property
    def api(self) -> Any:
        """discovery.k8s.io/v1, made on first use (so a gateway starts while the API server is away)."""
        if self._api is None:
            from kubernetes import client

            self._api = client.DiscoveryV1Api(self._api_client if self._api_client is not None else load_config())
        return self._api

    # ------------------------------------------------------------------ what the gateway calls
    def addresses(self) -> list[str]:
        if self._start and self._thread is None:
            self._thread = threading.Thread(target=self.run, name="k8s-resolver", daemon=True)
            self._thread.start()
            self._listed.wait(self.first_wait_s)  # a hanging API server never holds the gateway's start
        with self._lock:
            return sorted({a for addrs in self.slices.values() for a in addrs})

    def staleness_s(self) -> float:
        """Seconds since the addresses were last known current (infinite before the first list)."""
        return float("inf") if self.synced_at is None else time.monotonic() - self.synced_at

    # ------------------------------------------------------------------ list + watch
    def relist(self) -> None:
        """Every labelled EndpointSlice now, and the resourceVersion to watch from."""
        r = self.api.list_namespaced_endpoint_slice(self.namespace, label_selector=self.selector,
                                                    _request_timeout=(self.request_timeout_s, self.request_timeout_s))
        with self._lock:
            self.slices = {s.metadata.name: ready_addresses(s) for s in r.items}
            self.resource_version = r.metadata.resource_version
            self.relists += 1
            self.synced_at = self.listed_at = time.monotonic()
        self._listed.set()

    def apply(self, event: dict[str, Any]) -> None:
        """One watch event (ADDED / MODIFIED / DELETED; BOOKMARK only moves the resourceVersion)."""
        kind, obj = event["type"], event["object"]
        with self._lock:
            if kind in ("ADDED", "MODIFIED"):
                self.slices[obj.metadata.name] = ready_addresses(obj)
            elif kind == "DELETED":
                self.slices.pop(obj.metadata.name, None)
            self.synced_at = time.monotonic()

    def watch_once(self) -> None:
        """Follow the changes from the last resourceVersion until the server ends the watch; a 410 Gone
        (expired) lists again. No message for `idle_timeout_s` raises (the caller lists again)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        w = self._watch = watch.Watch()
        if self._stop.is_set():
            return
        try:
            for event in w.stream(self.api.list_namespaced_endpoint_slice, self.namespace,
                                  label_selector=self.selector, resource_version=self.resource_version,
                                  timeout_seconds=self.watch_timeout_s, allow_watch_bookmarks=True,
                                  _request_timeout=(self.request_timeout_s, self.idle_timeout_s)):
                self.apply(event)
                if w.resource_version:
                    self.resource_version = w.resource_version
                if self._stop.is_set():
                    w.stop()
            if not self._stop.is_set():
                self.synced_at = time.monotonic()  # the server ended the watch cleanly: nothing was missed
        except ApiException as e:
            if e.status != 410:
                raise
            log.info("the EndpointSlice watch expired (410 Gone at resourceVersion %s): listing again",
                     self.resource_version)
            self.relist()
        finally:
            self._watch = None

    def run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                due = self.listed_at is None or time.monotonic() - self.listed_at >= self.relist_s
                if self.resource_version is None or due:
                    self.relist()
                self.watch_once()
                delay = 1.0
            except Exception as e:
                if self._stop.is_set():
                    break
                self.failures += 1
                log.warning("watching the index services' EndpointSlices failed (%s); listing again in %.0f s", e,
                            delay)
                self.resource_version = None  # list again: changes may have been missed
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread: an open watch is shut down at once (its socket), a list in flight times out."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while True:
            # Watch.stop() shuts the socket only once the response has begun; a watch still waiting for its
            # headers is stopped on a later round, as soon as they arrive (a one-time stop left it blocked until
            # its idle timeout)
            w = self._watch
            if w is not None:
                w.stop()
            t = self._thread
            left = deadline - time.monotonic()
            if t is None or t is threading.current_thread() or not t.is_alive() or left <= 0:
                return
            t.join(min(0.05, left))
