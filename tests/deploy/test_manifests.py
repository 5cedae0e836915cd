"""deploy/ as a reviewer checks it, offline: the overlay renders; every built-in kind validates against
the official schemas; every IndexServing validates against its CRD; every pod has probes, resources
and a non-root, restricted security context; the resolver's labels match what the controller
renders and nothing else; each Role grants exactly what its code calls (recorded by the fake API of
tests/k8s_api.py); the CronJobs run at the cadence docs/kubernetes.md states; the per-version
objects rendered for a given IndexServing are the ones recorded in fixtures/ (stable)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrieval.k8s import API_VERSION, GROUP, INDEX_SELECTOR, KIND, PLURAL
from retrieval.k8s.render import RenderSettings, render

from ..k8s_api import Reply, api_client, rbac_rules
from .conftest import DEPLOY, ROOT, base_files, by_kind, k8s_versions

EXAMPLE = DEPLOY / "examples" / "indexserving.yaml"
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "rendered-indexserving.json"
UID = "0b7c5e8e-9f51-4d2b-8a0e-2f6c1b9d7a31"


def example_cr() -> dict[str, Any]:
    cr = yaml.safe_load(EXAMPLE.read_text())
    cr["metadata"]["uid"] = UID  # the API server sets it; the rendered objects are owned through it
    return cr


def settings_of(docs: list[dict[str, Any]]) -> RenderSettings:
    """The controller's settings as the ConfigMap of these manifests gives them."""
    return RenderSettings.from_env(by_kind(docs, "ConfigMap")["spnas-config"]["data"])


def per_version(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return render(example_cr(), settings_of(docs))


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template: Deployments' and CronJobs'."""
    out = {}
    for d in docs:
        if d["kind"] == "Deployment":
            out[f"Deployment/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            out[f"CronJob/{d['metadata']['name']}"] = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


# ------------------------------------------------------------------------------------ render + validate
def test_the_overlay_renders_into_one_namespace_with_its_image(overlay):
    kinds = sorted({d["kind"] for d in overlay})
    assert kinds == sorted({"Namespace", "CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding",
                            "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "CronJob", "NetworkPolicy"})
    cluster_scoped = {"Namespace", "CustomResourceDefinition"}
    assert {d["metadata"].get("namespace") for d in overlay if d["kind"] not in cluster_scoped} == {"photo-search"}
    images = {c["image"] for spec in pod_specs(overlay).values() for c in spec["containers"]}
    assert images == {settings_of(overlay).image}  # the index services run the image the rest runs


@pytest.mark.parametrize("version", k8s_versions())
def test_every_builtin_kind_validates_against_the_official_schema(overlay, base, kv, version):
    docs = overlay + base + per_version(overlay)
    month = example_cr()
    month["spec"] = {**month["spec"], "granularity": "month", "period": "2026-11", "replicas": 1}
    docs += render(month, settings_of(overlay))
    for d in docs:
        if d["apiVersion"].startswith(f"{GROUP}/"):
            continue
        kv.validate(d, version, strict=True)  # raises with the path of what is wrong


def crd_schema(docs: list[dict[str, Any]]) -> dict[str, Any]:
    crd = by_kind(docs, "CustomResourceDefinition")[f"{PLURAL}.{GROUP}"]
    assert crd["spec"]["group"] == GROUP and crd["spec"]["names"]["kind"] == KIND
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == API_VERSION]
    return v["schema"]["openAPIV3Schema"]


def validate_cr(cr: dict[str, Any], schema: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.Draft7Validator(schema).validate(cr)
    # the API server prunes fields its schema does not name: a misspelt one would vanish silently
    assert set(cr["spec"]) <= set(schema["properties"]["spec"]["properties"]), set(cr["spec"])
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cr["metadata"]["name"]) and len(cr["metadata"]["name"]) <= 63


def test_every_custom_resource_validates_against_its_crd(base):
    import jsonschema

    from retrieval.k8s.render import serving_resource
    from retrieval.versions import VersionInfo

    schema = crd_schema(base)
    crs = [yaml.safe_load(EXAMPLE.read_text())]
    crs += [d for d in base if d["apiVersion"].startswith(f"{GROUP}/")]
    for g, p in (("hour", "2026-12-02T03"), ("day", "2026-11-30"), ("month", "2026-10")):
        crs.append(serving_resource(VersionInfo("e" * 64, g, p, "0123456789abcdef", 0, 1, 5, 128, "HNSW32,Flat", 7,
                                                "0" * 64, url=f"file:///artifacts/repository/{g}/{p}"), "ns"))
    for cr in crs:
        validate_cr(cr, schema)
    bad = copy.deepcopy(crs[0])
    bad["spec"]["granularity"] = "week"
    with pytest.raises(jsonschema.ValidationError):
        validate_cr(bad, schema)


# ------------------------------------------------------------------------------------ pods
def test_every_pod_has_probes_resources_and_a_restricted_non_root_context(overlay):
    specs = pod_specs(overlay + per_version(overlay))
    assert {k.split("/")[0] for k in specs} == {"Deployment", "CronJob"} and len(specs) == 6
    for where, spec in specs.items():
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 1000, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, (where, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, c["name"], kind)
        if where.startswith("Deployment/"):
            for c in spec["containers"]:
                assert "readinessProbe" in c and "livenessProbe" in c, (where, c["name"])


def test_index_services_probe_the_standard_grpc_health_service(overlay):
    from retrieval.k8s import HEALTH_PORT
    from retrieval.service import LIVENESS

    dep = per_version(overlay)[0]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["grpc"] == {"port": HEALTH_PORT}  # "": SERVING once caught up
    assert c["livenessProbe"]["grpc"] == {"port": HEALTH_PORT, "service": LIVENESS}
    assert f"health_port={HEALTH_PORT}" in c["args"]


def test_what_the_pods_mount_and_read_exists_or_is_documented(overlay):
    names = {(d["kind"], d["metadata"]["name"]) for d in overlay}
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    for where, spec in pod_specs(overlay + per_version(overlay)).items():
        sa = spec.get("serviceAccountName")
        assert ("ServiceAccount", sa) in names, where
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names, where
            if "secret" in v:
                assert f"`{v['secret']['secretName']}`" in docs, (where, v["secret"]["secretName"])
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("envFrom", []):
                assert ("ConfigMap", e["configMapRef"]["name"]) in names, where
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert f"`{ref['name']}`" in docs, (where, ref["name"])


# ------------------------------------------------------------------------------------ discovery labels
def test_the_resolver_selects_the_index_services_and_nothing_else(overlay):
    rendered = per_version(overlay)
    svc = next(o for o in rendered if o["kind"] == "Service")
    assert INDEX_SELECTOR.items() <= svc["metadata"]["labels"].items()
    for d in overlay:  # the gateway's own Service, the controller, the builds: never mistaken for one
        labels = d["metadata"].get("labels", {})
        assert not INDEX_SELECTOR.items() <= labels.items(), d["metadata"]["name"]
    fixture = json.loads((ROOT / "tests" / "retrieval" / "fixtures" / "k8s" /
                          "recorded-endpointslices-list.json").read_text())
    for s in fixture["items"]:  # the recorded slices carry what the controller puts on a Service
        assert set(svc["metadata"]["labels"]) <= set(s["metadata"]["labels"])


# ------------------------------------------------------------------------------------ RBAC
def test_the_gateway_role_grants_exactly_the_resolvers_calls(overlay):
    from retrieval.k8s.resolver import KubernetesResolver

    api, fake = api_client([Reply.fixture(f) for f in ("recorded-endpointslices-list.json",
                                                        "recorded-watch-version-becomes-ready.jsonl",
                                                        "recorded-watch-expired-410.jsonl",
                                                        "recorded-endpointslices-list-after-expiry.json")])
    r = KubernetesResolver("photo-search", api_client=api, start=False)
    r.relist()
    r.watch_once()
    r.watch_once()
    role = by_kind(overlay, "Role")["spnas-gateway-discovery"]
    assert rbac_rules(role) == fake.verbs()
    binding = by_kind(overlay, "RoleBinding")["spnas-gateway-discovery"]
    assert binding["subjects"][0]["name"] == by_kind(overlay, "Deployment")["spnas-gateway"]["spec"]["template"][
        "spec"]["serviceAccountName"]


def test_the_builder_role_grants_exactly_what_a_sync_calls(overlay):
    from retrieval.k8s.servings import sync

    cr = example_cr()
    old = dict(cr, metadata={**cr["metadata"], "name": "idx-28b7db7b-d-2026-11-29-0000000000"})
    dep = {"metadata": {"name": cr["metadata"]["name"], "labels": {"app.kubernetes.io/instance": cr["metadata"]["name"]}},
           "status": {"availableReplicas": 1, "observedGeneration": 1}}
    api, fake = api_client([Reply.json({"apiVersion": f"{GROUP}/{API_VERSION}", "kind": "IndexServingList",
                                        "metadata": {"resourceVersion": "1"}, "items": [old]}),
                            Reply.json(cr),  # the apply
                            Reply.json({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
                                        "items": [dep]}),
                            Reply.json({"kind": "Status", "apiVersion": "v1", "status": "Success"})])
    out = sync("photo-search", [yaml.safe_load(EXAMPLE.read_text())], wait_s=0, api_client=api)
    assert out == {"applied": [cr["metadata"]["name"]], "removed": [old["metadata"]["name"]], "kept": []}
    assert fake.calls[1].query["fieldManager"] == "spnas-index" and fake.calls[1].query["force"] == "True"
    # server-side apply of a resource that does not exist yet creates it: the API server checks create too
    called = fake.verbs() | {(g, r, "create") for g, r, v in fake.verbs() if v == "patch"}
    assert rbac_rules(by_kind(overlay, "Role")["spnas-builder"]) == called


def test_the_controller_role_covers_its_calls_and_kopfs_own(overlay):
    """What a resync, a repair and reading the settings call (replayed), what kopf does for its handlers
    (list + watch of each watched kind, patch of the resource and its status), and `update` of the
    finalizers subresource (owner references that block deletion), never delete (the GC does)."""
    from .test_controller import calls_of_a_controller

    called = calls_of_a_controller()
    applies = called | {(g, r, "create") for g, r, v in called if v == "patch" and r != f"{PLURAL}/status"}
    watched = {("apps", "deployments"), ("", "services"), ("policy", "poddisruptionbudgets"), ("", "configmaps"),
               (GROUP, PLURAL)}
    kopf = {(g, r, v) for g, r in watched for v in ("list", "watch")} | {(GROUP, PLURAL, "patch"),
                                                                         (GROUP, f"{PLURAL}/status", "patch"),
                                                                         (GROUP, f"{PLURAL}/finalizers", "update"),
                                                                         ("", "events", "create")}
    rules = rbac_rules(by_kind(overlay, "Role")["spnas-controller"])
    assert applies | kopf <= rules, (applies | kopf) - rules
    assert {v for _, _, v in rules} <= {"get", "list", "watch", "create", "patch", "update"}
    assert not {(g, r, v) for g, r, v in rules if v == "update" and not r.endswith("/finalizers")}


# ------------------------------------------------------------------------------------ CronJobs
def documented_cadence() -> dict[str, str]:
    rows = re.findall(r"^\| (?:hourly|daily|monthly) \| `(spnas-build-\w+)` \| `([^`]+)` \|",
                      (ROOT / "docs" / "kubernetes.md").read_text(), re.M)
    assert len(rows) == 3, rows
    return dict(rows)


def test_cronjob_schedules_match_the_documented_cadence():
    jobs = by_kind(base_files(), "CronJob")
    assert {n: j["spec"]["schedule"] for n, j in jobs.items()} == documented_cadence()
    for name, j in jobs.items():
        s, t = j["spec"], j["spec"]["jobTemplate"]["spec"]
        g = j["metadata"]["labels"]["spnas.dev/granularity"]
        assert s["concurrencyPolicy"] == "Forbid" and s["timeZone"] == "Etc/UTC", name
        assert s["startingDeadlineSeconds"] > 0 and t["activeDeadlineSeconds"] > 0 and t["backoffLimit"] >= 1, name
        assert s["successfulJobsHistoryLimit"] >= 1 and s["failedJobsHistoryLimit"] >= 1, name
        (c,) = t["template"]["spec"]["containers"]
        assert c["command"] == ["spnas-index"] and c["args"][0] == "build-due", name
        assert f"granularities=[{g}]" in c["args"] and "servings=kubernetes" in c["args"], name
    hourly = jobs["spnas-build-hourly"]["spec"]
    assert hourly["jobTemplate"]["spec"]["activeDeadlineSeconds"] + hourly["startingDeadlineSeconds"] <= 3600


# ------------------------------------------------------------------------------------ stable rendering
def test_the_rendered_per_version_objects_are_stable():
    """What the controller makes of deploy/examples/indexserving.yaml with the base's settings, as
    recorded in fixtures/ (SPNAS_UPDATE_GOLDEN=1 rewrites it after a deliberate change)."""
    got = render(example_cr(), settings_of(base_files()))
    if os.environ.get("SPNAS_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
    assert render(copy.deepcopy(example_cr()), settings_of(base_files())) == got


# ------------------------------------------------------------------------------------ surviving drains
def test_versions_survive_a_drain_and_rollouts_drain_requests(overlay):
    """A month version has two pods and a PDB that keeps one through a drain; every index pod is spread
    over nodes, has a startup probe, a preStop pause and a grace long enough for its stop grace."""
    month = example_cr()
    month["spec"] = {**month["spec"], "granularity": "month", "period": "2026-11", "replicas": 1}
    dep, _, pdb = render(month, settings_of(overlay))
    assert dep["spec"]["replicas"] >= 2 and pdb["spec"] == {"minAvailable": 1, "selector": pdb["spec"]["selector"]}
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    one = example_cr()
    one["spec"] = {**one["spec"], "replicas": 1}
    assert render(one, settings_of(overlay))[2]["spec"]["maxUnavailable"] == 1  # one pod: a drain must not stall
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {"kubernetes.io/hostname",
                                                                          "topology.kubernetes.io/zone"}
    assert c["startupProbe"]["grpc"]["service"] == "liveness"
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = next(int(a.split("=")[1]) for a in c["args"] if a.startswith("stop_grace_s="))
    assert pause > 0 and pod["terminationGracePeriodSeconds"] > pause + grace
    assert any(a.startswith("source=") for a in c["args"])  # a copy that fails verification is fetched again
    gw = by_kind(overlay, "Deployment")["spnas-gateway"]
    assert "replicas" not in gw["spec"]  # the HPA owns it
    assert by_kind(overlay, "HorizontalPodAutoscaler")["spnas-gateway"]["spec"]["scaleTargetRef"]["name"] == \
        "spnas-gateway"
    (g,) = gw["spec"]["template"]["spec"]["containers"]
    assert "exec" in g["lifecycle"]["preStop"] and gw["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_the_gateway_holds_the_services_ca_and_never_their_key(overlay):
    gw = by_kind(overlay, "Deployment")["spnas-gateway"]["spec"]["template"]["spec"]
    (c,) = gw["containers"]
    assert not [a for a in c["args"] if a.startswith(("tls.key=", "tls.cert="))]
    assert "tls.ca=/etc/spnas/tls/ca.crt" in c["args"]
    (tls,) = [v for v in gw["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_network_policies_and_the_storage_class(overlay):
    pols = by_kind(overlay, "NetworkPolicy")
    idx = pols["spnas-index-services"]["spec"]
    assert idx["podSelector"]["matchLabels"] == INDEX_SELECTOR
    grpc = next(r for r in idx["ingress"] if r.get("from"))
    assert grpc["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert grpc["ports"] == [{"protocol": "TCP", "port": 50051}]
    selected = {tuple(sorted(p["spec"]["podSelector"]["matchLabels"].items())) for p in pols.values()}
    for where, spec in pod_specs(overlay).items():  # every spnas pod is covered by a policy
        labels = by_kind(overlay, where.split("/")[0])[where.split("/")[1]]
        tmpl = labels["spec"]["template"] if "template" in labels["spec"] else \
            labels["spec"]["jobTemplate"]["spec"]["template"]
        assert any(set(s) <= set(tmpl["metadata"]["labels"].items()) for s in selected), where
    assert by_kind(overlay, "PersistentVolumeClaim")["spnas-artifacts"]["spec"]["storageClassName"]
