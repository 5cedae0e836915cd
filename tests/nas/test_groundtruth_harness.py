"""The ground-truth harness (bench/bench_groundtruth.py) in worker processes: two one-thread workers running the
seeds' warm-ups, searches and training-free searches side by side must compute exactly what one process with one
thread computes in order (same supernet weights, picks, ranking curve), and hand a search out only after its
seed's warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.bench_groundtruth import task_order

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv,message", [(["--jobs", "0"], "--jobs 0: give 1"),
                                          (["--seeds", "0", "0"], "--seeds 0 0: each seed once")])
def test_bad_arguments_refused_before_any_loading(argv: list[str], message: str, tmp_path: Path) -> None:
    """One line, and before the table and CIFAR-10 are loaded: a missing table path does not get in the way."""
    from bench.bench_groundtruth import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--table", str(tmp_path / "absent.json"), "--out", str(tmp_path / "run")])
    assert str(e.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_task_order_puts_each_search_after_its_warmup():
    order = task_order([3, 7], [30.0, 45.0])
    assert order[:2] == [("warmup", 3, None), ("warmup", 7, None)]
    assert order[2:6] == [("search", 3, 30.0), ("search", 3, 45.0), ("search", 7, 30.0), ("search", 7, 45.0)]
    assert order[6:] == [("free", 3, None), ("free", 7, None)]


def _harness(out: Path, jobs: int, threads: int, cifar_root: Path, table: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "bench.bench_groundtruth", "--quick", "--seeds", "0", "1", "--targets",
                        "45", "--rank-nets", "12", "--rank-points", "1.0", "--proxy-samples", "2", "--jobs", str(jobs),
                        "--out", str(out), "--table", str(table), f"threads={threads}", f"data.root={cifar_root}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"in {jobs} worker{'s' if jobs > 1 else ''} of 1 threads" in r.stdout
    assert "[6/6]" in r.stdout  # every task reported, with its time and what is left
    return json.loads((out / "quick.json").read_text())


@pytest.mark.slow
def test_two_workers_compute_what_one_process_computes(cifar_root, nasbench_macro_file, tmp_path):
    par = _harness(tmp_path / "par", 2, 2, cifar_root, nasbench_macro_file)  # 2 threads split: 1 per worker
    seq = _harness(tmp_path / "seq", 1, 1, cifar_root, nasbench_macro_file)
    assert par["jobs"] == 2 and seq["jobs"] == 1 and par["threads_per_job"] == seq["threads_per_job"] == 1
    assert par["task_processes"] == 2 and seq["task_processes"] == 1  # two workers really ran the tasks
    assert par["searches"].keys() == {"0", "1"}
    for s in ("0", "1"):
        for k in ("winner", "derived"):
            assert par["searches"][s]["45"][k] == seq["searches"][s]["45"][k]
        a = torch.load(tmp_path / "par" / f"s{s}" / "T45" / "supernet.pt", weights_only=False)["state_dict"]
        b = torch.load(tmp_path / "seq" / f"s{s}" / "T45" / "supernet.pt", weights_only=False)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert par["training_free"] == seq["training_free"]

    def curve(run: str) -> list:
        return [{k: v for k, v in p.items() if k != "score_s"}
                for p in json.loads((tmp_path / run / "ranking_curve.json").read_text())]

    assert curve("par") == curve("seq") and len(curve("par")) == 1
    # each kind of task's wall time (summed over the workers) and the time they took side by side
    assert {"warmups", "searches", "training_free", "ranking_scoring", "tasks_elapsed", "total"} <= par["walls_s"].keys()
