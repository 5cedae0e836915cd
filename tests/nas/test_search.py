"""The search loop on tiny real data: the latency term changes what is derived; logs, arch.json, resume."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latency_tables.lookup.predictor import predict_latency_ms
from latency_tables.lookup.table import LatencyTable
from nas.config import LossForm
from search_spaces import ArchSpec
from training.datasets import load_data

from ..conftest import compose

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, cifar_root, lam, name, **search):
    return compose("search", [
        "soc=sd845", f"data.root={cifar_root}", "data.train_limit=320", "data.test_limit=50",
        f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / name}", "search=demo",
        "search.steps=27", "search.warmup_fraction=0", "search.min_threshold_updates=0", "search.batch_size=32",
        "search.loss=log", f"search.latency_lambda={lam}",
        "search.thresholds.lr=0.02", "threads=2"] + [f"search.{k}={v}" for k, v in search.items()])


@pytest.fixture(scope="module")
def tiny(cifar_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    cfg = _cfg(tmp, cifar_root, 0.0, "x")
    return tmp, load_data(cfg.data, cfg.seed)


def test_huge_lambda_derives_faster_arch_than_zero_lambda(tiny, cifar_root):
    from spnas.app.jobs import commands

    tmp, data = tiny
    free = commands.search(_cfg(tmp, cifar_root, 0.0, "lam0"), data=data)
    costly = commands.search(_cfg(tmp, cifar_root, 50.0, "lam50"), data=data)
    assert costly["predicted_ms"] < free["predicted_ms"], (free["choices"], costly["choices"])
    big_ops = lambda s: sum(c in ("k5_e6",) for c in s["choices"])  # noqa: E731
    assert big_ops(costly) < big_ops(free)
    # artifacts: arch.json in the grammar, per-epoch log with every layer's decision, plot, all tables
    run = tmp / "lam50"
    arch = ArchSpec.load(run / "arch.json")
    assert arch.num_classes == 10 and arch.resolution == 32
    log = [json.loads(line) for line in (run / "search_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(len(r["choices"]) == 14 for r in log)
    assert {"ce", "val_top1", "predicted_ms", "thresholds", "flips"} <= set(log[0])
    assert {"ms_ring", "ms_e6", "ms_e3", "margin_kernel", "margin_expand", "margin_keep"} <= set(log[0]["thresholds"][1])
    assert (run / "search_progress.png").stat().st_size > 1000
    assert set(costly["predicted_ms_all_tables"]) >= {"sd845", "sd670", "sd808", "sd801"}
    deployed = arch.replace(resolution=224)
    assert costly["predicted_ms_all_tables"]["sd845"] == pytest.approx(
        predict_latency_ms(deployed, LatencyTable.load("sd845")))
    assert costly["predicted_ms"] == pytest.approx(costly["predicted_ms_all_tables"]["sd845"])
    # the default finalists step (docs/groundtruth.md): one layer change around the derived network, ranked by
    # NASWOT and the layer count; with no target the derived network's cost is the budget
    for s in (free, costly):
        f = s["finalists"]
        assert (f["radius"], f["proxy"]) == (1, "naswot_layers")
        assert f["ranked"][0]["choices"] == s["choices"] and s["cost"] <= f["budget"] + 1e-9
        assert f["n"] >= 1 and all(r["proxy"] is not None for r in f["ranked"])
    assert free["finalists"]["n"] > 1  # every network one change from the largest is cheaper: all are finalists


def test_target_loss_forms():
    from nas.cost import latency_loss

    r = torch.tensor(50.0)
    assert float(latency_loss(r, LossForm.log, None)) == pytest.approx(torch.log(r).item())
    assert float(latency_loss(r, LossForm.target, 100.0)) == pytest.approx(abs(torch.log(torch.tensor(0.5)).item()))
    assert float(latency_loss(r, LossForm.target_one_sided, 100.0)) == 0.0
    assert float(latency_loss(torch.tensor(200.0), LossForm.target_one_sided, 100.0)) > 0
    with pytest.raises(ValueError, match="target_ms"):
        latency_loss(r, LossForm.target, None)


def test_search_killed_mid_run_resumes(cifar_root, tmp_path):
    run = tmp_path / "run"
    cmd = [str(BIN / "spnas-search"), "soc=sd808", f"data.root={cifar_root}", "data.train_limit=640",
           "data.test_limit=50", f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={run}", "search=demo",
           "search.steps=54", "search.min_threshold_updates=0", "search.batch_size=32", "threads=1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "last.pt").exists():
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "arch.json").exists()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 8 and "resume=true" in r.stderr
    r = subprocess.run(cmd + ["resume=true"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(line) for line in (run / "search_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert ArchSpec.load(run / "arch.json").name == "spnas-sd808"
