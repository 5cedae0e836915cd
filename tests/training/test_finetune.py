"""The product-domain fine-tuning: an embedding head on a proxy-trained backbone, a margin loss,
unit embeddings out, and a run that resumes after a kill to the weights of an uninterrupted one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SCRIPT = """
import sys
from dataclasses import replace
import spnas
from spnas.app.jobs.retrieval_eval import load_retrieval_data
from training.finetune import finetune_embedder
model_pt, root, cache, run_dir, resume = sys.argv[1:6]
cfg = spnas.compose("pipeline", [f"retrieval.data.root={root}", "retrieval.data.train_limit=96",
                                 "retrieval.data.test_limit=16", "retrieval.data.val_limit=16",
                                 f"retrieval.data.cache_dir={cache}", "finetune.resolution=48",
                                 "finetune.recipe.epochs=3", "finetune.recipe.min_steps=0", "finetune.recipe.batch_size=16", "threads=1"])
data = load_retrieval_data(replace(cfg.retrieval.data, resolution=48))
finetune_embedder(model_pt, data, cfg.finetune, cfg.proxy, run_dir, seed=3, resume=resume == "1")
"""


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_finetune_resumes_after_a_kill(small_model, grocery_root, tmp_path):
    from training.checkpoints import load_model_file

    base = [str(small_model), str(grocery_root), str(tmp_path / "cache")]
    ref = _run([*base, str(tmp_path / "ref"), "0"], tmp_path)
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-3000:]
    run = tmp_path / "run"
    p = _run([*base, str(run), "0"], tmp_path)
    deadline = time.time() + 600
    while not (run / "last.pt").exists():
        assert p.poll() is None and time.time() < deadline, "fine-tuning ended before its first checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "model.pt").exists()
    p = _run([*base, str(run), "1"], tmp_path)
    assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    net, arch, blob = load_model_file(run / "model.pt")
    assert blob["embedding"]["head"] == "projection" and blob["embedding"]["dim"] == 128
    assert arch.resolution == 48 and arch.num_classes == 81
    with torch.no_grad():
        e = net.embed(torch.randn(3, 3, 48, 48))
    assert e.shape == (3, 128) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)


def test_margin_loss_penalises_the_true_class():
    from training.finetune import MarginLoss

    logits = torch.tensor([[4.0, 1.0, 0.0]])
    y = torch.tensor([0])
    plain, margin = MarginLoss(16.0, 0.0)(logits, y), MarginLoss(16.0, 0.1)(logits, y)
    assert margin > plain  # the true class must win by the margin
    assert torch.isclose(margin, torch.nn.functional.cross_entropy(logits - torch.tensor([[1.6, 0.0, 0.0]]), y))
