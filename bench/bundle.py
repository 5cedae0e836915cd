"""The embedder bundle of the photo-search benchmarks: MobileNetV3-Small trained on Grocery (64 px),
fine-tuned as a 128-d embedder (the product-domain stage of the pipeline) and exported; made once in
`runs/bench/photo/bundle` (a few minutes on 2 cores) and reused."""

from __future__ import annotations

from pathlib import Path

from bench.common import ROOT

DEFAULT_BUNDLE = ROOT / "runs" / "bench" / "photo" / "bundle"


def ensure_bundle(path: Path = DEFAULT_BUNDLE) -> Path:
    """A 128-d Grocery embedder bundle at `path` (made unless it is one already)."""
    if (path / "manifest.json").exists():
        return path
    import dataclasses

    import spnas
    from spnas.app.jobs.retrieval_eval import load_retrieval_data
    from search_spaces.config import ProxyConfig
    from training.config import FinetuneConfig
    from training.finetune import finetune_embedder

    work = path.parent
    data = ["data=grocery", "data.resolution=64", f"data.cache_dir={work / 'cache'}"]
    trained = spnas.train(spnas.compose("train", ["arch=mobilenet_v3_small", *data, "train.epochs=6",
                                                  "train.batch_size=64", f"run_dir={work / 'train'}", "resume=true"]))
    fcfg = FinetuneConfig(resolution=64, embedding_dim=128)
    fcfg = dataclasses.replace(fcfg, recipe=dataclasses.replace(fcfg.recipe, epochs=4))
    cfg = spnas.compose("export", [f"checkpoint={trained.model_path}", *data, f"out_dir={path}",
                                   "export.int8=disabled", "export.measure_latency=false"])
    finetune_embedder(trained.model_path, load_retrieval_data(cfg.data), fcfg, ProxyConfig(), work / "finetune",
                      resume=True)
    spnas.export(dataclasses.replace(cfg, checkpoint=str(work / "finetune" / "model.pt")))
    return path


if __name__ == "__main__":
    print(ensure_bundle())
