"""The operator of IndexServing resources (kopf): each one becomes the Deployment, Service and
PodDisruptionBudget that `render` makes of it, applied server-side, and is kept so.

    kopf run --standalone --namespace=<ns> -m retrieval.k8s.controller     # deploy/base/controller.yaml

It reconciles, not only reacts:

- on create, on a change of the spec and on resume (the controller restarted) it applies the objects;
- an owned Deployment, Service or PodDisruptionBudget that is deleted, or whose spec drifts from what
  renders (someone edited it), is applied again at once (`repair`, on their watch events);
- every `RESYNC_S` each IndexServing is applied again and its status written (`resync`): conditions
  (`Ready`, with the version's health: serving, degraded, down, and why, e.g. a fetch that found the
  version corrupt), replicas, the settings' hash its pods run with;
- the settings come from the ConfigMap `spnas-config`, watched: a change is rolled out gradually, one
  index Deployment at a time (the next waits until the one before has all its pods updated and
  available), not every version at once.

Nothing is done on delete: the objects are owned by the resource, and Kubernetes' garbage collector
removes them. Cluster-wide scanning is off (`--namespace`: the Role grants one namespace only).
Calls made, in its namespace (what deploy/base/controller.yaml's Role grants): list/watch/get/patch
of indexservings, patch of their status, update of their finalizers (owner references that block
deletion, where OwnerReferencesPermissionEnforcement is on), list/watch/get/create/patch of
deployments, services and poddisruptionbudgets, list/watch/get of configmaps, list of pods,
create of events.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import kopf

from . import API_VERSION, COMPONENT_LABEL, GROUP, INDEX_COMPONENT, INDEX_SELECTOR, INSTANCE_LABEL, \
    MANAGED_BY_LABEL, PLURAL, own_namespace, selector_string
from .render import CONFIG_HASH_ANNOTATION, RenderSettings, render, replicas_of

log = logging.getLogger(__name__)
FIELD_MANAGER = "spnas-controller"
RESYNC_S = 60.0
SETTLE_S = 10.0  # a Deployment just applied counts as rolling this long, whatever its status says yet
OWNED = {"Deployment": ("apps", "v1", "deployments"), "Service": ("", "v1", "services"),
         "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets")}
OWNED_LABELS = {COMPONENT_LABEL: INDEX_COMPONENT, MANAGED_BY_LABEL: FIELD_MANAGER}


@dataclass
class State:
    """What the controller knows between handler calls: the settings (from the ConfigMap) and the
    Deployment whose config rollout is in progress."""

    settings: RenderSettings = field(default_factory=RenderSettings.from_env)
    rolling: tuple[str, float] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = State()


def api_client() -> Any:
    from .resolver import load_config

    return load_config()


# ------------------------------------------------------------------------------------ applying
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


def covers(want: Any, have: Any) -> bool:
    """Whether `have` holds everything `want` sets (the API server adds defaults; those are not drift).
    Lists must match in length and element by element."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and covers(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(covers(a, b) for a, b in zip(want, have))
    if isinstance(want, (int, float)) and isinstance(have, (int, float)) and not isinstance(want, bool):
        return want == have
    return want == have or str(want) == str(have)


def _json(r: Any) -> Any:
    import json

    return json.loads(r.data)


def _get(kind: str, name: str, ns: str, api_client: Any) -> dict[str, Any] | None:
    """An object as plain JSON (as the API sends it), or None when it does not exist."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    raw = {"_preload_content": False}
    read = {"Deployment": lambda: client.AppsV1Api(api_client).read_namespaced_deployment(name, ns, **raw),
            "Service": lambda: client.CoreV1Api(api_client).read_namespaced_service(name, ns, **raw),
            "PodDisruptionBudget": lambda: client.PolicyV1Api(api_client).read_namespaced_pod_disruption_budget(
                name, ns, **raw),
            "IndexServing": lambda: client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                GROUP, API_VERSION, ns, PLURAL, name, **raw)}[kind]
    try:
        return _json(read())
    except ApiException as e:
        if e.status == 404:
            return None
        raise


# ------------------------------------------------------------------------------------ status
def _settled(dep: Mapping[str, Any]) -> bool:
    """Every pod of the Deployment updated to its template and available."""
    spec, st, meta = dep.get("spec", {}), dep.get("status", {}) or {}, dep.get("metadata", {})
    want = spec.get("replicas", 1)
    return (st.get("observedGeneration", 0) >= meta.get("generation", 0) and st.get("updatedReplicas", 0) >= want
            and st.get("availableReplicas", 0) >= want and st.get("replicas", 0) <= want)


def health(serving: Mapping[str, Any], dep: Mapping[str, Any] | None, pods: list[Mapping[str, Any]],
           previous: list[Mapping[str, Any]] | None = None, now: str | None = None,
           settings: RenderSettings | None = None) -> dict[str, Any]:
    """IndexServing status from its Deployment and pods: the `Ready` condition (True while at least one pod
    serves the version), health (serving: all pods; degraded: some; down: none) and why."""
    now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    spec = serving["spec"]
    want = replicas_of(spec, settings or STATE.settings)
    if dep is None:
        avail, reason, msg = 0, "NotCreated", "its Deployment does not exist yet"
    else:
        st = dep.get("status", {}) or {}
        avail, want = st.get("availableReplicas", 0) or 0, dep.get("spec", {}).get("replicas", want)
        reason, msg = "Available", f"{avail}/{want} pods serve version {spec['version']}"
        if avail == 0:
            reason, msg = "Unavailable", f"no pod serves version {spec['version']} yet"
            for p in pods:
                for c in (p.get("status", {}) or {}).get("initContainerStatuses", []) or []:
                    term = (c.get("state", {}) or {}).get("terminated") or \
                           (c.get("lastState", {}) or {}).get("terminated") or {}
                    if c.get("name") == "fetch" and term.get("exitCode") == 7:
                        reason = "VersionCorrupt"
                        msg = (f"the fetch of {spec['url']} found files that do not match the manifest; the next "
                               f"build-due of {spec['granularity']} {spec['period']} builds it again")
                    elif c.get("name") == "fetch" and term.get("exitCode") not in (None, 0) and reason != "VersionCorrupt":
                        reason, msg = "FetchFailed", f"fetching {spec['url']} failed (exit {term.get('exitCode')})"
        elif avail < want:
            reason = "Degraded"
    ready = "True" if avail >= 1 else "False"
    old = next((c for c in previous or [] if c.get("type") == "Ready"), None)
    since = old["lastTransitionTime"] if old and old.get("status") == ready and old.get("lastTransitionTime") else now
    state = "serving" if avail >= want and avail > 0 else "degraded" if avail else "down"
    tmpl = ((dep or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}) or {})
    return {"conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": msg,
                            "lastTransitionTime": since}],
            "health": state, "replicas": want, "availableReplicas": avail,
            "configHash": tmpl.get(CONFIG_HASH_ANNOTATION), "observedGeneration": serving["metadata"].get("generation")}


def pods_of(name: str, ns: str, api_client: Any) -> list[dict[str, Any]]:
    from kubernetes import client

    sel = selector_string({**INDEX_SELECTOR, INSTANCE_LABEL: name})
    return _json(client.CoreV1Api(api_client).list_namespaced_pod(ns, label_selector=sel,
                                                                  _preload_content=False)).get("items", [])


# ------------------------------------------------------------------------------------ reconciling
def _may_roll(name: str, ns: str, api_client: Any, state: State) -> bool:
    """The gate of a config rollout: no other index Deployment is still rolling to the new settings."""
    from kubernetes import client

    if state.rolling and state.rolling[0] != name:
        if time.monotonic() - state.rolling[1] < SETTLE_S:
            return False
        dep = _get("Deployment", state.rolling[0], ns, api_client)
        if dep is not None and not _settled(dep):
            return False
    r = client.AppsV1Api(api_client).list_namespaced_deployment(ns, label_selector=selector_string(
        {**INDEX_SELECTOR, MANAGED_BY_LABEL: FIELD_MANAGER}), _preload_content=False)
    want = state.settings.config_hash()
    for d in _json(r).get("items", []):
        ann = d.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}) or {}
        if d["metadata"]["name"] != name and ann.get(CONFIG_HASH_ANNOTATION) == want and not _settled(d):
            return False
    return True


def reconcile_one(serving: Mapping[str, Any], api_client: Any, state: State = STATE,
                  new: bool = False) -> dict[str, Any]:
    """Apply the objects of one IndexServing and return its status. A Deployment that runs other settings
    than the ConfigMap's is rolled only when the gate lets it (`_may_roll`); `new` (create, spec change)
    applies at once."""
    meta = serving["metadata"]
    name, ns = meta["name"], meta["namespace"]
    objs = render(dict(serving), state.settings)
    with state.lock:
        dep = _get("Deployment", name, ns, api_client)
        running = ((dep or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}) or
                   {}).get(CONFIG_HASH_ANNOTATION)
        rollout = dep is not None and running != state.settings.config_hash()
        if rollout and not new and not _may_roll(name, ns, api_client, state):
            objs = [o for o in objs if o["kind"] != "Deployment"]  # its turn comes at a later resync
            waiting = True
        else:
            waiting = False
            if rollout:
                state.rolling = (name, time.monotonic())
        for o in objs:
            apply(o, api_client)
    dep = _get("Deployment", name, ns, api_client)
    out = health(serving, dep, pods_of(name, ns, api_client) if dep is not None else [],
                 (serving.get("status") or {}).get("conditions"), settings=state.settings)
    if waiting:
        out["conditions"].append({"type": "ConfigRolledOut", "status": "False", "reason": "Waiting",
                                  "message": "another index Deployment is rolling to the new settings first",
                                  "lastTransitionTime": out["conditions"][0]["lastTransitionTime"]})
    return out


def repair(obj: Mapping[str, Any], event: str, api_client: Any, state: State = STATE) -> list[str]:
    """An owned object deleted, or changed so that it no longer covers what renders: apply its owner's
    objects again. Returns the kinds applied (empty: nothing to repair)."""
    meta = obj.get("metadata", {})
    owner = next((r for r in meta.get("ownerReferences", []) or [] if r.get("kind") == "IndexServing"), None)
    if owner is None:
        return []
    serving = _get("IndexServing", owner["name"], meta["namespace"], api_client)
    if serving is None or serving["metadata"].get("deletionTimestamp"):
        return []  # the owner is going: the garbage collector removes the rest
    want = next(o for o in render(serving, state.settings) if o["kind"] == obj.get("kind"))
    if event != "DELETED":
        running = ((obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})) or {}).get(
            CONFIG_HASH_ANNOTATION)
        if obj.get("kind") == "Deployment" and running != state.settings.config_hash():
            return []  # not drift: a config rollout not yet its turn (resync rolls it)
        if covers(want["spec"], obj.get("spec", {})) and covers(want["metadata"].get("labels", {}),
                                                                meta.get("labels", {})):
            return []
    apply(want, api_client)
    log.info("repaired %s/%s of %s (%s)", want["kind"], want["metadata"]["name"], owner["name"], event.lower())
    return [want["kind"]]


def load_settings(api_client: Any, ns: str, name: str = "spnas-config") -> RenderSettings:
    """The settings from the ConfigMap (the environment's where it cannot be read)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        cm = client.CoreV1Api(api_client).read_namespaced_config_map(name, ns)
    except ApiException as e:
        log.warning("reading ConfigMap %s failed (%s); using the environment's settings", name, e.reason)
        return RenderSettings.from_env()
    return RenderSettings.from_env(cm.data or {})


# ------------------------------------------------------------------------------------ kopf handlers
@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 20  # INFO and above as Kubernetes events
    settings.scanning.disabled = True  # one namespace (--namespace): no cluster-wide listing of CRDs/namespaces
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330  # a half-open watch ends and is resumed
    try:
        STATE.settings = load_settings(api_client(), own_namespace())
    except Exception as e:  # no cluster configuration (tests): the environment
        log.warning("settings from the environment (%s)", e)


@kopf.on.resume(GROUP, API_VERSION, PLURAL)
@kopf.on.create(GROUP, API_VERSION, PLURAL)
@kopf.on.update(GROUP, API_VERSION, PLURAL, field="spec")
def reconcile(body: kopf.Body, patch: kopf.Patch, logger: Any, reason: str = "", **_: Any) -> None:
    st = reconcile_one(body, api_client(), new=reason in ("create", "update"))
    patch.status.update(st)
    logger.info(f"applied the objects of {body['metadata']['name']}: {st['health']}")


@kopf.timer(GROUP, API_VERSION, PLURAL, interval=RESYNC_S, initial_delay=RESYNC_S / 2)
def resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    patch.status.update(reconcile_one(body, api_client()))


def _owned(kind: str) -> Any:
    group, version, plural = OWNED[kind]

    @kopf.on.event(group, version, plural, labels=OWNED_LABELS)
    def on_owned(event: Mapping[str, Any], **_: Any) -> None:
        if event.get("type") in ("DELETED", "MODIFIED"):
            repair(event["object"], event["type"], api_client())

    on_owned.__name__ = f"repair_{plural}"
    return on_owned


repair_deployments, repair_services, repair_pdbs = (_owned(k) for k in OWNED)


@kopf.on.event("", "v1", "configmaps", when=lambda name, **_: name == STATE.settings.config_map)
def config_changed(event: Mapping[str, Any], **_: Any) -> None:
    """New settings: each IndexServing's next resync rolls its Deployment, one at a time."""
    obj = event.get("object") or {}
    if event.get("type") in ("ADDED", "MODIFIED") and obj.get("data") is not None:
        new = RenderSettings.from_env(obj["data"])
        if new != STATE.settings:
            log.info("settings changed (%s -> %s): rolling the index Deployments one at a time",
                     STATE.settings.config_hash(), new.config_hash())
            STATE.settings = new
