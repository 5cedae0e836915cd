"""`spnas-pipeline`: search -> derive -> retrain -> export -> index -> evaluate, per SoC, against
MobileNetV2 (and MobileNetV3-Large) trained, exported and evaluated the same way; then the report.

    spnas-pipeline experiment=demo
    spnas-pipeline experiment=cifar10 force=[search]      # redo one stage kind

Every stage writes to its own folder in the run (`search/<soc>`, `train/<model>`, `export/<model>`,
`retrieval/<model>`) with a `stage.json` holding a content hash of its config and inputs (see
`spnas.app.stages`). `force=[...]` redoes stage kinds on demand (`force=[all]` everything).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latency_tables.table import resolve_table_path
from search_spaces import ArchSpec
from spnas.config import (
    DataConfig, ExportAppConfig, InitKind, LabelLevel, PipelineAppConfig, SearchAppConfig, TrainAppConfig, to_plain,
)
from spnas.errors import ConfigError
from spnas.files import sha256_file, write_bytes_atomic, write_json_atomic
from training.datasets import DataBundle, data_key, load_data

from .stages import Stage

log = logging.getLogger(__name__)

STAGE_VERSION = 3  # part of every stage key: bump when a stage's outputs change meaning (3: content-hashed data)


@dataclass
class _Run:
    """What the stages of one pipeline run share: config, decoded data (lazily), the event log."""

    cfg: PipelineAppConfig
    run_dir: Path
    force: set[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _data: dict[str, DataBundle] = field(default_factory=dict)
    _keys: dict[str, Any] = field(default_factory=dict)

    def data(self) -> DataBundle:
        if "train" not in self._data:
            self._data["train"] = load_data(self.cfg.data, self.cfg.seed)
        return self._data["train"]

    def retrieval_data(self) -> DataBundle:
        """The photo collection (fine labels, the whole train split), decoded at the fine-tuning size:
        the fine-tuning trains on its train split, export calibrates on it, retrieval queries its test split."""
        if "ret" not in self._data:
            self._data["ret"] = load_data(self.retrieval_cfg(), self.cfg.seed)
        return self._data["ret"]

    def retrieval_cfg(self) -> DataConfig:
        """The photo collection's config as loaded (see `retrieval_eval.load_retrieval_data`)."""
        res = self.cfg.finetune.resolution if self.cfg.finetune.enabled else self.cfg.retrieval.data.resolution
        return replace(self.cfg.retrieval.data, resolution=res, label_level=LabelLevel.fine, val_fraction=0.0)

    def data_key(self, which: str = "train") -> dict[str, Any]:
        """A data set's content key (file list with sizes and times, not its path), listed once per run."""
        if f"key:{which}" not in self._keys:
            cfg = self.cfg.data if which == "train" else self.retrieval_cfg()
            self._keys[f"key:{which}"] = data_key(cfg)
        return self._keys[f"key:{which}"]

    def stage(self, kind: str, name: str, key: dict[str, Any]) -> Stage:
        return Stage(self.run_dir, kind, name, {**key, "v": STAGE_VERSION}, self.force)

    def note(self, stage: Stage, how: str) -> None:
        self.events.append({"stage": f"{stage.kind}/{stage.name}", "how": how, "wall_s": stage.wall_s})
        print(f"[{how:>7}] {stage.kind}/{stage.name} ({stage.wall_s:.0f} s)", flush=True)


# ---------------------------------------------------------------------------------- stages
def search_stage(run: _Run, soc_name: str) -> dict[str, Any]:
    """Search against one SoC's table; returns the model record of its winner."""
    from nas.search import run_search

    cfg = run.cfg
    soc = cfg.soc_configs[soc_name]
    # the table by name and content (a resolved host table is a path: moving the checkout keeps the cache)
    key = {"space": to_plain(cfg.space), "data": run.data_key(), "search": to_plain(cfg.search),
           "proxy": to_plain(cfg.proxy), "soc": {**to_plain(soc), "table": Path(soc.table).stem},
           "table_sha256": sha256_file(resolve_table_path(soc.table)), "seed": cfg.seed}
    st = run.stage("search", soc_name, key)

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        s = run_search(SearchAppConfig(seed=cfg.seed, threads=cfg.threads, device=cfg.device, amp=cfg.amp,
                                       dist=cfg.dist, soc=soc, space=cfg.space, data=cfg.data, search=cfg.search,
                                       proxy=cfg.proxy, resume=resume, run_dir=str(folder)),
                       data=run.data())
        return {k: s[k] for k in ("arch", "predicted_ms", "val_top1", "choices", "target_ms", "table", "target",
                                  "decision", "budget", "proxy")}

    res, how = st.run(do)
    run.note(st, how)
    return {"arch": res["arch"], "soc": soc_name, "kind": "spnas", "search": res, "search_dir": str(st.dir)}


def train_stage(run: _Run, name: str, m: dict[str, Any]) -> None:
    """Retrain a winner (or train a baseline) with the run's one recipe."""
    from nas.superkernel import inherit_weights
    from training.loop import train_model

    cfg = run.cfg
    arch_ref = m["arch"] if isinstance(m["arch"], str) else ArchSpec.from_dict(m["arch"]).to_string()
    init = cfg.init if m["kind"] == "spnas" else InitKind.scratch
    inherited = sha256_file(Path(m["search_dir"]) / "supernet.pt") if init is InitKind.inherit else None
    st = run.stage("train", name, {"arch": arch_ref, "data": run.data_key(), "train": to_plain(cfg.train),
                                   "proxy": to_plain(cfg.proxy), "seed": cfg.seed, "init": init.name,
                                   "supernet_sha256": inherited})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        arch = m["arch"]
        if not isinstance(arch, str):
            arch = str(ArchSpec.from_dict(arch).replace(name=name).save(folder / "derived_arch.json"))
        supernet = str(Path(m["search_dir"]) / "supernet.pt") if init is InitKind.inherit else None
        s = train_model(TrainAppConfig(seed=cfg.seed, threads=cfg.threads, device=cfg.device, amp=cfg.amp,
                                       dist=cfg.dist, data=cfg.data, train=cfg.train, arch=arch,
                                       proxy=cfg.proxy, init=init, supernet=supernet, resume=resume,
                                       latency_resolution=cfg.search.latency_resolution, run_dir=str(folder)),
                        data=run.data(), inherit=inherit_weights)
        return {k: s[k] for k in ("test_top1", "test_top5", "params", "macs", "macs_at_deploy_resolution",
                                  "arch_string", "train_wall_s", "epochs", "data", "proxy", "proxy_description")}

    res, how = st.run(do)
    run.note(st, how)
    m["train"] = res
    m["model_pt"] = str(st.dir / "model.pt")


def finetune_stage(run: _Run, name: str, m: dict[str, Any]) -> None:
    """Fine-tune the trained model as an embedder on the photo collection's train split (same recipe for all)."""
    from training.devices import resolve_compute
    from training.finetune import finetune_embedder

    cfg = run.cfg
    if not cfg.finetune.enabled:
        m["export_model_pt"], m["finetune"] = m["model_pt"], None
        return
    st = run.stage("finetune", name, {"model_sha256": sha256_file(m["model_pt"]), "finetune": to_plain(cfg.finetune),
                                      "proxy": to_plain(cfg.proxy), "data": run.data_key("retrieval"),
                                      "seed": cfg.seed})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        s = finetune_embedder(m["model_pt"], run.retrieval_data(), cfg.finetune, cfg.proxy, folder, seed=cfg.seed,
                              resume=resume, compute=resolve_compute(cfg.device, cfg.amp))
        return {k: s[k] for k in ("test_top1", "val_top1", "epochs", "resolution", "embedding", "loss", "margin",
                                  "train_wall_s", "proxy_description")}

    res, how = st.run(do)
    run.note(st, how)
    m["finetune"] = res
    m["export_model_pt"] = str(st.dir / "model.pt")


def export_stage(run: _Run, name: str, m: dict[str, Any]) -> None:
    """Export the model (the fine-tuned embedder, or the trained classifier when fine-tuning is off) to a
    verified bundle (int8 as the export policy says)."""
    from .export_job import run_export

    cfg = run.cfg
    finetuned = m.get("finetune") is not None
    data_cfg = replace(cfg.retrieval.data, resolution=cfg.finetune.resolution) if finetuned else cfg.data
    st = run.stage("export", name, {"model_sha256": sha256_file(m["export_model_pt"]), "export": to_plain(cfg.export),
                                    "data": run.data_key("retrieval" if finetuned else "train")})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        man = run_export(ExportAppConfig(seed=cfg.seed, threads=cfg.threads, data=data_cfg, export=cfg.export,
                                         checkpoint=m["export_model_pt"], arch=None, out_dir=str(folder / "bundle")),
                         data=run.retrieval_data() if finetuned else run.data())
        lat = man.get("latency", {})
        return {"bundle": str(folder / "bundle"), "fp32_bytes": man["files"]["model_fp32.tflite"]["bytes"],
                "int8_bytes": man["files"].get("model_int8.tflite", {}).get("bytes"),
                "measured_224_ms": (lat.get("deploy_resolution") or {}).get("fp32_1_thread_p10_ms"),
                "measured_native_ms": lat.get("cpu", {}).get("model_fp32.tflite", {}).get("1_thread", {}).get("p10_ms"),
                "table_predictions": {k: v.get("predicted_ms") for k, v in lat.get("table_predictions", {}).items()},
                "parity": {"fp32_max_abs": man["parity"]["tflite_fp32"]["max_abs_diff"],
                           "mediapipe_min_cos": man["parity"]["mediapipe_embedder"]["min_cosine"]},
                "int8": {k: man["int8"].get(k) for k in ("top1_drop", "top1_agreement")} if man.get("int8") else None,
                "int8_refused": man.get("int8_refused"),
                "embedder_sha256": man["files"]["embedder.tflite"]["sha256"], "embedding": man.get("embedding"),
                "input_size": man["input"]["size"][0]}

    res, how = st.run(do)
    run.note(st, how)
    m["export"] = res


def retrieval_stage(run: _Run, name: str, m: dict[str, Any]) -> None:
    """Photo search with the model's embedder: recall@k, mAP@10 and query latency."""
    from .retrieval_eval import evaluate_bundle, markdown_table

    rc = run.cfg.retrieval
    st = run.stage("retrieval", name, {"embedder": m["export"]["embedder_sha256"],
                                       "retrieval": {**to_plain(rc), "data": run.data_key("retrieval")},
                                       "seed": run.cfg.seed})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        s = evaluate_bundle(m["export"]["bundle"], run.retrieval_data(), rc.backend, rc.factory, rc.latency_queries,
                            n_boot=rc.bootstrap, seed=run.cfg.seed)
        write_json_atomic(folder / "retrieval_eval.json", s)
        write_bytes_atomic(folder / "retrieval_eval.md", markdown_table(s).encode())
        return {"results": s["results"], "latency": s["latency"], "split": s["split"], "data": s["data"]}

    res, how = st.run(do)
    run.note(st, how)
    m["retrieval"] = res


# ---------------------------------------------------------------------------------- the run
def run_pipeline(cfg: PipelineAppConfig) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns report.json's content."""
    from .report import write_report

    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    cfg, devices = prepare_devices(cfg)
    run = _Run(cfg, Path(cfg.run_dir), set(cfg.force))
    write_json_atomic(run.run_dir / "config.json", to_plain(cfg))
    models: dict[str, dict[str, Any]] = {f"spnas-{s}": search_stage(run, s) for s in cfg.socs}
    for b in cfg.baselines:
        models[b] = {"arch": b, "soc": None, "kind": "baseline"}
    for name, m in models.items():
        train_stage(run, name, m)
        finetune_stage(run, name, m)
        export_stage(run, name, m)
        retrieval_stage(run, name, m)
    report_dir = Path(cfg.report_dir or run.run_dir)  # benches that run a subset share stages, not the report
    report_dir.mkdir(parents=True, exist_ok=True)
    return write_report(report_dir, cfg, models, run.events, devices)


def prepare_devices(cfg: PipelineAppConfig) -> tuple[PipelineAppConfig, dict[str, dict[str, Any]]]:
    """Resolve every SoC's table before any data is decoded: `host` is the table measured on this machine
    (by fingerprint; `soc.if_no_table` says what to do without one, `soc.stale_check` spot-checks it).
    A skipped device leaves the run and the report says why; returns the config to run and, per device,
    what happened (table, fingerprint, spot check, skip reason)."""
    from search_spaces import SearchSpace

    from .profile import prepare_soc

    space = SearchSpace.from_dict(to_plain(cfg.space))
    socs, configs, devices = [], dict(cfg.soc_configs), {}
    for name in cfg.socs:
        soc, info = prepare_soc(cfg.soc_configs[name], space, cfg.search.latency_resolution, 1000)
        devices[name] = info
        if soc is None:
            print(f"[left out] {name}: {info.get('skipped', 'no table')}", flush=True)
            continue
        configs[name] = soc
        socs.append(name)
    if not socs:
        raise ConfigError("no device left to search for: every SoC in `socs` was skipped (see soc.if_no_table)")
    return replace(cfg, soc_configs=configs, socs=socs), devices
