"""Foundation benchmark: MobileNetV3-Small, 2 epochs on Fashion-MNIST at 32x32 (target >= 80% top-1).

    python -m bench.bench_train [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--arch", default="mobilenet_v3_small")
    args = ap.parse_args()
    import spnas
    from spnas.app.jobs import commands

    with tempfile.TemporaryDirectory() as tmp:
        cfg = spnas.compose("train", [f"arch={args.arch}", "data=fashion_mnist", f"train.epochs={args.epochs}",
                                      f"run_dir={Path(tmp) / 'run'}"])
        s = commands.train(cfg)
    rows = [{"arch": args.arch, "data": "fashion_mnist 32x32", "epochs": args.epochs,
             "test_top1": round(s["test_top1"], 4), "test_top5": round(s["test_top5"], 4),
             "train_s": round(s["train_wall_s"], 1), "img_per_s": round(s["images_per_s"], 0),
             "target_top1": 0.80, "met": s["test_top1"] >= 0.80}]
    record("bench_train", "Training: MobileNetV3-Small on Fashion-MNIST (2 epochs, 32x32, CPU)", rows,
           notes="Full 60k/10k Fashion-MNIST split (10% of train held out for validation), SGD + cosine, "
                 "label smoothing 0.1, batch 128, channels-last.")


if __name__ == "__main__":
    main()
