"""A training run killed after epoch 1 and resumed reaches the same weights as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _cmd(run_dir: Path, cache: Path, fm_root: Path, resume: bool) -> list[str]:
    return [str(Path(sys.executable).parent / "spnas-train"), f"run_dir={run_dir}", "arch=mobilenet_v3_small",
            "data=fashion_mnist", f"data.root={fm_root}", "data.train_limit=1000", "data.test_limit=200",
            f"data.cache_dir={cache}", "train.epochs=3", "train.min_steps=0", "train.batch_size=64", "threads=1", "seed=5",
            f"resume={'true' if resume else 'false'}"]


def test_kill_after_epoch_1_then_resume_matches(fashion_mnist_root, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cache = tmp_path / "cache"
    # uninterrupted reference run
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref, cache, fashion_mnist_root, False), check=True, cwd=ROOT, env=env,
                   capture_output=True)
    # run that gets SIGKILLed as soon as the epoch-1 checkpoint lands
    run = tmp_path / "run"
    p = subprocess.Popen(_cmd(run, cache, fashion_mnist_root, False), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "last.pt").exists():
        assert p.poll() is None, "training exited before writing its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    subprocess.run(_cmd(run, cache, fashion_mnist_root, True), check=True, cwd=ROOT, env=env,
                   capture_output=True)
    a = torch.load(ref / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3, "metrics.jsonl must hold each epoch once"


def test_existing_checkpoint_without_resume_is_refused(fashion_mnist_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 1}, run / "last.pt")
    r = subprocess.run(_cmd(run, tmp_path / "cache", fashion_mnist_root, False), cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 8 and "resume=true" in r.stderr
