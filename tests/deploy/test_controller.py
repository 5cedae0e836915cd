"""The IndexServing controller's handlers called against API responses played back under the official
client (tests/k8s_api.py; the responses are objects as the API server sends them: the rendered ones
with the fields the server adds, metadata.uid / generation / resourceVersion and status): an owned
Deployment deleted or edited is put back, an unchanged one is left alone, a resync writes the
IndexServing's status from its Deployment and pods (a fetch that found the version corrupt is
named), a ConfigMap change is rolled out one Deployment at a time, and kopf is told to scan one
namespace only."""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import pytest

try:
    import kopf  # noqa: F401
except ImportError:  # outside CI a missing extra skips; in CI (CI=true) it fails
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("the k8s extra is not installed (pip install -e '.[k8s]')", allow_module_level=True)

from retrieval.k8s import GROUP, PLURAL  # noqa: E402
from retrieval.k8s.controller import (State, config_changed, configure, health, load_settings,  # noqa: E402
                                      reconcile_one, repair)
from retrieval.k8s.render import CONFIG_HASH_ANNOTATION, RenderSettings, render  # noqa: E402

from ..k8s_api import Reply, api_client  # noqa: E402
from .test_manifests import example_cr  # noqa: E402

NS = "photo-search"
NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


def served(obj: dict[str, Any], generation: int = 1, **status: Any) -> dict[str, Any]:
    """A rendered object as the API server returns it: server fields added, a status."""
    o = copy.deepcopy(obj)
    o["metadata"].update(uid=f"uid-{o['kind'].lower()}", resourceVersion="48211", generation=generation,
                         creationTimestamp="2026-12-01T00:40:00Z")
    if o["kind"] == "Deployment":
        want = o["spec"]["replicas"]
        st = {"observedGeneration": generation, "replicas": want, "updatedReplicas": want, "readyReplicas": want,
              "availableReplicas": want}
        st.update(status)
        o["status"] = st
    return o


def cr(name_suffix: str = "", **spec: Any) -> dict[str, Any]:
    c = example_cr()
    c["metadata"].update(generation=1, resourceVersion="48100", creationTimestamp="2026-12-01T00:40:00Z")
    if name_suffix:
        c["metadata"]["name"] += name_suffix
    c["spec"].update(spec)
    return c


def pods(exit_code: int | None = None) -> dict[str, Any]:
    """A PodList with one pod whose fetch initContainer ended with `exit_code` (None: no pod)."""
    items = []
    if exit_code is not None:
        items.append({"metadata": {"name": "idx-x-7d9f-abcde", "namespace": NS},
                      "status": {"phase": "Pending", "initContainerStatuses": [{
                          "name": "fetch", "ready": False, "restartCount": 3, "image": "spnas", "imageID": "",
                          "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                          "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}]}})
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48300"}, "items": items}


def dep_list(*deps: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "48301"},
            "items": list(deps)}


def applied(fake: Any) -> list[str]:
    return [c.body["kind"] for c in fake.calls if c.method == "PATCH"]


# ------------------------------------------------------------------------------------ repair
def test_a_deleted_deployment_is_put_back():
    state = State(settings=RenderSettings())
    c = cr()
    dep = served(render(c, state.settings)[0])
    api, fake = api_client([Reply.json(c), Reply.json(dep)])
    assert repair(dep, "DELETED", api, state) == ["Deployment"]
    get, put = fake.calls
    assert get.verb == "get" and get.path.endswith(f"/{PLURAL}/{c['metadata']['name']}")
    assert put.verb == "patch" and put.path.endswith(f"/deployments/{c['metadata']['name']}")
    assert put.query["fieldManager"] == "spnas-controller" and put.query["force"] == "True"
    assert put.body["spec"]["replicas"] == dep["spec"]["replicas"]


def test_an_edited_deployment_is_repaired_and_an_unchanged_one_left_alone():
    state = State(settings=RenderSettings())
    c = cr()
    dep = served(render(c, state.settings)[0])
    edited = copy.deepcopy(dep)
    edited["spec"]["replicas"] = 0  # someone scaled it down
    edited["spec"]["template"]["spec"]["containers"][0]["args"].append("search.nprobe=1")
    api, fake = api_client([Reply.json(c), Reply.json(dep)])
    assert repair(edited, "MODIFIED", api, state) == ["Deployment"] and applied(fake) == ["Deployment"]
    # status updates and server defaults are not drift: nothing is applied
    dep["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    api, fake = api_client([Reply.json(c)])
    assert repair(dep, "MODIFIED", api, state) == [] and applied(fake) == []
    # an object whose IndexServing is being deleted is left to the garbage collector
    gone = copy.deepcopy(c)
    gone["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    api, fake = api_client([Reply.json(gone)])
    assert repair(dep, "DELETED", api, state) == []
    api, fake = api_client([Reply.json(NOT_FOUND, 404)])
    assert repair(dep, "DELETED", api, state) == []


# ------------------------------------------------------------------------------------ resync + status
def test_a_resync_applies_and_writes_ready_with_the_versions_health():
    state = State(settings=RenderSettings())
    c = cr()
    dep = served(render(c, state.settings)[0])
    api, fake = api_client([Reply.json(dep), Reply.json({}), Reply.json({}), Reply.json({}), Reply.json(dep),
                            Reply.json(pods())])
    st = reconcile_one(c, api, state)
    assert applied(fake) == ["Deployment", "Service", "PodDisruptionBudget"]
    (ready,) = st["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Available")
    assert st["health"] == "serving" and st["availableReplicas"] == st["replicas"] == 2
    assert st["configHash"] == state.settings.config_hash()
    # no pod can start: the fetch found the version corrupt in the repository; Ready is False and says so
    down = served(render(c, state.settings)[0], availableReplicas=0, readyReplicas=0)
    api, _ = api_client([Reply.json(down), Reply.json({}), Reply.json({}), Reply.json({}), Reply.json(down),
                         Reply.json(pods(exit_code=7))])
    st2 = reconcile_one({**c, "status": {"conditions": st["conditions"]}}, api, state)
    (ready2,) = st2["conditions"]
    assert (ready2["status"], ready2["reason"], st2["health"]) == ("False", "VersionCorrupt", "down")
    assert "build-due" in ready2["message"]
    # a status that did not change keeps its transition time
    later = health(c, dep, [], st["conditions"], now="2030-01-01T00:00:00Z", settings=state.settings)
    assert later["conditions"][0]["lastTransitionTime"] == ready["lastTransitionTime"]


def test_a_config_change_rolls_one_deployment_at_a_time():
    old = RenderSettings()
    new = RenderSettings(image="registry.example.com/spnas:0.3.0")
    state = State(settings=new)
    a, b = cr(), cr("b")
    dep_a, dep_b = served(render(a, old)[0]), served(render(b, old)[0])
    rolled_a = served(render(a, new)[0], generation=2, updatedReplicas=1, availableReplicas=2, replicas=3)
    # A's turn: nothing else rolls, so A gets the new settings
    api, fake = api_client([Reply.json(dep_a), Reply.json(dep_list(dep_a, dep_b)), Reply.json({}), Reply.json({}),
                            Reply.json({}), Reply.json(rolled_a), Reply.json(pods())])
    reconcile_one(a, api, state)
    assert applied(fake) == ["Deployment", "Service", "PodDisruptionBudget"]
    assert fake.calls[2].body["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == \
        new.config_hash()
    assert state.rolling[0] == a["metadata"]["name"]
    # B waits while A rolls (just applied; then: its pods not all updated)
    api, fake = api_client([Reply.json(dep_b), Reply.json({}), Reply.json({}), Reply.json(dep_b), Reply.json(pods())])
    st = reconcile_one(b, api, state)
    assert applied(fake) == ["Service", "PodDisruptionBudget"]
    assert st["conditions"][-1]["type"] == "ConfigRolledOut" and st["conditions"][-1]["reason"] == "Waiting"
    state.rolling = (a["metadata"]["name"], time.monotonic() - 60)
    api, fake = api_client([Reply.json(dep_b), Reply.json(rolled_a), Reply.json({}), Reply.json({}),
                            Reply.json(dep_b), Reply.json(pods())])
    reconcile_one(b, api, state)
    assert "Deployment" not in applied(fake)
    # A settled: B's turn
    settled_a = served(render(a, new)[0], generation=2)
    api, fake = api_client([Reply.json(dep_b), Reply.json(settled_a), Reply.json(dep_list(settled_a, dep_b)),
                            Reply.json({}), Reply.json({}), Reply.json({}), Reply.json(dep_b), Reply.json(pods())])
    reconcile_one(b, api, state)
    assert applied(fake) == ["Deployment", "Service", "PodDisruptionBudget"]
    assert state.rolling[0] == b["metadata"]["name"]


def test_settings_come_from_the_watched_configmap_and_scanning_stays_in_the_namespace(monkeypatch):
    import kopf

    from retrieval.k8s import controller

    cm = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "spnas-config", "namespace": NS},
          "data": {"SPNAS_INDEX_IMAGE": "r/spnas:9", "SPNAS_INDEX_REPLICAS": "3"}}
    api, fake = api_client([Reply.json(cm)])
    got = load_settings(api, NS)
    assert (got.image, got.replicas) == ("r/spnas:9", 3) and fake.calls[0].verb == "get"
    monkeypatch.setattr(controller, "STATE", State(settings=RenderSettings()))
    monkeypatch.setattr(controller, "api_client", lambda: (_ for _ in ()).throw(RuntimeError("no cluster here")))
    settings = kopf.OperatorSettings()
    configure(settings=settings)
    assert settings.scanning.disabled is True  # no cluster-wide CRD / namespace scanning (403s)
    assert settings.watching.client_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    config_changed(event={"type": "MODIFIED", "object": cm})
    assert controller.STATE.settings.image == "r/spnas:9"


def calls_of_a_controller() -> set[tuple[str, str, str]]:
    """(group, resource, verb) of what the handlers above call (the Role must grant them)."""
    state = State(settings=RenderSettings())
    c = cr()
    dep = served(render(c, state.settings)[0])
    replies = [Reply.json(c), Reply.json(dep),  # repair
               Reply.json(dep), Reply.json({}), Reply.json({}), Reply.json({}), Reply.json(dep),
               Reply.json(pods()),  # resync
               Reply.json({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "spnas-config"}, "data": {}})]
    api, fake = api_client(replies)
    repair(dep, "DELETED", api, state)
    reconcile_one(c, api, state)
    load_settings(api, NS)
    state.settings = RenderSettings(image="x/spnas:1")
    api2, fake2 = api_client([Reply.json(dep), Reply.json(dep_list(dep)), Reply.json({}), Reply.json({}),
                              Reply.json({}), Reply.json(dep), Reply.json(pods())])
    reconcile_one(c, api2, state)
    assert (GROUP, PLURAL, "get") in fake.verbs()
    return fake.verbs() | fake2.verbs()
