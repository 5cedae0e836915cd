"""A table from whole-network profiles: the covering design (minimal, checked by brute force), op-profile
parsing and attribution on a real recorded LiteRT profile, benchmark_model's op-profiling layout, AI Hub
profiles built with the client's own protobuf classes, resumable AI Hub jobs (mocked API), adb op
profiling on the fake phone, and a live AI Hub run where a token is configured."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from latency_tables.measuring.attribution import attribute, op_kind
from latency_tables.measuring.covering import brute_force_minimum, coverage_of, design, lower_bound, space_cover
from latency_tables.lookup.keys import ops_of, ops_of_space
from latency_tables.profilers.aihub import AiHubProfiler, profile_from_aihub, token_configured
from latency_tables.profilers.base import OpEntry, OpProfile
from latency_tables.profilers.parsers import parse_op_profile
from latency_tables.lookup.table import LatencyTable
from latency_tables.measuring.wholenet import build_table, device_runs, profile_design, profiles_dir
from search_spaces import ArchSpec, SearchSpace
from search_spaces.space import Stage
from search_spaces.spaces import SPACES
from spnas_core.errors import DeviceError, InputError

FIX = Path(__file__).with_name("fixtures")


def _recorded() -> tuple[dict, str]:
    """A real LiteRT op profile of a small network of the space, recorded on this project's dev machine."""
    return json.loads((FIX / "litert_op_profile_32.json").read_text()), (FIX / "litert_op_profile_32.txt").read_text()


def _small_space(choices: tuple[str, ...] = ("k3_e3", "k5_e3")) -> SearchSpace:
    return SearchSpace("tiny", "conv_k3_c16_s2_hs", (), (Stage(16, 1, 1), Stage(24, 3, 2)), ("pool",), choices)


# ---------------------------------------------------------------------------------- covering design
@pytest.mark.parametrize("k", [1, 2])
def test_covering_design_covers_every_key_k_times_and_is_minimal(k):
    space = _small_space()
    keys = ops_of_space(space, 32, 1.0, 10)
    nets = space_cover(space, k, 32, (10,))
    cov = coverage_of(nets)
    assert all(cov.get(key, 0) >= k for key in keys), "every key in k distinct networks"
    assert len({a.to_string() for a in nets}) == len(nets), "no network profiled twice"
    assert len(nets) == lower_bound(space, k, 1, 32) == brute_force_minimum(space, keys, k, 32, num_classes=10)


def test_covering_design_for_the_mobilenetv3_space_counts_device_runs():
    from latency_tables.measuring.host import table_keys

    space = SPACES["mbv3_large"]
    keys = table_keys(space, [224], [1000])
    d = design(space, keys, 2, [224], [1000])
    space_keys = set(ops_of_space(space, 224, 1.0, 1000))
    assert all(d.coverage[key] >= 2 for key in space_keys) and all(d.coverage[key] >= 1 for key in keys)
    assert set(d.reference_keys) == set(keys) - space_keys
    assert d.space_networks == d.lower_bound == 8  # 4 choices of each stage's first layer, twice
    for a in d.networks[:d.space_networks]:
        space.encode(a)  # a valid architecture of the space
    runs = device_runs(d, len(keys), 16)
    assert runs["micro_model_runs"] == 75 + 16 and runs["whole_network_runs"] == len(d.networks) == 11


# ---------------------------------------------------------------------------------- parsing and attribution
def _recorded_arch() -> ArchSpec:
    return ArchSpec.from_string(_recorded()[0]["arch"])


def test_a_recorded_litert_op_profile_is_attributed_to_every_op_key():
    entries = parse_op_profile(_recorded()[1])
    arch = _recorded_arch()
    ir = [op for op in ops_of(arch) if op.key.startswith("expanded_conv-")]
    assert sum(op_kind(e.node_type) == "dw" for e in entries) == len(ir)
    at = attribute(arch, entries)
    assert [op.key for op in at.ops] == [op.key for op in ops_of(arch)]
    assert all(idx for idx in at.entries), "every op key gets entries"
    flat = sorted(i for idx in at.entries for i in idx)
    assert flat == list(range(len(entries))) and not at.unattributed, "each entry exactly once"
    assert abs(at.attributed_ms - sum(e.ms for e in entries)) < 1e-9
    kinds = {op.key.split("-")[0]: [op_kind(entries[i].node_type) for i in idx] for op, idx in zip(at.ops, at.entries)}
    assert kinds["AvgPool2D"] == ["pool"] and kinds["Logits"] == ["conv"]
    se = next(idx for op, idx in zip(at.ops, at.entries) if "-se:1-" in op.key)
    assert [op_kind(entries[i].node_type) for i in se].count("pool") == 1, "an SE block holds its squeeze"


def test_unattributable_entries_are_reported_and_a_wrong_profile_refused():
    entries = parse_op_profile(_recorded()[1])
    arch = _recorded_arch()
    extra = [OpEntry("TRANSPOSE", "input_nchw", 0.01)] + entries + [OpEntry("RESHAPE", "out", 0.002)]
    at = attribute(arch, extra)
    assert [e.name for e in at.unattributed] == ["input_nchw", "out"]
    prof = OpProfile(tuple(extra), 1.0, {})
    t = build_table([at], [prof], {"device": "x", "soc": "", "runtime": "r", "threads": 1, "date": "d"})
    un = t.meta["wholenet"]["unattributed"][0]
    assert un["ms"] == pytest.approx(0.012) and len(un["entries"]) == 2
    assert t.overhead_ms == pytest.approx(1.0 - at.attributed_ms), "counted in the overhead, not dropped"
    with pytest.raises(InputError, match="depthwise"):
        attribute(SPACES["mbv3_large"].decode(["k3_e3"] * 14, 32, 1.0, 10), entries)


def test_benchmark_model_op_profiling_layouts_parse_to_the_same_entries():
    """benchmark_model: the TFLite node table (one XNNPACK delegate node) then the delegate's operators."""
    entries = parse_op_profile(_recorded()[1])
    bm = ("INFO: Inference timings in us: Init: 3405, First inference: 900, Warmup (avg): 800, Inference (avg): 700\n"
          "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
          "============================== Run Order ==============================\n"
          "\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t"
          "[times called]\t[Name]\n"
          "\t   TfLiteXNNPackDelegate\t    0.000\t    0.900\t    0.700\t100.000%\t100.000%\t     0.000\t        1\t"
          "[StatefulPartitionedCall:0]:64\n\nDelegate internal: \n" + _recorded()[1])
    assert parse_op_profile(bm) == entries
    # a TFLite-node profile (no delegate): separate pads and activations attribute as well
    cols = "\t    0.000\t    0.010\t    0.010\t  1.000%\t  1.000%\t     0.000\t        1"
    rows = "\n".join(f"\t{t:>24}{cols}\t[n{i}]:{i}" for i, t in enumerate(_recorded()[0]["tflite_ops"]))
    nodes = parse_op_profile("Operator-wise Profiling Info for Regular Benchmark Runs:\n"
                             "============================== Run Order ==============================\n" + rows)
    assert [e.node_type for e in nodes] == _recorded()[0]["tflite_ops"]
    at = attribute(_recorded_arch(), nodes)
    assert sum(len(i) for i in at.entries) == len(nodes)
    with pytest.raises(Exception, match="no per-op profile"):
        parse_op_profile("Inference timings in us: Inference (avg): 700\n")


def test_table_from_profiles_is_the_median_over_networks_with_its_spread():
    arch = _recorded_arch()
    e = parse_op_profile(_recorded()[1])
    slower = [OpEntry(x.node_type, x.name, x.ms * 1.2) for x in e]
    ats = [attribute(arch, e), attribute(arch, slower), attribute(arch, e)]
    profs = [OpProfile(tuple(e), 1.0, {}), OpProfile(tuple(slower), 1.2, {}), OpProfile(tuple(e), 1.0, {})]
    t = build_table(ats, profs, {"device": "x", "soc": "", "runtime": "r", "threads": 1, "date": "d"},
                    [op.key for op in ops_of(arch)])
    stem = next(op.key for op in ops_of(arch) if op.key.startswith("Conv-"))
    assert t.ops[stem].mean_ms == pytest.approx(ats[0].ms[0]) and t.meta["complete"] is True
    sp = t.meta["wholenet"]["spread"][stem]
    assert sp["max_ms"] == pytest.approx(ats[0].ms[0] * 1.2) and sp["n"] == 3
    assert t.predict(arch) == pytest.approx(sum(ats[0].ms) + t.overhead_ms)
    assert len(t.meta["overhead_fit"]["arch_strings"]) == 3, "the networks double as speed probes for validate"


# ---------------------------------------------------------------------------------- Qualcomm AI Hub
def _hub():
    try:
        import qai_hub
        from qai_hub import public_api_pb2 as pb
        from qai_hub.client import _profile_pb_to_python_dict
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the qai-hub client is not installed ({e})")
        pytest.skip(f"qai-hub not installed ({e})")
    return qai_hub, pb, _profile_pb_to_python_dict


_TFLITE_OF = {"Conv": ["PAD", "CONV_2D", "HARD_SWISH"], "Conv_1": ["CONV_2D", "HARD_SWISH"],
              "AvgPool2D": ["MEAN"], "Conv_2": ["FULLY_CONNECTED", "HARD_SWISH"], "Logits": ["FULLY_CONNECTED"]}


def _tflite_layers(arch: ArchSpec) -> list[tuple[str, str]]:
    """(layer type, name) of the TFLite nodes a converted network runs, in order (as AI Hub lists them)."""
    out = []
    for op in ops_of(arch):
        name = op.key.split("-")[0]
        if name != "expanded_conv":
            out += [(t, f"{name}/{t}") for t in _TFLITE_OF[name]]
            continue
        k = dict(f.split(":") for f in op.key.split("-")[1:])
        act = ["HARD_SWISH"] if k["hs"] == "1" else []
        b = ([("CONV_2D", "expand")] + [(a, "expand_act") for a in act]) if k["expand"] != "1" else []
        b += [("PAD", "pad"), ("DEPTHWISE_CONV_2D", "dw")] + [(a, "dw_act") for a in act]
        if k["se"] == "1":
            b += [("MEAN", "se"), ("CONV_2D", "se1"), ("CONV_2D", "se2"), ("MUL", "hsig"), ("MUL", "scale")]
        b += [("CONV_2D", "project")] + ([("ADD", "residual")] if k["idskip"] == "1" else [])
        out += [(t, f"block{op.block_index}/{n}") for t, n in b]
    return out


def _profile_pb(pb, arch: ArchSpec, scale: float = 1.0):
    p = pb.ProfileDetail(major_version=1, minor_version=2)
    layers = _tflite_layers(arch)
    for i, (t, name) in enumerate(layers):
        p.layer_details.append(pb.LayerDetail(name=name, layer_type_name=t, compute_unit=pb.COMPUTE_UNIT_CPU,
                                              id=f":0:{i}", delegate_name="XNNPACK",
                                              execution_time=int((10 + i) * scale)))
    p.execution_time = int(sum((10 + i) * scale for i in range(len(layers))) + 50)
    return p


def test_aihub_profile_built_with_the_clients_protobufs_is_attributed():
    _qai, pb, to_dict = _hub()
    arch = _recorded_arch()
    d = to_dict(_profile_pb(pb, arch))  # what job.download_profile() returns
    prof = profile_from_aihub(d, {"runtime": "AI Hub (tflite)"})
    assert prof.total_ms == pytest.approx(d["execution_summary"]["estimated_inference_time"] / 1e3)
    assert prof.source["compute_units"] == {"CPU": len(d["execution_detail"])}
    at = attribute(arch, prof.entries)
    names = {op.key.split("-")[0]: [prof.entries[i].name for i in idx] for op, idx in zip(at.ops, at.entries)}
    assert names["Conv"] == ["Conv/PAD", "Conv/CONV_2D", "Conv/HARD_SWISH"]
    for op, idx in zip(at.ops, at.entries):  # each block got exactly its own layers
        if op.block_index >= 0 and op.key.startswith("expanded_conv"):
            assert {prof.entries[i].name.split("/")[0] for i in idx} == {f"block{op.block_index}"}
    with pytest.raises(InputError, match="not an AI Hub profile"):
        profile_from_aihub({"execution_detail": []})


class _FakeJob:
    def __init__(self, hub, job_id: str, model: str, fail: bool) -> None:
        self.hub, self.job_id, self.model, self.fail = hub, job_id, model, fail
        self.device = SimpleNamespace(name="Samsung Galaxy S9 (Family)", os="10",
                                      attributes=["chipset:qualcomm-snapdragon-845", "os:android"])

    def wait(self):
        return SimpleNamespace(success=not self.fail, code="FAILED" if self.fail else "SUCCESS",
                               message="device lost" if self.fail else "")

    def download_profile(self):
        arch = ArchSpec.from_string(Path(self.model).read_text())
        return self.hub.to_dict(_profile_pb(self.hub.pb, arch))


class _FakeHub:
    """The qai_hub calls the profiler makes, answered offline (the API is mocked, the profiles are real
    client protobufs converted by the client's own code)."""

    def __init__(self, qai, pb, to_dict, fail_on: int = -1) -> None:
        self.Device, self.pb, self.to_dict = qai.Device, pb, to_dict
        self.jobs: dict[str, _FakeJob] = {}
        self.submitted: list[str] = []
        self.fail_on = fail_on

    def submit_profile_job(self, model: str, device, name: str, options: str) -> _FakeJob:
        assert "chipset:qualcomm-snapdragon-845" in device.attributes and options == "--compute_unit cpu"
        self.submitted.append(model)
        job = _FakeJob(self, f"j{len(self.jobs)}", model, len(self.submitted) == self.fail_on)
        self.jobs[job.job_id] = job
        return job

    def get_job(self, job_id: str) -> _FakeJob:
        return self.jobs[job_id]


def test_aihub_jobs_resume_after_a_failed_job(tmp_path):
    qai, pb, to_dict = _hub()
    space = _small_space()
    d = design(space, ops_of_space(space, 32, 1.0, 10), 2, [32], [10])
    models = tmp_path / "models"
    models.mkdir()

    def whole_model(arch: ArchSpec) -> Path:  # the "converted" network: AI Hub only sees its bytes
        p = models / f"{arch.name}.tflite"
        p.write_text(arch.to_string())
        return p

    out = tmp_path / "sd845-aihub.json"
    jobs = profiles_dir(out) / "aihub_jobs.json"
    hub = _FakeHub(qai, pb, to_dict, fail_on=3)
    prof = AiHubProfiler(chipset="qualcomm-snapdragon-845", jobs_file=jobs, hub=hub)
    meta = {"device": "sd845-aihub", "soc": "Snapdragon 845", **prof.describe()}
    with pytest.raises(DeviceError, match="ended FAILED: device lost.*resume=true"):
        profile_design(d, prof, whole_model, out, meta, progress=False)
    partial = LatencyTable.load(out)
    assert partial.meta["wholenet"]["profiles"] == 2, "the table written so far is kept"
    assert len(json.loads(jobs.read_text())) == 2, "the failed job is not kept"
    # a job submitted but never collected (the run stopped while it ran) is reused, not submitted again
    pending = whole_model(d.networks[3])
    import hashlib

    j = hub.submit_profile_job(str(pending), prof._device(), "x", "--compute_unit cpu")
    book = json.loads(jobs.read_text())
    book[hashlib.sha256(pending.read_bytes()).hexdigest()] = {"job_id": j.job_id}
    jobs.write_text(json.dumps(book))
    n_submitted = len(hub.submitted)
    with pytest.raises(FileExistsError, match="resume=true"):
        profile_design(d, prof, whole_model, out, meta, progress=False)
    res = profile_design(d, prof, whole_model, out, meta, resume=True, progress=False)
    assert res.reused == [a.name for a in d.networks[:2]]
    assert len(hub.submitted) == n_submitted + len(d.networks) - 3, "finished and pending jobs are reused"
    t = res.table
    assert t.meta["complete"] is True and t.meta["wholenet"]["networks"] == len(d.networks)
    assert t.meta["chipset"] == "qualcomm-snapdragon-845" and t.meta["compute_unit"] == "cpu"
    assert all(t.meta["wholenet"]["spread"][k]["networks"] >= 2 for k in ops_of_space(space, 32, 1.0, 10))


@pytest.mark.skipif(not token_configured(), reason="no Qualcomm AI Hub token configured (qai-hub configure); "
                                                   "the live test runs only where one is")
def test_aihub_live_profile_job(whole_net):
    _hub()
    prof = AiHubProfiler(chipset="qualcomm-snapdragon-845")
    p = prof.profile_ops(whole_net)
    assert p.entries and p.total_ms > 0
    attribute(_recorded_arch(), p.entries)


# ---------------------------------------------------------------------------------- real profilers
@pytest.fixture(scope="module")
def whole_net(tmp_path_factory) -> Path:
    """The recorded fixture's network, converted (one conversion for these tests)."""
    from export.tflite import convert_to_tflite
    from latency_tables.measuring.host import whole_model_path

    return whole_model_path(_recorded_arch(), convert_to_tflite, tmp_path_factory.mktemp("whole"))


def test_litert_op_profiler_on_this_cpu(whole_net):
    from latency_tables.profilers.litert_ops import LiteRtOpProfiler

    p = LiteRtOpProfiler(cpus=[max(os.sched_getaffinity(0))], num_runs=5, repeats=2, profile_runs=5)
    prof = p.profile_ops(whole_net)
    assert prof.total_ms > 0 and [op_kind(e.node_type) for e in prof.entries] == \
        [op_kind(e.node_type) for e in parse_op_profile(_recorded()[1])], "the recorded structure, re-measured"
    assert p.describe()["compute_unit"] == "CPU"


def test_adb_op_profiling_on_the_fake_phone(whole_net, tmp_path, monkeypatch):
    from .test_profilers import FAKE_ADB, _elf
    from latency_tables.profilers import AdbProfiler

    adb = tmp_path / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_ADB} \"$@\"\n")
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_ADB_STATE", str(tmp_path / "phone"))
    monkeypatch.setenv("FAKE_ADB_OP_PROFILE", "1")
    prof = AdbProfiler("FAKE0845", _elf(tmp_path / "bm", 0xB7, 2), adb=str(adb), num_runs=3, warmup_runs=1,
                       repeats=2)
    p = prof.profile_ops(whole_net)
    at = attribute(_recorded_arch(), p.entries)
    assert p.total_ms > 0 and all(at.entries) and p.source["serial"] == "FAKE0845"
    runs = [json.loads(x)["bench"] for x in (tmp_path / "phone" / "calls.jsonl").read_text().splitlines()
            if '"bench"' in x]
    assert len(runs) == 2 and all("--enable_op_profiling=true" in r for r in runs)
    assert prof.enable_op_profiling is False, "op profiling is for whole-network profiles only"


def test_wholenet_command_dry_run_prints_the_design(capsys):
    import spnas
    from spnas.app.jobs.profile import cmd_wholenet

    cfg = spnas.compose("profile", ["command=wholenet", "resolutions=[224]", "num_classes=[1000]",
                                    "wholenet.dry_run=true"])
    d = cmd_wholenet(cfg)
    out = capsys.readouterr().out
    assert "11 networks (8 of space 'mbv3_large', 3 reference nets)" in out and "91 device runs" in out
    assert len(d.networks) == 11
