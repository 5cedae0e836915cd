"""After a build: the IndexServing resources of a namespace made to match the versions the planner uses.

    spnas-index build-due bundle=... servings=kubernetes     # what the CronJobs in deploy/ run

Each planned version gets its IndexServing (server-side apply, so rerunning changes nothing); the
controller turns it into a Deployment, Service and PodDisruptionBudget. Resources of versions no
longer planned (retention removed them, a coarser version or a rebuild replaced them, a new bundle
took over) are deleted, and their objects with them (ownerReferences), but only once every planned
version's Deployment is available: until then the old services keep answering, and the next build
retires them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

from . import GROUP, API_VERSION, INDEX_SELECTOR, INSTANCE_LABEL, MANAGED_BY_LABEL, PLURAL, selector_string

log = logging.getLogger(__name__)
FIELD_MANAGER = "spnas-index"


def changes(existing: Iterable[str], desired: Sequence[dict[str, Any]], available: Iterable[str]
            ) -> tuple[list[dict[str, Any]], list[str]]:
    """(resources to apply, names to delete): every desired one is applied; the others are deleted
    only when every desired one is available (else nothing is deleted yet)."""
    want = {d["metadata"]["name"] for d in desired}
    stale = sorted(set(existing) - want)
    return list(desired), stale if want <= set(available) else []


def served_versions(namespace: str, api_client: Any = None) -> set[tuple]:
    """The versions (`VersionInfo.ref`) that have an IndexServing in the namespace: their pods may start
    (or restart) and fetch them at any time, so retention keeps their files."""
    from kubernetes import client

    if api_client is None:
        from .resolver import load_config

        api_client = load_config()
    items = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        GROUP, API_VERSION, namespace, PLURAL, label_selector=selector_string({MANAGED_BY_LABEL: FIELD_MANAGER}))
    return {(o["spec"]["bundleId"], o["spec"]["granularity"], o["spec"]["period"], o["spec"]["version"])
            for o in items["items"]}


def sync(namespace: str, desired: Sequence[dict[str, Any]], wait_s: float = 300.0, api_client: Any = None,
         poll_s: float = 5.0) -> dict[str, list[str]]:
    """Apply `desired` (IndexServing dicts), then delete the stale ones once the desired are available
    (waiting up to `wait_s`). Returns {"applied", "removed", "kept"}."""
    from kubernetes import client

    if api_client is None:
        from .resolver import load_config

        api_client = load_config()
    custom, apps = client.CustomObjectsApi(api_client), client.AppsV1Api(api_client)
    mine = selector_string({MANAGED_BY_LABEL: FIELD_MANAGER})
    existing = [o["metadata"]["name"] for o in
                custom.list_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL,
                                                     label_selector=mine)["items"]]
    for d in desired:
        custom.patch_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, d["metadata"]["name"], d,
                                              field_manager=FIELD_MANAGER, force=True,
                                              _content_type="application/apply-patch+yaml")

    def available() -> set[str]:
        deps = apps.list_namespaced_deployment(namespace, label_selector=selector_string(INDEX_SELECTOR)).items
        return {d.metadata.labels.get(INSTANCE_LABEL) for d in deps
                if (d.status.available_replicas or 0) >= 1 and (d.status.observed_generation or 0) >= 1}

    deadline = time.monotonic() + wait_s
    _, stale = changes(existing, desired, available())
    while not stale and set(existing) - {d["metadata"]["name"] for d in desired} and time.monotonic() < deadline:
        time.sleep(poll_s)
        _, stale = changes(existing, desired, available())
    for name in stale:
        custom.delete_namespaced_custom_object(GROUP, API_VERSION, namespace, PLURAL, name)
    kept = sorted(set(existing) - {d["metadata"]["name"] for d in desired} - set(stale))
    if kept:
        log.warning("kept %d retired index servings: the planned ones were not all available after %.0f s; the next "
                    "build removes them", len(kept), wait_s)
    return {"applied": [d["metadata"]["name"] for d in desired], "removed": stale, "kept": kept}
