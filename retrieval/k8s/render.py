"""Pure functions from versions to Kubernetes objects (plain dicts in the API's own format).

    desired_versions(...)     the versions the gateway's planner uses now: those get an index service
    serving_resource(info)    the IndexServing resource of one version (what a build job applies)
    render(serving, settings) its Deployment, Service and PodDisruptionBudget (what the controller applies)

Same input, same output, byte for byte: names and labels come from the version, sizes from its
manifest, everything else from `RenderSettings` (the ConfigMap `spnas-config`, which the controller
reads and watches). The objects are owned by their IndexServing (ownerReferences), so deleting the
resource, which a build job does when retention or a coarser version retires a version, deletes them too.

What a version's pods are made to survive: at least two replicas for a month version (the largest
part of the catalogue; `SPNAS_INDEX_REPLICAS` for the others), spread over nodes and zones, a
PodDisruptionBudget that keeps one of them up through a drain, rolling updates that add a pod before
taking one away, a preStop pause so endpoints are withdrawn before SIGTERM, then `stop_grace_s` for
calls in flight; a startup probe gives a large version time to be verified before liveness counts.
The pod template carries the settings' hash (`CONFIG_HASH_ANNOTATION`): a ConfigMap change rolls the
pods, one Deployment at a time (the controller's gate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Mapping, Sequence

from ..config import Granularity, RetentionConfig
from ..periods import latest_finished
from ..planner import Ready, choose_bundle, plan
from ..versions import VersionInfo
from . import (API_VERSION, APP, BUNDLE_ANNOTATION, BUNDLE_LABEL, COMPONENT_LABEL, GRANULARITY_LABEL, GROUP,
               GRPC_PORT, GRPC_PORT_NAME, HEALTH_PORT, INDEX_COMPONENT, INDEX_SELECTOR, INSTANCE_LABEL, KIND,
               MANAGED_BY_LABEL, NAME_LABEL, PERIOD_LABEL, VERSION_LABEL)

MI = 1 << 20
UID = 10001  # the image's user (deploy/Dockerfile)
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"


# ------------------------------------------------------------------------------------ which versions
def horizon(now: int, retention: RetentionConfig, max_future_s: int = 300) -> tuple[int, int]:
    """What the gateway plans: [start of the oldest retained month, now + clock skew + an hour) (as `Router`)."""
    return latest_finished(Granularity.month, now, retention.months)[-1][1], now + max_future_s + 3600


def desired_versions(versions: Sequence[VersionInfo], bundle: str, now: int, retention: RetentionConfig,
                     max_future_s: int = 300) -> list[VersionInfo]:
    """The versions a gateway searching with `bundle` plans with now: the coarsest ready version of each
    part of the horizon, for `bundle` and, while its versions do not yet cover what an older bundle
    covers, for that older bundle too (the gateway keeps searching it until then)."""
    h0, h1 = horizon(now, retention, max_future_s)
    ready = [Ready(v.bundle_id, v.g, v.period, v.version, v.snapshot_seq, v.start_ts, v.end_ts, v) for v in versions]
    newest = {}
    for v in versions:
        newest[v.bundle_id] = max(newest.get(v.bundle_id, ""), v.created)
    others = sorted((b for b in newest if b != bundle), key=lambda b: newest[b], reverse=True)
    chosen = choose_bundle([bundle, *others], ready, h0, h1)
    out: dict[str, VersionInfo] = {}
    for b in dict.fromkeys([bundle, chosen]):
        for piece in plan([r for r in ready if r.bundle_id == b], h0, h1).pieces:
            v = piece.version.ref
            out[v.url] = v
    return sorted(out.values(), key=lambda v: (v.bundle_id, v.start_ts, -v.end_ts, v.version))


# ------------------------------------------------------------------------------------ IndexServing
def serving_name(bundle_id: str, granularity: str, period: str, version: str) -> str:
    """`idx-<bundle 8>-<h|d|m>-<period>-<version 10>`: a DNS-1035 label (a Service name), 39 characters."""
    return f"idx-{bundle_id[:8]}-{granularity[0]}-{period.lower()}-{version[:10]}"


def version_labels(bundle_id: str, granularity: str, period: str, version: str) -> dict[str, str]:
    return {GRANULARITY_LABEL: granularity, PERIOD_LABEL: period, VERSION_LABEL: version,
            BUNDLE_LABEL: bundle_id[:16]}


def serving_resource(info: VersionInfo, namespace: str) -> dict[str, Any]:
    """The IndexServing resource of a version (validated by the CRD in deploy/base/crd-indexserving.yaml)."""
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}", "kind": KIND,
        "metadata": {"name": serving_name(info.bundle_id, info.granularity, info.period, info.version),
                     "namespace": namespace,
                     "labels": {NAME_LABEL: APP, MANAGED_BY_LABEL: "spnas-index",
                                **version_labels(info.bundle_id, info.granularity, info.period, info.version)},
                     "annotations": {BUNDLE_ANNOTATION: info.bundle_id}},
        "spec": {"bundleId": info.bundle_id, "granularity": info.granularity, "period": info.period,
                 "version": info.version, "url": info.url, "count": int(info.count), "dim": int(info.dim),
                 "factory": info.factory, "snapshotSeq": int(info.snapshot_seq),
                 "sizeBytes": int(sum(f["size"] for f in info.files.values())),
                 "residentBytes": int(sum(f["size"] for r, f in info.files.items() if r != "vectors"))},
    }


# ------------------------------------------------------------------------------------ its objects
@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """What every index service shares; the controller reads it from the ConfigMap `spnas-config` (or its
    environment: `from_env`), which deploy/base/config.yaml sets."""

    image: str = "spnas:0.2.0"
    pull_policy: str = "IfNotPresent"
    replicas: int = 2
    month_min_replicas: int = 2  # a month version serves the most listings: never one pod
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_base_mi: int = 256  # the process without its index
    config_map: str = "spnas-config"
    store_secret: str = "spnas-postgres"  # key `url`: postgresql://...
    token_secret: str = "spnas-token"  # key `token`
    tls_secret: str = "spnas-index-tls"  # tls.crt, tls.key, ca.crt
    artifacts_claim: str = "spnas-artifacts"  # the repository on a shared volume (file:///artifacts/...); "": none
    service_account: str = "spnas-index"
    prestop_s: int = 5  # endpoints are withdrawn while the pod waits, before SIGTERM
    stop_grace_s: int = 15  # after SIGTERM: calls in flight finish
    verify_every_s: int = 3600  # sha256 of the served copy this often

    ENV = {"image": "SPNAS_INDEX_IMAGE", "pull_policy": "SPNAS_INDEX_PULL_POLICY", "replicas": "SPNAS_INDEX_REPLICAS",
           "month_min_replicas": "SPNAS_INDEX_MONTH_MIN_REPLICAS", "cpu_request": "SPNAS_INDEX_CPU_REQUEST",
           "cpu_limit": "SPNAS_INDEX_CPU_LIMIT", "memory_base_mi": "SPNAS_INDEX_MEMORY_BASE_MI",
           "artifacts_claim": "SPNAS_ARTIFACTS_CLAIM", "prestop_s": "SPNAS_INDEX_PRESTOP_S",
           "stop_grace_s": "SPNAS_INDEX_STOP_GRACE_S", "verify_every_s": "SPNAS_INDEX_VERIFY_EVERY_S"}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RenderSettings":
        env = os.environ if env is None else env
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        got = {k: env[v] for k, v in cls.ENV.items() if v in env}
        return cls(**{k: int(v) if kinds[k] in (int, "int") else v for k, v in got.items()})

    def config_hash(self) -> str:
        """12 hex digits naming these settings (on the pod template: a change rolls the pods)."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def replicas_of(spec: Mapping[str, Any], settings: RenderSettings) -> int:
    """Pods of one version: the resource's own count or the settings', at least `month_min_replicas` for a month."""
    n = int(spec.get("replicas", settings.replicas))
    return max(n, settings.month_min_replicas) if spec.get("granularity") == "month" else n


def memory_mi(size_bytes: int, base_mi: int) -> int:
    """Memory request: the process plus the version's resident files (memory-mapped, charged to the pod once
    read; exact vectors re-ranked from disk are read, not mapped, so they are not counted), with 20% room,
    rounded up to 64 MiB so a rebuilt version of about the same size keeps the same pods."""
    return int(math.ceil((base_mi + 1.2 * size_bytes / MI) / 64) * 64)


def _owner(serving: Mapping[str, Any]) -> list[dict[str, Any]]:
    m = serving["metadata"]
    return [{"apiVersion": serving["apiVersion"], "kind": serving["kind"], "name": m["name"], "uid": m["uid"],
             "controller": True, "blockOwnerDeletion": True}]


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}


def render(serving: Mapping[str, Any], settings: RenderSettings = RenderSettings()) -> list[dict[str, Any]]:
    """Deployment, Service and PodDisruptionBudget of one IndexServing (it needs `metadata.uid`: they
    are owned by it)."""
    spec, meta = serving["spec"], serving["metadata"]
    name, ns = meta["name"], meta["namespace"]
    vlabels = version_labels(spec["bundleId"], spec["granularity"], spec["period"], spec["version"])
    labels = {**INDEX_SELECTOR, INSTANCE_LABEL: name, MANAGED_BY_LABEL: "spnas-controller", **vlabels}
    select = {**INDEX_SELECTOR, INSTANCE_LABEL: name}
    annotations = {BUNDLE_ANNOTATION: spec["bundleId"]}
    replicas = replicas_of(spec, settings)

    def owned() -> dict[str, Any]:  # fresh per object: an owner reference added to one must not reach the others
        return {"name": name, "namespace": ns, "labels": dict(labels), "ownerReferences": _owner(serving)}

    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**owned(), "annotations": dict(annotations)},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": select},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels,
                                      "annotations": {**annotations, CONFIG_HASH_ANNOTATION: settings.config_hash()}},
                         "spec": _pod_spec(spec, settings, select)},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {**owned(), "annotations": dict(annotations)},
        "spec": {"selector": select, "ports": [{"name": GRPC_PORT_NAME, "port": GRPC_PORT, "targetPort": GRPC_PORT_NAME,
                                                "protocol": "TCP", "appProtocol": "grpc"}]},
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": owned(),
        # with two or more pods a drain keeps one serving; a single pod cannot be kept without stalling the
        # drain forever, so it may go (the version is then missing until its pod is back: partial answers)
        "spec": {**({"minAvailable": 1} if replicas >= 2 else {"maxUnavailable": 1}),
                 "selector": {"matchLabels": select}},
    }
    return [deployment, service, pdb]


def _pod_spec(spec: Mapping[str, Any], settings: RenderSettings, select: Mapping[str, str]) -> dict[str, Any]:
    """The index pod: the version fetched by an init container into an emptyDir sized to it, then served."""
    versions_mi = int(math.ceil((spec.get("sizeBytes", 0) * 1.1 / MI + 64) / 64) * 64)
    spread = [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": {"matchLabels": dict(select)}}
              for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")]
    return {
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,  # an index service never calls the Kubernetes API
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": settings.prestop_s + settings.stop_grace_s + 10,
        "topologySpreadConstraints": spread,
        "initContainers": [_fetch_container(spec, settings)],
        "containers": [_index_container(spec, settings)],
        "volumes": [
            {"name": "versions", "emptyDir": {"sizeLimit": f"{versions_mi}Mi"}},
            {"name": "work", "emptyDir": {"sizeLimit": "256Mi"}},
            *([{"name": "artifacts", "persistentVolumeClaim": {"claimName": settings.artifacts_claim,
                                                               "readOnly": True}}]
              if settings.artifacts_claim else []),
            {"name": "token", "secret": {"secretName": settings.token_secret, "defaultMode": 0o440}},
            {"name": "tls", "secret": {"secretName": settings.tls_secret, "defaultMode": 0o440}},
        ],
    }


def _common(settings: RenderSettings) -> dict[str, Any]:
    return {"image": settings.image, "imagePullPolicy": settings.pull_policy, "securityContext": _container_security(),
            "workingDir": "/work"}


def _fetch_container(spec: Mapping[str, Any], settings: RenderSettings) -> dict[str, Any]:
    """`spnas-index fetch`: copies the immutable version from the artifact repository (checksums checked)."""
    return {
        **_common(settings), "name": "fetch", "command": ["spnas-index"],
        "args": ["fetch", f"version={spec['url']}", "dest=/versions/v"],
        "envFrom": [{"configMapRef": {"name": settings.config_map}}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "volumeMounts": [{"name": "versions", "mountPath": "/versions"}, {"name": "work", "mountPath": "/work"},
                         *([{"name": "artifacts", "mountPath": "/artifacts", "readOnly": True}]
                           if settings.artifacts_claim else [])],
    }


def _index_container(spec: Mapping[str, Any], settings: RenderSettings) -> dict[str, Any]:
    """`spnas-index serve`: the read-only gRPC index service, memory sized to the version, gRPC probes."""
    mem = memory_mi(spec.get("residentBytes", spec.get("sizeBytes", 0)), settings.memory_base_mi)
    tls = "/etc/spnas/tls"
    store_env = {"name": "SPNAS_STORE_URL", "valueFrom": {"secretKeyRef": {"name": settings.store_secret, "key": "url"}}}
    return {
        **_common(settings), "name": "index", "command": ["spnas-index"],
        "args": ["serve", "version=/versions/v", f"source={spec['url']}", "host=0.0.0.0", f"port={GRPC_PORT}",
                 f"health_port={HEALTH_PORT}", "root=/work", "locations.store=${oc.env:SPNAS_STORE_URL}",
                 "auth.token_file=/etc/spnas/token/token", f"tls.cert={tls}/tls.crt", f"tls.key={tls}/tls.key",
                 f"tls.ca={tls}/ca.crt", f"stop_grace_s={settings.stop_grace_s}",
                 f"verify_every_s={settings.verify_every_s}"],
        "envFrom": [{"configMapRef": {"name": settings.config_map}}],
        "env": [store_env],
        "ports": [{"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        # up to 10 minutes to verify a large version and open it before liveness counts
        "startupProbe": {"grpc": {"port": HEALTH_PORT, "service": "liveness"}, "periodSeconds": 5,
                         "failureThreshold": 120},
        # SERVING once the version is open and caught up with the listing store's changes
        "readinessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 5, "failureThreshold": 2},
        # "liveness" is SERVING from start to stop: catching up slowly is not a reason to restart
        "livenessProbe": {"grpc": {"port": HEALTH_PORT, "service": "liveness"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        # the pod leaves its Service's endpoints while this waits; SIGTERM then drains calls in flight
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(settings.prestop_s)]}}},
        "resources": {"requests": {"cpu": settings.cpu_request, "memory": f"{mem}Mi"},
                      "limits": {"cpu": settings.cpu_limit, "memory": f"{2 * mem}Mi"}},
        # /versions writable: a copy that fails verification is fetched again from `source`
        "volumeMounts": [{"name": "versions", "mountPath": "/versions"},
                         {"name": "work", "mountPath": "/work"},
                         {"name": "token", "mountPath": "/etc/spnas/token", "readOnly": True},
                         {"name": "tls", "mountPath": tls, "readOnly": True},
                         *([{"name": "artifacts", "mountPath": "/artifacts", "readOnly": True}]
                           if settings.artifacts_claim else [])],
    }
