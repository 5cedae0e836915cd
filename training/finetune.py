"""The product-domain stage: a proxy-trained network fine-tuned as an embedder for photo search.

A network trained on a proxy (CIFAR-10 at 32 px) knows nothing of products; its pooled features
rank a shopper's photo against a catalogue barely above chance. This stage keeps its backbone,
adds the embedding layer of the design (`search_spaces.EmbeddingNet`: projection to
`finetune.embedding_dim` after pooling, L2 normalisation) and trains it on the product photos' train
split at a resolution the photos support, with a loss made for retrieval: a normalised softmax over
unit class weights with an additive cosine margin (CosFace, Wang et al. 2018; `loss=normsoftmax` drops
the margin). Every model compared goes through the same recipe. Resumable like every training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from search_spaces import EmbeddingNet, build_model, count_params, embedding_info
from search_spaces.config import ProxyConfig
from search_spaces.proxy import proxy_for
from spnas_core.errors import CheckpointError
from spnas_core.files import sha256_file, write_json_atomic
from spnas_core.versions import versions
from training.config import EmbeddingLoss, FinetuneConfig

from .budget import MIN_FINETUNE_STEPS
from .checkpoints import load_model_file, save_model
from .datasets import DataBundle
from .devices import Compute
from .loop import fit

log = logging.getLogger(__name__)


class MarginLoss(nn.Module):
    """Cross-entropy on scaled cosine logits with an additive margin at the true class (CosFace):
    logits are `s * cos`, the true class gets `s * (cos - m)`."""

    def __init__(self, scale: float, margin: float) -> None:
        super().__init__()
        self.scale, self.margin = float(scale), float(margin)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.margin > 0:
            logits = logits - self.scale * self.margin * F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return F.cross_entropy(logits, y)


def embedder_from(model_pt: str | Path, num_classes: int, fcfg: FinetuneConfig, proxy_cfg: ProxyConfig,
                  seed: int = 0, resolution: int | None = None) -> tuple[EmbeddingNet, Any, Any]:
    """The proxy-trained backbone of `model_pt` with a fresh embedding head (initialised from `seed`) for
    `num_classes` products, in the geometry `proxy_cfg` gives at the fine-tuning resolution (`resolution`,
    else `finetune.resolution`). Returns (net, design arch, proxy)."""
    net, arch, _ = load_model_file(model_pt)
    if not hasattr(net, "classifier") or isinstance(net, EmbeddingNet):
        raise CheckpointError(f"{model_pt} is already a fine-tuned embedder; fine-tune the proxy-trained model.pt")
    res = resolution or fcfg.resolution
    if res is None:
        raise CheckpointError("finetune.resolution is null here: pass the resolution of the photos it fine-tunes on")
    arch_ft = arch.replace(resolution=res, num_classes=num_classes)
    proxy = proxy_for(arch_ft, res, proxy_cfg.min_map, proxy_cfg.drop.name, proxy_cfg.strides.name)
    backbone = build_model(proxy.apply(arch_ft), dropout=fcfg.recipe.dropout)
    backbone.layers.load_state_dict(net.layers.state_dict())  # same weights in any geometry or resolution
    torch.manual_seed(seed)
    return EmbeddingNet(backbone, fcfg.embedding_dim, num_classes, fcfg.scale), arch_ft, proxy


def finetune_embedder(model_pt: str | Path, data: DataBundle, fcfg: FinetuneConfig, proxy_cfg: ProxyConfig,
                      run_dir: str | Path, *, seed: int = 0, resume: bool = False,
                      compute: Compute | None = None) -> dict[str, Any]:
    """Fine-tune the network of `model_pt` as an embedder on `data` (its train split); writes `model.pt`
    (an embedder checkpoint the exporter reads) and `summary.json`; returns the summary."""
    run_dir = Path(run_dir)
    if fcfg.resolution is not None and data.resolution != fcfg.resolution:
        raise CheckpointError(f"the fine-tuning data is decoded at {data.resolution} px but finetune.resolution is "
                              f"{fcfg.resolution}: load it at the fine-tuning resolution")
    model, arch, proxy = embedder_from(model_pt, data.num_classes, fcfg, proxy_cfg, seed, data.resolution)
    margin = fcfg.margin if fcfg.loss is EmbeddingLoss.cosface else 0.0
    result = fit(model, data, fcfg.recipe, run_dir, seed=seed, resume=resume, compute=compute,
                 desc=f"finetune {arch.name or 'model'}", criterion=MarginLoss(fcfg.scale, margin),
                 key="finetune.recipe", learns_after=MIN_FINETUNE_STEPS)
    final = result["model"]
    info = embedding_info(final)
    save_model(run_dir / "model.pt", final, arch, {"name": data.name, "resolution": data.resolution,
                                                   "classes": data.classes},
               {"proxy": proxy.to_dict(), "embedding": info, "finetuned_from": sha256_file(model_pt)})
    hist = result["history"]
    summary = {"arch_string": arch.to_string(), "embedding": info, "loss": fcfg.loss.name, "scale": fcfg.scale,
               "margin": margin, "epochs": result["plan"]["epochs"], "budget": result["plan"],
               "curve": [{"step": r.get("step"), "val_top1": r["val_top1"]} for r in hist],
               "resolution": data.resolution,
               "test_top1": result["test"]["top1"], "test_correct": result["test"].get("correct"),
               "val_top1": hist[-1]["val_top1"] if hist else None,
               "params": count_params(final), "train_wall_s": result["train_wall_s"], "data": data.summary(),
               "proxy": proxy.to_dict(), "proxy_description": proxy.describe(arch), "seed": seed,
               "versions": versions()}
    write_json_atomic(run_dir / "summary.json", summary)
    return summary
