"""The photo search on Kubernetes: the names that the manifests in `deploy/`, the controller, the
build jobs and the gateway's resolver share (one place, so the tests can check they agree).

    render.py      pure: an IndexServing resource per planned version; its Deployment, Service and
                   PodDisruptionBudget (what the controller applies)
    servings.py    after a build: make the IndexServing resources match the versions the planner uses
    controller.py  the kopf operator that turns IndexServing resources into their objects
    resolver.py    the gateway's resolver: EndpointSlices of the index services, listed and watched

Nothing here runs at import; the `kubernetes` and `kopf` packages are imported where they are used
(the `k8s` extra), so one machine without them keeps working.
"""

from __future__ import annotations

GROUP = "spnas.dev"
API_VERSION = "v1alpha1"
KIND = "IndexServing"
PLURAL = "indexservings"

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
APP = "spnas"
INDEX_COMPONENT = "index-service"
# One version's labels (label values are at most 63 characters: the bundle id is cut to 16 hex digits
# there; the full id is in the resource's spec and annotations).
GRANULARITY_LABEL = f"{GROUP}/granularity"
PERIOD_LABEL = f"{GROUP}/period"
VERSION_LABEL = f"{GROUP}/version"
BUNDLE_LABEL = f"{GROUP}/bundle"
BUNDLE_ANNOTATION = f"{GROUP}/bundle-id"

# What the resolver selects (EndpointSlices carry their Service's labels).
INDEX_SELECTOR = {NAME_LABEL: APP, COMPONENT_LABEL: INDEX_COMPONENT}
GRPC_PORT_NAME = "grpc"
GRPC_PORT = 50051
HEALTH_PORT = 50052  # plaintext, the standard health service only: kubelet's gRPC probes speak no TLS


def selector_string(labels: dict[str, str]) -> str:
    """A label selector in the API's query syntax: `a=b,c=d`."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def own_namespace(default: str = "default") -> str:
    """The namespace of the pod this runs in (its service account's), else `default`."""
    from pathlib import Path

    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return p.read_text().strip() or default
    except OSError:
        return default
