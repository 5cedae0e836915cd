"""Your own photos -> a network searched for a phone -> a verified TFLite bundle -> photo search.

    python examples/photo_search.py --photos ~/photos --soc sd845 --out runs/example
    python examples/photo_search.py --photos ~/photos --tiny        # a smoke run of about a minute

`--photos` is a folder of class folders (`<photos>/<class>/*.jpg`). The same code runs behind the
`spnas-search`, `spnas-train` and `spnas-export` commands; this script uses the Python API.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import spnas

TINY = {
    "search": ["search.steps=6", "search.min_threshold_updates=3", "search.batch_size=16"],
    "train": ["train.epochs=1", "train.batch_size=16", "train.max_steps_per_epoch=3", "train.min_steps=0"],
    "export": ["export.int8=disabled", "export.measure_latency=false", "export.parity_images=32",
               "export.calibration_images=32"],
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True, type=Path, help="folder of class folders")
    ap.add_argument("--soc", default="sd845", help="target device: sd845, sd670, sd808, sd801 or host")
    ap.add_argument("--out", default=Path("runs/example"), type=Path, help="run folder")
    ap.add_argument("--resolution", type=int, default=64, help="training input size of the photos")
    ap.add_argument("--tiny", action="store_true", help="a budget of a few steps (smoke test)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    data = ["data=folder", f"data.root={args.photos.expanduser().resolve()}", f"data.resolution={args.resolution}"]

    # 1. search: the latency of every decision comes from the SoC's table
    cfg = spnas.compose("search", [f"soc={args.soc}", *data, f"run_dir={out / 'search'}", "resume=true",
                                   *(TINY["search"] if args.tiny else [])])
    found = spnas.search(cfg)
    print(f"searched for {args.soc}: {found.arch.to_string()}\n  predicted {found.predicted_ms:.1f} ms at "
          f"{cfg.search.latency_resolution}x{cfg.search.latency_resolution} on the {found.table} table")

    # 2. retrain the winner on the photos
    trained = spnas.train(spnas.compose("train", [*data, f"run_dir={out / 'train'}", "resume=true",
                                                  *(TINY["train"] if args.tiny else [])]), arch=found.arch)
    print(f"retrained: test top-1 {trained.test_top1:.3f} ({trained.model_path})")

    # 3. export: TFLite fp32 (+ int8), ONNX and a MediaPipe embedder, each checked against PyTorch
    bundle = spnas.export(spnas.compose("export", [*data, f"checkpoint={trained.model_path}",
                                                   f"out_dir={out / 'bundle'}", *(TINY["export"] if args.tiny else [])]))
    print(f"exported: {bundle.path} (int8 shipped: {bundle.int8_shipped})")

    # 4. photo search: index the training photos as listings, query with a test photo
    photos = spnas.load_data(cfg.data)
    index = spnas.open_photo_index(bundle.path, out / "index")
    if not len(index):
        index.add(list(range(len(photos.train))), photos.train.ids)
    query = photos.test.ids[0]
    hits = index.search(query, k=5)
    want = photos.classes[int(photos.test.labels[0])]
    print(f"query {Path(query).name} ({want}):")
    for rank, (i, score) in enumerate(hits, 1):
        print(f"  {rank}. {photos.classes[int(photos.train.labels[i])]:<20} score {score:.3f}  "
              f"{Path(photos.train.ids[i]).name}")


if __name__ == "__main__":
    main()
