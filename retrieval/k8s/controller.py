"""The operator of IndexServing resources (kopf): each one becomes the Deployment, Service and
PodDisruptionBudget that `render` makes of it, applied server-side.

    kopf run --standalone --namespace=<ns> -m retrieval.k8s.controller     # deploy/base/controller.yaml

On create, on update of the spec and on resume (the controller restarted) it applies the objects,
so a deleted or edited Deployment comes back at the next event or restart. Nothing is done on
delete: the objects are owned by the resource, and Kubernetes' garbage collector removes them.
Calls made, in its namespace: watch/list/patch of indexservings (kopf keeps its progress in an
annotation), patch of their status, create/patch of deployments, services and poddisruptionbudgets
(server-side apply), create of events.
"""

from __future__ import annotations

from typing import Any

import kopf

from . import API_VERSION, GROUP, PLURAL
from .render import RenderSettings, render

FIELD_MANAGER = "spnas-controller"


def apply(obj: dict[str, Any], api_client: Any = None) -> None:
    """Server-side apply of one rendered object (creates it, or makes it what it renders to)."""
    from kubernetes import client

    kw = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    if obj["kind"] == "Deployment":
        client.AppsV1Api(api_client).patch_namespaced_deployment(name, ns, obj, **kw)
    elif obj["kind"] == "Service":
        client.CoreV1Api(api_client).patch_namespaced_service(name, ns, obj, **kw)
    elif obj["kind"] == "PodDisruptionBudget":
        client.PolicyV1Api(api_client).patch_namespaced_pod_disruption_budget(name, ns, obj, **kw)
    else:  # pragma: no cover - render makes only these
        raise ValueError(f"not a kind the controller applies: {obj['kind']}")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    settings.posting.level = 20  # INFO and above as Kubernetes events


@kopf.on.resume(GROUP, API_VERSION, PLURAL)
@kopf.on.create(GROUP, API_VERSION, PLURAL)
@kopf.on.update(GROUP, API_VERSION, PLURAL, field="spec")
def reconcile(body: kopf.Body, logger: Any, **_: Any) -> dict[str, Any]:
    objs = render(dict(body), RenderSettings.from_env())
    for obj in objs:
        apply(obj)
    logger.info(f"applied {', '.join(o['kind'] for o in objs)} of {body['metadata']['name']}")
    return {"objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objs]}
