"""A search on NAS-Bench-Macro's space, end to end: `spnas-search experiment=nasbench_macro` trains the supernet on
real CIFAR-10 images (tiny here), searches under a FLOPs budget, ranks the finalists, and prints the winner's rank,
percentile and regret among the benchmark's networks within that budget beside the exact controls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nas.groundtruth import NasBenchMacro, judge
from search_spaces.nasbench_macro import canonical, code_of

BIN = Path(sys.executable).parent
TINY = ["search.steps=24", "search.warmup_fraction=0.5", "search.min_threshold_updates=8",
        "search.decision_window_steps=4", "search.batch_size=32", "data.train_limit=480", "data.val_limit=100",
        "search.finalists.radius=1", "search.finalists.recal_images=16", "search.finalists.eval_images=32",
        "threads=2"]


def test_a_tiny_search_on_nasbench_macro_is_judged_by_ground_truth(cifar_root, nasbench_macro_file, tmp_path):
    run_dir = tmp_path / "search"
    r = subprocess.run([str(BIN / "spnas-search"), "experiment=nasbench_macro", "search.target_ms=80",
                        f"data.root={cifar_root}", f"groundtruth.path={nasbench_macro_file}", f"run_dir={run_dir}",
                        *TINY], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run_dir / "search_summary.json").read_text())
    winner = canonical(code_of(summary["choices"]))
    gt = NasBenchMacro.load(nasbench_macro_file)
    want = judge(gt, winner, lambda c: gt[c].flops / 1e6, 80.0)
    assert summary["groundtruth"]["winner"]["rank"] == want.rank and want.within_budget
    assert f"rank {want.rank} of {want.n:,} within budget" in r.stdout and "best of 10 random" in r.stdout
    assert summary["finalists"]["n"] >= 1 and summary["cost"] <= 80.0
    assert summary["arch"]["blocks"][0] == "conv_k3_c32_s1" and summary["cost_unit"] == "MFLOPs"
    assert summary["finalists"]["ranked"][0]["choices"] == summary["choices"]


def test_groundtruth_needs_its_space(cifar_root, tmp_path):
    r = subprocess.run([str(BIN / "spnas-search"), "groundtruth.enabled=true", f"data.root={cifar_root}",
                        f"run_dir={tmp_path}", "search.steps=4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "only space=nasbench_macro has ground truth" in r.stderr
