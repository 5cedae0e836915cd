"""Importers reproduce their sources (tried on the public files), and the modeled Snapdragon tables."""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from latency_tables.importing.importers import import_ofa_yaml, import_spnas_json
from latency_tables.lookup.keys import ops_of, ops_of_space
from latency_tables.modelling.modeled import METHOD, SPECS, fit_measured, modeled_table
from latency_tables.lookup.predictor import SpaceLatency, latency_breakdown, predict_latency_ms
from latency_tables.lookup.table import LatencyTable, MissingOpsError, OpStats
from search_spaces import SKIP, ArchSpec, default_space, mobilenet_v2
from search_spaces.spaces import SPACES
from spnas_core.errors import TableError

FIX = Path(__file__).with_name("fixtures")
OFFICIAL = FIX / "spnas_pixel1_runtime_model.json"  # enyac-group/single-path-nas nas-search/pixel1_runtime_model.json


def official_runtime(lut: dict, choices: list[str], fixed: float = 19.5999) -> float:
    """The official runtime model (singlepath_supernet.py + superkernel.py), written out independently:
    per searchable layer R50c * (ratio + (1 - ratio) * d5x5) with R50c = R[2] + d100c (R[3] - R[2]),
    ratio = R[1] / R[3]; a skipped layer costs 0; blocks 0 and 21 are inside the fixed part."""
    total = fixed
    for li, c in enumerate(choices):
        if c == SKIP:
            continue
        r = [lut[str(li + 1)][str(i)] for i in range(4)]
        d5, d100 = float(c.startswith("k5")), float(c.endswith("e6"))
        r_c = r[2] + d100 * (r[3] - r[2])
        ratio = r[1] / r[3]
        total += r_c * ratio + r_c * (1 - ratio) * d5
    return total


# ---------------------------------------------------------------------------------- Single-Path NAS
def test_spnas_official_table_imports_whole_and_reproduces_the_runtime_model():
    space = SPACES["spnas_mnasnet"]
    mbconv = [b for b in space.decode(["k5_e6"] * space.num_layers).blocks if b.kind == "ir"]
    assert len(mbconv) == 22 and space.num_layers == 20
    lut = json.loads(OFFICIAL.read_text())
    t = import_spnas_json(OFFICIAL, space)
    rng = random.Random(0)
    for _ in range(300):
        choices = [rng.choice(s.choices) for s in space.slots]
        assert predict_latency_ms(space.decode(choices, 224), t) == pytest.approx(official_runtime(lut, choices),
                                                                                 abs=1e-9)
    # the smallest and largest nets, and the differentiable form with hard decisions
    assert predict_latency_ms(space.largest(224), t) == pytest.approx(official_runtime(lut, ["k5_e6"] * 20), abs=1e-9)
    sl = SpaceLatency(space, t, 224, 1.0, 1000)
    assert sl.fixed_ms == pytest.approx(19.5999)
    choices = [rng.choice(s.choices) for s in space.slots]
    keep = torch.tensor([0.0 if c == SKIP else 1.0 for c in choices], dtype=torch.float64)
    k = torch.tensor([1.0 if c.startswith("k5") else 0.0 for c in choices], dtype=torch.float64)
    e = torch.tensor([1.0 if c.endswith("e6") else 0.0 for c in choices], dtype=torch.float64)
    assert float(sl.expected_ms(keep, k, e)) == pytest.approx(official_runtime(lut, choices), abs=1e-9)
    # layers 2, 3 and 4 share a shape but keep their own figures (no averaging)
    arch = space.decode(["k5_e6"] * 20, 224)
    rows = {r["block_index"]: r for r in latency_breakdown(arch, t)}
    assert rows[3]["ms"] == pytest.approx(lut["2"]["3"]) and rows[4]["ms"] == pytest.approx(lut["3"]["3"])
    assert rows[3]["key"].replace("-block:3", "") == rows[4]["key"].replace("-block:4", "")
    assert any(r["source"] == "group" for r in latency_breakdown(arch, t)), "the fixed part is one group row"
    # k3e3 is the official estimate, not the measured index-0 figure, unless asked
    k3 = space.decode(["k3_e3"] * 20, 224)
    assert predict_latency_ms(k3, t) != pytest.approx(19.5999 + sum(lut[str(i)]["0"] for i in range(1, 21)))
    measured = import_spnas_json(OFFICIAL, space, k3e3="measured")
    assert predict_latency_ms(k3, measured) == pytest.approx(19.5999 + sum(lut[str(i)]["0"] for i in range(1, 21)))
    # another class count: only the classifier's share of the fixed part changes
    ten = predict_latency_ms(space.largest(224, num_classes=10), t)
    assert official_runtime(lut, ["k5_e6"] * 20) - 0.295 < ten < official_runtime(lut, ["k5_e6"] * 20)


def test_spnas_import_runs_in_a_search(cifar_root, tmp_path):
    """`spnas-search space=spnas_mnasnet soc.table=<imported>` runs (2 steps) and its derived net is priced
    by the official model."""
    import spnas
    from spnas.app.jobs import commands

    out = tmp_path / "pixel1-spnas.json"
    import_spnas_json(OFFICIAL, SPACES["spnas_mnasnet"], device="pixel1-spnas").save(out)
    cfg = spnas.compose("search", ["space=spnas_mnasnet", f"soc.table={out}", "data=cifar10", f"data.root={cifar_root}",
                                   "data.train_limit=256", "data.val_limit=64", "data.test_limit=64",
                                   f"data.cache_dir={tmp_path / 'cache'}", "search.steps=3", "search.warmup_fraction=0",
                                   "search.min_threshold_updates=0", "search.batch_size=16", "threads=2",
                                   "search.finalists.radius=0",  # tested in tests/nas/test_finalists.py
                                   # the default budget is a fraction of MobileNetV2, which this table cannot price
                                   "search.target_ms=60", f"run_dir={tmp_path / 'run'}"])
    s = commands.search(cfg)
    lut = json.loads(OFFICIAL.read_text())
    arch = ArchSpec.from_dict(json.loads((tmp_path / "run" / "arch.json").read_text()))
    choices = SPACES["spnas_mnasnet"].encode(arch)
    pred = predict_latency_ms(arch.replace(resolution=224, num_classes=1000), LatencyTable.load(out))
    assert pred == pytest.approx(official_runtime(lut, choices), abs=1e-9)
    assert s["predicted_ms"] > 19.5999


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update({"5b": d.pop("5")}), "layer keys must be 0..21"),
    (lambda d: d.pop("21"), "21 layers|another space"),
    (lambda d: d["7"].update({"2": "fast"}), "layer 7 choice 2"),
    (lambda d: d["7"].pop("3"), "layer 7 lacks"),
    (lambda d: d["7"].update({"3": -1.0}), "layer 7 choice 3"),
])
def test_spnas_json_is_parsed_strictly(tmp_path, mutate, match):
    d = json.loads(OFFICIAL.read_text())
    mutate(d)
    p = _write(tmp_path, "lut.json", json.dumps(d))
    with pytest.raises(TableError, match=match):
        import_spnas_json(p, SPACES["spnas_mnasnet"])


def test_truncated_json_names_line_and_nothing_is_written(tmp_path):
    import spnas
    from spnas.app.jobs.profile import cmd_import

    text = OFFICIAL.read_text()
    p = _write(tmp_path, "cut.json", text[: len(text) // 2])
    out = tmp_path / "out.json"
    cfg = spnas.compose("profile", ["command=import", f"source.path={p}", f"source.out={out}", "space=spnas_mnasnet"])
    with pytest.raises(TableError, match=r"cut\.json:\d+:\d+: not valid JSON"):
        cmd_import(cfg)
    assert not out.exists()
    # a name that disagrees with the content: the content wins, a given format that disagrees is an error
    cfg = spnas.compose("profile", ["command=import", f"source.path={OFFICIAL}", f"source.out={out}",
                                    "source.format=ofa", "space=spnas_mnasnet"])
    with pytest.raises(TableError, match="Single-Path NAS runtime JSON, but source.format=ofa"):
        cmd_import(cfg)
    assert not out.exists()
    renamed = _write(tmp_path, "lut.yaml", OFFICIAL.read_text() + "\n")
    cfg = spnas.compose("profile", ["command=import", f"source.path={renamed}", f"source.out={out}",
                                    "space=spnas_mnasnet"])
    assert cmd_import(cfg) == out and LatencyTable.load(out).meta["method"]["format"] == "spnas"


# ---------------------------------------------------------------------------------- OFA / ProxylessNAS
def _yaml_from_csv(csv_path: Path, out: Path, where=lambda r: True) -> dict[str, dict]:
    """The public table in the YAML form its project ships (key: {count, mean, std})."""
    rows = {}
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            if where(r):
                rows[r["lut_key"]] = {"count": int(r["n_samples"]), "mean": float(r["latency_mean_ms"]),
                                      "std": float(r["latency_std_ms"])}
    out.write_text(yaml.safe_dump(rows, sort_keys=False))
    return rows


def test_proxylessnas_pixel1_table_predicts_what_its_lookup_code_predicts(latency_data, tmp_path):
    from latency_tables.modelling.sources import PROXYLESS_MOBILE, proxyless_mobile_blocks

    rows = _yaml_from_csv(latency_data / "proxylessnas_mobile_lut_pixel1.csv", tmp_path / "mobile_trim.yaml")
    t = import_ofa_yaml(tmp_path / "mobile_trim.yaml")
    assert t.meta["method"]["expand"] == "ratio" and t.meta["method"]["flavour"] == "proxylessnas"
    # ProxylessNASLatencyTable.predict_network_latency: first conv, blocks, feature mix, Logits (pool + FC)
    keys = ["Conv-input:224x224x3-output:112x112x32"]
    h, c = 112, 32
    for e, k, s, cout in PROXYLESS_MOBILE:
        ho = h // s
        idskip = int(s == 1 and c == cout)
        keys.append(f"expanded_conv-input:{h}x{h}x{c}-output:{ho}x{ho}x{cout}-expand:{e}-kernel:{k}-stride:{s}"
                    f"-idskip:{idskip}")
        h, c = ho, cout
    keys += ["Conv_1-input:7x7x320-output:7x7x1280", "Logits-input:7x7x1280-output:1000"]
    expected = sum(rows[k]["mean"] for k in keys)
    arch = ArchSpec.from_blocks(proxyless_mobile_blocks(), 224, 1.0, 1000)
    assert predict_latency_ms(arch, t) == pytest.approx(expected, abs=1e-9)
    assert any(r["source"] == "group" for r in latency_breakdown(arch, t)), "pooling + logits as one row"
    # another class count: the FC's share is rescaled, the network is still predicted
    assert 0 < predict_latency_ms(arch.replace(num_classes=10), t) < expected


OFA_STAGES = [(32, 2, False, False), (48, 2, True, False), (96, 2, False, True), (136, 1, True, True),
              (192, 2, True, True)]


def test_ofa_note10_table_predicts_what_its_lookup_code_predicts(latency_data, tmp_path):
    rows = _yaml_from_csv(latency_data / "ofa_mbv3_lut_note10.csv", tmp_path / "224_lookup_table.yaml",
                          lambda r: r["image_size"] == "224")
    t = import_ofa_yaml(tmp_path / "224_lookup_table.yaml")
    assert t.meta["method"]["expand"] == "channels" and t.meta["method"]["flavour"] == "ofa-mbv3"
    rng = random.Random(1)
    for _ in range(20):
        # MobileNetV3 OFA (width 1.2): random kernel / expansion per layer, depth 2-4 per stage
        blocks = ["conv_k3_c24_s2_hs", "ir_k3_e1_c24_s1"]
        keys = ["Conv-input:224x224x3-output:112x112x24",
                "expanded_conv-input:112x112x24-output:112x112x24-expand:24-kernel:3-stride:1-idskip:1-se:0-hs:0"]
        h, c = 112, 24
        for width, stride, se, hs in OFA_STAGES:
            for i in range(rng.choice([2, 3, 4])):
                k, e = rng.choice([3, 5, 7]), rng.choice([3, 4, 6])
                s = stride if i == 0 else 1
                ho = h // s
                blocks.append(f"ir_k{k}_e{e}_c{width}_s{s}{'_se' if se else ''}{'_hs' if hs else ''}")
                keys.append(f"expanded_conv-input:{h}x{h}x{c}-output:{ho}x{ho}x{width}-expand:{c * e}-kernel:{k}"
                            f"-stride:{s}-idskip:{int(i > 0)}-se:{int(se)}-hs:{int(hs)}")
                h, c = ho, width
        blocks += ["conv_k1_c1152_s1_hs", "pool", "fc_c1536_hs"]
        keys += ["Conv_1-input:7x7x192-output:7x7x1152", "AvgPool2D-input:7x7x1152-output:1x1x1152",
                 "Conv_2-input:1x1x1152-output:1x1x1536", "Logits-input:1x1x1536-output:1000"]
        arch = ArchSpec.from_blocks(blocks, 224, 1.0, 1000)
        assert predict_latency_ms(arch, t) == pytest.approx(sum(rows[k]["mean"] for k in keys), abs=1e-9)
    # the stem, final expand and feature mix are h-swish in OFA's MobileNetV3
    assert "Conv-input:224x224x3-output:112x112x24-kernel:3-stride:2-hs:1" in t.ops
    assert "Conv_1-input:7x7x192-output:7x7x1152-kernel:1-stride:1-hs:1" in t.ops
    assert "Conv_2-input:1x1x1152-output:1x1x1536-hs:1" in t.ops
    # a meaning of expand that the rows contradict is refused, never applied silently
    with pytest.raises(TableError, match="source.expand=ratio.*expanded channel count"):
        import_ofa_yaml(tmp_path / "224_lookup_table.yaml", expand="ratio")


def _rows_text(path: Path, n: int | None = None) -> str:
    """The first `n` rows of a YAML table, cut exactly at a row boundary (the file still ends in a newline)."""
    lines = path.read_text().splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if not ln.startswith(" ")]
    return "".join(lines[:starts[n]] if n is not None and n < len(starts) else lines)


def test_a_yaml_table_cut_at_a_row_boundary_is_one_clear_error_or_an_explicit_partial_import(latency_data, tmp_path):
    """ProxylessNAS' mobile_trim.yaml (72 rows) cut after 9 rows is valid YAML ending in a newline: the import
    refuses it, naming what a whole table would have; `allow_partial=True` imports the 9 rows and says
    what is missing. A cut inside the last block shape's choices is caught the same way."""
    _yaml_from_csv(latency_data / "proxylessnas_mobile_lut_pixel1.csv", tmp_path / "mobile_trim.yaml")
    whole = import_ofa_yaml(tmp_path / "mobile_trim.yaml")
    assert whole.meta["complete"] is True and whole.meta["missing"] == []
    cut = _write(tmp_path, "cut.yaml", _rows_text(tmp_path / "mobile_trim.yaml", 9))
    assert cut.read_text().endswith("\n") and len(yaml.safe_load(cut.read_text())) == 9
    with pytest.raises(TableError, match=r"cut\.yaml: 9 rows that do not make a whole table: .*cut short.*"
                                         r"source\.allow_partial=true"):
        import_ofa_yaml(cut)
    part = import_ofa_yaml(cut, allow_partial=True)
    assert part.meta["complete"] is False and part.meta["missing"] and len(part) + len(part.meta["groups"]) == 9
    # every row but the last: the last block shape lacks one of its six choices
    n = len(yaml.safe_load((tmp_path / "mobile_trim.yaml").read_text()))
    short = _write(tmp_path, "short.yaml", _rows_text(tmp_path / "mobile_trim.yaml", n - 1))
    with pytest.raises(TableError, match=r"has 5 of the 6 choices"):
        import_ofa_yaml(short)


def test_spnas_profile_import_refuses_a_cut_table_and_shows_the_partial_warning(latency_data, tmp_path):
    """Through the command: a cut table is one error line (exit 4); with source.allow_partial=true the import
    succeeds and its warning reaches the user (commands no longer hide warnings)."""
    import subprocess
    import sys

    _yaml_from_csv(latency_data / "proxylessnas_mobile_lut_pixel1.csv", tmp_path / "mobile_trim.yaml")
    cut = _write(tmp_path, "cut.yaml", _rows_text(tmp_path / "mobile_trim.yaml", 9))
    cmd = [str(Path(sys.executable).parent / "spnas-profile"), "import", f"source.path={cut}",
           f"source.out={tmp_path / 'out.json'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4 and "spnas-profile: error:" in r.stderr and "cut short" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "out.json").exists()
    r = subprocess.run(cmd + ["source.allow_partial=true"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[WARNING] " in r.stderr and "importing a partial table" in r.stderr, r.stderr[-2000:]
    assert LatencyTable.load(tmp_path / "out.json").meta["missing"]


def test_ambiguous_expand_must_be_given(tmp_path):
    p = _write(tmp_path, "t.yaml", "expanded_conv-input:7x7x4-output:7x7x4-expand:6-kernel:3-stride:1-idskip:1:\n"
                                   "  count: 10\n  mean: 0.1\n  std: 0.01\n")
    with pytest.raises(TableError, match="both meanings.*source.expand"):
        import_ofa_yaml(p)
    assert "expanded_conv-input:7x7x4-output:7x7x4-expand:6-kernel:3-stride:1-idskip:1-se:0-hs:0" in \
        import_ofa_yaml(p, expand="ratio", allow_partial=True).ops


GOOD_YAML = """Conv-input:224x224x3-output:112x112x32:
  count: 982
  mean: 4.083756
  std: 0.500237
Conv_1-input:7x7x320-output:7x7x1280:
  count: 982
  mean: 3.088623
  std: 0.437889
"""


@pytest.mark.parametrize("text,match", [
    (GOOD_YAML[:-5], r"t\.yaml:8: the file ends inside a line .*truncated"),  # cut inside a number
    (GOOD_YAML.replace("  std: 0.437889\n", ""), r"t\.yaml:5: .*neither 'std' nor 'var'"),
    (GOOD_YAML.replace("count: 982\n  mean: 3.088623", "count: 982\n  mean: fast"), r"t\.yaml:7: .*mean 'fast'"),
    (GOOD_YAML + GOOD_YAML, r"t\.yaml:9: row 'Conv-input.*repeats the row of line 1"),
    (GOOD_YAML.replace("count: 982", "count: 0", 1), r"t\.yaml:2: .*count 0"),
    (GOOD_YAML.replace("Conv_1-input:7x7x320", "Conv_1-input:7xAx320"), r"t\.yaml:5: .*bad shape"),
])
def test_yaml_is_parsed_strictly(tmp_path, text, match):
    p = _write(tmp_path, "t.yaml", text)
    with pytest.raises(TableError, match=match):
        import_ofa_yaml(p)


# ---------------------------------------------------------------------------------- modeled tables
@pytest.mark.parametrize("soc", sorted(SPECS))
def test_modeled_table_meta_names_method_sources_and_validation(soc):
    t = LatencyTable.load(soc)
    m = t.meta["method"]
    assert t.provenance == "modeled" and m["name"] == METHOD
    assert any(".csv" in s for s in m["sources"]) and ".csv:" in m["fit"]["rows"]
    assert m["fit"]["residuals"]["n"] >= 50 and 0 < m["fit"]["residuals"]["mape_pct"] < 20
    v = m["validation"]
    for check in ("leave_one_device_out", "whole_network_ratios", "shared_keys"):
        assert "met" in v[check] and "target" in json.dumps(v[check])
    assert m["calibration"]["predicted_ms"] == pytest.approx(SPECS[soc].calibration_ms, rel=1e-6)
    assert m["mapping"]["group_factors"] and m["base_device"]["phone"]


@pytest.mark.parametrize("soc", sorted(SPECS))
def test_modeled_tables_reproduce_calibration(soc):
    got = predict_latency_ms(mobilenet_v2(), LatencyTable.load(soc))
    assert got == pytest.approx(SPECS[soc].calibration_ms, rel=1e-6)


def test_a_modeled_table_answers_any_op_and_marks_it():
    t = LatencyTable.load("sd845")
    arch = default_space().decode(["k5_e6"] * 14, 224, num_classes=8)
    key = "Logits-input:1x1x1280-output:8"
    assert key not in t.ops
    ms = predict_latency_ms(arch, t)
    assert ms > 0 and t.source_of(key) == "model" and key in t.derived
    assert [r["source"] for r in latency_breakdown(arch, t)][-1] == "model"
    for other in (arch.replace(width=0.5), arch.replace(resolution=96), mobilenet_v2(resolution=160, width=0.75)):
        assert 0 < predict_latency_ms(other, t) < ms * 1.5


def test_shipped_tables_rank_ops_differently():
    from scipy.stats import kendalltau

    keys = ops_of_space(default_space(), 224)
    v = {n: np.array([LatencyTable.load(n).ms(k) for k in keys]) for n in SPECS}
    assert kendalltau(v["sd845"], v["sd808"])[0] < 0.97, "the Pixel 3 and Pixel 1 profiles disagree"
    r = v["sd808"] / v["sd845"]
    assert r.max() / r.min() > 1.3, "sd808 is not sd845 scaled by a constant"


def test_regenerating_from_the_public_data_reproduces_the_shipped_tables(latency_data):
    fits = fit_measured(latency_data)
    for soc in ("sd845", "sd808"):
        shipped = LatencyTable.load(soc)
        fresh = modeled_table(SPECS[soc], fits, list(shipped.ops))
        for k in list(shipped.ops)[::7]:
            assert fresh.ms(k) == pytest.approx(shipped.ms(k), rel=1e-9), k


def test_a_measured_table_estimates_other_class_counts_or_names_the_phone_command():
    arch = mobilenet_v2(num_classes=1000)
    keys = [op.key for op in ops_of(arch)]
    meta = {"device": "sd845-measured", "soc": "Snapdragon 845", "soc_name": "sd845", "provenance": "measured",
            "runtime": "TFLite benchmark_model (adb)", "threads": 1, "date": "x"}
    t = LatencyTable(meta, {k: OpStats(0.5, 0.0, 10) for k in keys})
    eight = predict_latency_ms(arch.replace(num_classes=8), t)
    est = t.derived["Logits-input:1x1x1280-output:8"]
    assert est[1].startswith("estimate") and est[0] == pytest.approx(0.5 * (1280 * 8 + 1288) / (1280 * 1000 + 2280))
    assert eight < predict_latency_ms(arch, t)
    with pytest.raises(MissingOpsError, match=r"spnas-profile device=adb soc=sd845 .*table_name=sd845-measured "
                                              r"resume=true"):
        predict_latency_ms(arch.replace(resolution=160), t)


def test_spnas_json_of_searchable_layers_only_has_no_fixed_part():
    """A file with one row per searchable layer (no fixed blocks): rows import, the table says it is partial
    and a prediction names the ops only a measurement can add."""
    space = default_space()
    t = import_spnas_json(FIX / "spnas_runtime.json", space, fixed_ms=None)
    assert t.meta["complete"] is False and "groups" not in t.meta
    assert len(t.ops) == sum(len([c for c in s.choices if c != SKIP]) for s in space.slots)
    with pytest.raises(MissingOpsError, match="imported table holds only the ops its source measured"):
        predict_latency_ms(space.largest(224), t)
