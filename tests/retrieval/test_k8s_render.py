"""What runs on Kubernetes, as pure functions: which versions get an index service (the planner's
choice), their IndexServing resources and names, the objects the controller renders from one, the
controller's settings, and when a build job retires servings."""

from __future__ import annotations

import calendar
import re

from retrieval.config import Granularity, RetentionConfig
from retrieval.k8s import GRPC_PORT_NAME, INDEX_SELECTOR, INSTANCE_LABEL
from retrieval.k8s.render import (RenderSettings, desired_versions, memory_mi, render, serving_name,
                                  serving_resource)
from retrieval.k8s.servings import changes
from retrieval.periods import period_range
from retrieval.versions import VersionInfo

A, B = "a" * 64, "b" * 64
NOW = calendar.timegm((2026, 12, 2, 4, 30, 0))  # 2026-12-02T04:30Z
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def version(bundle: str, g: str, period: str, name: str = "", seq: int = 1, created: str = "2026-12-01T00:00:00",
            count: int = 1000) -> VersionInfo:
    a, b = period_range(Granularity[g], period)
    name = name or f"{abs(hash((bundle, g, period, seq))) % 16**16:016x}"
    return VersionInfo(bundle, g, period, name, a, b, count, 128, "Flat", seq, "0" * 64,
                       files={"index": {"name": "index.x.faiss", "sha256": "0" * 64, "size": count * 512},
                              "ids": {"name": "ids.x.npy", "sha256": "0" * 64, "size": count * 8},
                              "ts": {"name": "ts.x.npy", "sha256": "0" * 64, "size": count * 8}},
                       created=created, url=f"file:///artifacts/repository/{bundle}/{g}/{period}/{name}")


def catalogue(bundle: str, created: str = "2026-12-01T00:00:00") -> list[VersionInfo]:
    """Months Jan..Oct 2026, November's days (its month not built yet), October's days too (covered by
    its month), yesterday, and today's first hours, one of them rebuilt."""
    vs = [version(bundle, "month", f"2026-{m:02d}", created=created) for m in range(1, 11)]
    vs += [version(bundle, "day", f"2026-11-{d:02d}", created=created) for d in range(1, 31)]
    vs += [version(bundle, "day", f"2026-10-{d:02d}", created=created) for d in range(1, 32)]
    vs += [version(bundle, "day", "2026-12-01", created=created)]
    vs += [version(bundle, "hour", f"2026-12-02T{h:02d}", created=created) for h in range(4)]
    vs += [version(bundle, "hour", "2026-12-02T03", seq=9, created=created)]
    return vs


def keys(vs: list[VersionInfo]) -> set[tuple[str, str, int]]:
    return {(v.granularity, v.period, v.snapshot_seq) for v in vs}


def test_the_planned_versions_get_services_coarsest_first():
    want = desired_versions(catalogue(A), A, NOW, RetentionConfig())
    expect = ({("month", f"2026-{m:02d}", 1) for m in range(1, 11)} | {("day", f"2026-11-{d:02d}", 1) for d in range(1, 31)}
              | {("day", "2026-12-01", 1)} | {("hour", f"2026-12-02T{h:02d}", 1) for h in range(3)}
              | {("hour", "2026-12-02T03", 9)})
    assert keys(want) == expect  # October's days are covered by its month; the rebuilt hour replaces its first


def test_an_older_bundle_is_served_until_the_new_one_covers_it():
    old = catalogue(B, created="2026-06-01T00:00:00")
    new = [version(A, "hour", f"2026-12-02T{h:02d}") for h in range(4)]
    want = desired_versions(old + new, A, NOW, RetentionConfig())
    assert {v.bundle_id for v in want} == {A, B}  # the gateway still searches B
    assert keys([v for v in want if v.bundle_id == A]) == {("hour", f"2026-12-02T{h:02d}", 1) for h in range(4)}
    done = desired_versions(old + catalogue(A), A, NOW, RetentionConfig())
    assert {v.bundle_id for v in done} == {A}  # A covers all B covers: B's services retire


def test_names_and_resources_are_valid_and_stable():
    v = version(A, "hour", "2026-12-02T03", "c3d2e1f0a9b8c7d6")
    name = serving_name(v.bundle_id, v.granularity, v.period, v.version)
    assert name == "idx-aaaaaaaa-h-2026-12-02t03-c3d2e1f0a9" and DNS1035.match(name) and len(name) <= 63
    for g, p in (("month", "2026-10"), ("day", "2026-11-30")):
        assert DNS1035.match(serving_name(A, g, p, "f" * 16))
    r = serving_resource(v, "photo-search")
    assert r == serving_resource(v, "photo-search") and r["spec"]["sizeBytes"] == 1000 * 528
    assert all(len(x) <= 63 for x in r["metadata"]["labels"].values())


def test_rendered_objects_select_their_own_pods_and_are_owned_by_the_resource():
    cr = {**serving_resource(version(A, "day", "2026-11-30"), "photo-search")}
    cr["metadata"] = {**cr["metadata"], "uid": "0b7c5e8e-9f51-4d2b-8a0e-2f6c1b9d7a31"}
    dep, svc, pdb = render(cr)
    name = cr["metadata"]["name"]
    assert [o["kind"] for o in (dep, svc, pdb)] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"] for o in (dep, svc, pdb))
    pod = dep["spec"]["template"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"][INSTANCE_LABEL] == name  # this version's pods only
    assert INDEX_SELECTOR.items() <= svc["metadata"]["labels"].items()  # what the resolver selects
    assert svc["spec"]["ports"][0]["name"] == GRPC_PORT_NAME
    assert pod["spec"]["initContainers"][0]["args"][1] == f"version={cr['spec']['url']}"
    assert render(cr) == render(cr)


def test_memory_follows_the_version_size():
    assert memory_mi(0, 256) == 256 and memory_mi(763 << 20, 256) == 1216
    assert memory_mi(500 << 20, 256) == memory_mi(510 << 20, 256)  # a rebuild of about the same size: same pods


def test_settings_from_the_environment():
    s = RenderSettings.from_env({"SPNAS_INDEX_IMAGE": "r/spnas:1", "SPNAS_INDEX_REPLICAS": "3",
                                 "SPNAS_ARTIFACTS_CLAIM": ""})
    assert (s.image, s.replicas, s.artifacts_claim) == ("r/spnas:1", 3, "")
    cr = serving_resource(version(A, "day", "2026-11-30"), "ns")
    cr["metadata"]["uid"] = "u"
    dep = render(cr, s)[0]
    assert dep["spec"]["replicas"] == 3 and "artifacts" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_retired_servings_wait_until_the_planned_ones_are_available():
    d = [{"metadata": {"name": n}} for n in ("idx-m", "idx-d")]
    assert changes(["idx-m", "idx-old"], d, ["idx-m"]) == (d, [])  # idx-d not available yet: keep idx-old
    assert changes(["idx-m", "idx-old"], d, ["idx-m", "idx-d", "idx-old"]) == (d, ["idx-old"])


def test_a_compressed_versions_pods_are_sized_by_what_they_hold_in_memory():
    """The vectors a compressed version re-ranks from are read from disk: its memory request follows the
    index, ids and times (`residentBytes`), its volume all files (`sizeBytes`)."""
    v = version(A, "month", "2026-10", count=10**7)
    v.factory = "IVF4096_HNSW32,PQ32,RDisk"
    v.files["index"]["size"] = 10**7 * 40
    v.files["vectors"] = {"name": "vectors.x.npy", "sha256": "0" * 64, "size": 10**7 * 256}
    cr = serving_resource(v, "ns")
    assert cr["spec"]["residentBytes"] == 10**7 * 56 and cr["spec"]["sizeBytes"] == 10**7 * (56 + 256)
    cr["metadata"]["uid"] = "u"
    dep = render(cr)[0]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["requests"]["memory"] == f"{memory_mi(10**7 * 56, 256)}Mi"
    assert dep["spec"]["replicas"] >= 2  # a month version
    vol = next(x for x in dep["spec"]["template"]["spec"]["volumes"] if x["name"] == "versions")
    assert int(vol["emptyDir"]["sizeLimit"].removesuffix("Mi")) * 2**20 > 10**7 * 312
