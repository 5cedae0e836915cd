"""Streaming vs in-RAM data on CIFAR-10 (45k train images, 32x32): epoch time on this CPU.

    python -m bench.bench_streaming [--workers 2] [--train-steps 100]

(a) data only: one full epoch of training batches (batch 128, shuffled, augmented), from the decoded
    in-RAM arrays (`iterate_batches`) vs decoded from the JPEG files by DataLoader workers
    (`StreamLoader`, data.loader=stream, stretch transform: the same images).
(b) training: `--train-steps` steps of MobileNetV3-Small fed by each loader (the step itself dominates;
    the question is whether the stream keeps up), reported as images/s and as the time a full epoch
    takes at that rate.
The two loaders are measured alternately in one process, each twice; the faster pass is kept.
The one-time decode of the in-RAM path (what streaming never pays) is reported beside them.
"""

from __future__ import annotations

import argparse
import time

BENCH = "bench_streaming"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    import tempfile
    from dataclasses import replace

    import torch
    from torch import nn

    import spnas
    from bench.common import record
    from search_spaces import build_model, reference
    from training.batches import iterate_batches
    from training.config import DataLoaderKind
    from training.datasets import load_data
    from training.devices import Compute
    from training.runtime import epoch_generator
    from training.streaming import StreamLoader, open_stream

    cfg = spnas.compose("train", ["data=cifar10"])
    aug = cfg.train.augment
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ram = load_data(replace(cfg.data, cache_dir=tmp), 0)  # a cold decode: what the in-RAM path pays once
        decode_s = time.perf_counter() - t0
    stream = open_stream(replace(cfg.data, loader=DataLoaderKind.stream, workers=args.workers), 0)
    assert len(stream.train) == len(ram.train)
    n = len(ram.train)
    loader = StreamLoader(stream, stream.train, args.batch, train=True, augment=aug)

    def ram_batches(epoch: int):
        return iterate_batches(ram.train, args.batch, shuffle=True, generator=epoch_generator(0, epoch), augment=aug,
                               drop_last=True, normalize=False)

    def data_epoch(kind: str, epoch: int) -> float:
        t = time.perf_counter()
        seen = 0
        for x, y in (ram_batches(epoch) if kind == "in-RAM" else loader.epoch(epoch)):
            seen += len(y)
        assert seen == n - n % args.batch
        return time.perf_counter() - t

    torch.manual_seed(0)
    model = build_model(reference("mobilenet_v3_small").replace(num_classes=10, resolution=32), dropout=0.2)
    compute = Compute(torch.device("cpu"))
    compute.module(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()

    def train(kind: str, epoch: int) -> float:
        model.train()
        it = ram_batches(epoch) if kind == "in-RAM" else loader.epoch(epoch)
        t, seen = None, 0
        for step, (x, y) in enumerate(it):
            if step == 5:
                t, seen = time.perf_counter(), 0  # after warm-up (and the workers' first batches)
            if step >= args.train_steps + 5:
                break
            loss = crit(model(compute.batch(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
        return seen / (time.perf_counter() - t)

    best: dict[str, dict[str, float]] = {"in-RAM": {}, "stream": {}}
    for rep in range(2):
        for kind in ("in-RAM", "stream"):
            d = data_epoch(kind, rep)
            best[kind]["data"] = min(best[kind].get("data", 1e9), d)
            r = train(kind, rep)
            best[kind]["train"] = max(best[kind].get("train", 0.0), r)
    rows = []
    for kind in ("in-RAM", "stream"):
        b = best[kind]
        rows.append({"loader": kind, "workers": 0 if kind == "in-RAM" else args.workers,
                     "data_epoch_s": round(b["data"], 2), "data_images_per_s": round(n / b["data"]),
                     "train_images_per_s": round(b["train"], 1), "train_epoch_s": round(n / b["train"], 1),
                     "one_time_decode_s": round(decode_s, 1) if kind == "in-RAM" else 0.0})
    ratio_data = rows[1]["data_epoch_s"] / rows[0]["data_epoch_s"]
    ratio_train = rows[1]["train_epoch_s"] / rows[0]["train_epoch_s"]
    record(BENCH, "Streaming (DataLoader workers decoding JPEGs) vs in-RAM data: CIFAR-10 epoch on this CPU", rows,
           notes=f"{n} CIFAR-10 train images at 32x32, batch {args.batch}, padded-crop + flip augmentation, "
                 f"{args.workers} DataLoader workers on a 2-core machine. Data-only epoch: stream / in-RAM = "
                 f"{ratio_data:.1f}x. Training MobileNetV3-Small ({args.train_steps} timed steps, extrapolated to "
                 f"the epoch): stream / in-RAM = {ratio_train:.2f}x, because the workers take cores from the "
                 f"training step here; on a GPU machine the step leaves the CPU cores to the workers. The in-RAM "
                 f"path pays a one-time decode ({decode_s:.0f} s cold, cached on disk after) and holds "
                 f"{ram.train.images.nbytes / 1e6:.0f} MB in RAM; the stream holds neither. Best of 2 alternating "
                 f"passes each.")


if __name__ == "__main__":
    main()
