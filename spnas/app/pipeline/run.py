"""`spnas-pipeline`: search -> controls -> retrain (every seed) -> fine-tune -> export -> photo search
-> report, per SoC (and for a fleet of SoCs), against random nets and reference nets of the same latency.

    spnas-pipeline experiment=demo
    spnas-pipeline experiment=evidence force=[search]     # redo one stage kind

The models compared, per winner (docs/design.md, "Evidence"):
- the winner of the search on that SoC's table (`spnas-<soc>`; `spnas-fleet` for `search.fleet`);
- `controls.random` architectures of the same space within +-`controls.tolerance` of its predicted
  latency (`random-<soc>-<i>`, each drawn with its own seed derived from the run's), and every baseline
  width-scaled to that latency (`<net>-w<width>`);
- every baseline at width 1.0 and at `controls.widths` (the reference family's curve);
- with `controls.search_seeds`, the same search repeated with each of those seeds (`spnas-<soc>-s<k>`,
  kind `repeat`): the search's own spread.
Every model trains with one recipe and proxy once per seed (`seeds`) and is tested on the same test
images (the per-image results are kept, so intervals count the finite test set); it is fine-tuned the
same way as an embedder and photo-searched with that embedder (the random controls and repeats only
with `controls.photo_search`); the winners (those of `export_socs`, all by default) and the 1.0
baselines are exported (`controls.export` exports the controls too). One warm-up (weights only) per
search seed is shared by every device's search.

Every stage writes to its own folder (`warmup/shared[-s<k>]`, `search/<soc>[-s<k>]`, `controls/<soc>`,
`train/<model>/s<seed>`, `finetune/<model>/s<seed>`, `export/<model>`, `retrieval/<model>/s<seed>`)
with a `stage.json` holding a content hash of its config and inputs (`spnas.app.pipeline.stages`);
`force=[...]` redoes stage kinds on demand (`force=[all]` everything).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latency_tables.lookup.table import LatencyTable, resolve_table_path
from nas.config import controls_settings, warmup_settings
from search_spaces import ArchSpec, SearchSpace
from spnas.app.pipeline.config import PipelineAppConfig, RetrievalSource
from spnas_core.config import to_plain
from spnas_core.errors import ConfigError
from spnas_core.files import sha256_file, write_bytes_atomic, write_json_atomic
from training.config import DataConfig, DataKind, InitKind, LabelLevel
from training.datasets import DataBundle, data_key, load_data

from spnas.app.pipeline.evidence import pack_bits
from spnas.app.pipeline.progress import RunProgress
from spnas.app.pipeline.stages import Stage

log = logging.getLogger(__name__)

STAGE_VERSION = 4  # part of every stage key: bump when a stage's outputs change meaning (4: seeds, controls)
FLEET = "fleet"


@dataclass
class Model:
    """One network compared: what it is, why it is in the run, and what each stage made of it."""

    name: str
    kind: str  # spnas | repeat (the search again, another seed) | random | scaled | baseline | family
    soc: str | None  # the device (or "fleet") a winner was searched for, or whose winner a control matches
    arch: ArchSpec | str  # a derived/drawn ArchSpec, or a reference net's name
    roles: list[str] = field(default_factory=list)  # e.g. "winner sd845", "random control of spnas-sd845"
    export: bool = False
    search_dir: str | None = None
    record: dict[str, Any] = field(default_factory=dict)  # the search summary, or how the control was chosen
    seeds: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> {"train", "finetune", "retrieval"}
    exported: dict[str, Any] | None = None

    def arch_string(self) -> str:
        return self.arch if isinstance(self.arch, str) else self.arch.to_string()


@dataclass
class PipelineRun:
    """What the stages of one pipeline run share: config, decoded data (lazily), the event log."""

    cfg: PipelineAppConfig
    run_dir: Path
    force: set[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    progress: RunProgress = field(default_factory=lambda: RunProgress(bar=False))
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
        """The photo collection's config as loaded: your photos with `data=folder` (`retrieval.source=auto`),
        else `retrieval.data`; fine labels, no validation share, at the fine-tuning resolution."""
        cfg = self.cfg
        base = replace(cfg.data, train_limit=None, val_limit=None, test_limit=None) if own_photos(cfg) \
            else cfg.retrieval.data
        res = cfg.finetune.resolution if cfg.finetune.enabled and cfg.finetune.resolution else base.resolution
        return replace(base, resolution=res, label_level=LabelLevel.fine, val_fraction=0.0)

    def space(self) -> SearchSpace:
        return SearchSpace.from_config(self.cfg.space)

    def data_key(self, which: str = "train") -> dict[str, Any]:
        """A data set's content key (file list with sizes and times, not its path), listed once per run."""
        if f"key:{which}" not in self._keys:
            cfg = self.cfg.data if which == "train" else self.retrieval_cfg()
            self._keys[f"key:{which}"] = data_key(cfg)
        return self._keys[f"key:{which}"]

    def stage(self, kind: str, name: str, key: dict[str, Any]) -> Stage:
        self.progress.start(f"{kind}/{name}")
        return Stage(self.run_dir, kind, name, {**key, "v": STAGE_VERSION}, self.force)

    def note(self, stage: Stage, how: str) -> None:
        self.events.append({"stage": f"{stage.kind}/{stage.name}", "how": how, "wall_s": stage.wall_s})
        self.progress.finish(f"{stage.kind}/{stage.name}", how, stage.wall_s)

    def tables_of(self, soc: str) -> list[str]:
        """The table file(s) a search prices: one SoC's, or every fleet device's."""
        names = self.cfg.search.fleet if soc == FLEET else [soc]
        return [self.cfg.soc_configs[n].table for n in names]


def own_photos(cfg: PipelineAppConfig) -> bool:
    """Whether the photo search (and the fine-tuning before it) runs on the proxy data itself: your photos
    with `data=folder` (`retrieval.source=auto`), or any data with `retrieval.source=data`."""
    return cfg.retrieval.source is RetrievalSource.data or (
        cfg.retrieval.source is RetrievalSource.auto and cfg.data.kind is DataKind.folder)


def with_one_resolution(cfg: PipelineAppConfig) -> PipelineAppConfig:
    """One resolution per model, from fine-tuning through export to the latency the report quotes. The
    models ship at the photo collection's resolution (`finetune.resolution`, null: `data.resolution` with
    your photos, `retrieval.data.resolution` with a collection): fine-tuning and export use it; with your
    photos the search prices latency at it too (the models run at it), and the exports read the tables
    and time the model at it. With a proxy data set (CIFAR-10 at 32 px) the search keeps pricing at
    `search.latency_resolution` (the paper's 224: the proxy stands in for an ImageNet-size model), and
    each export also reads the tables at that size: both sizes are named in the report."""
    if not cfg.finetune.enabled:  # the proxy-trained classifier ships as it was trained
        ship = cfg.data.resolution
    else:
        ship = cfg.finetune.resolution or (cfg.data.resolution if own_photos(cfg) else cfg.retrieval.data.resolution)
    search = replace(cfg.search, latency_resolution=ship) if own_photos(cfg) else cfg.search
    lat = cfg.export.latency
    if lat.deploy_resolution is None and search.latency_resolution != ship:
        lat = replace(lat, deploy_resolution=search.latency_resolution)
    return replace(cfg, search=search, finetune=replace(cfg.finetune, resolution=ship) if cfg.finetune.enabled
                   else cfg.finetune, export=replace(cfg.export, latency=lat))


# ---------------------------------------------------------------------------------- search
def search_seeds(cfg: PipelineAppConfig) -> list[int]:
    """The seeds every device is searched with: the run's `seed` first (its winners get the controls), then
    `controls.search_seeds`."""
    if cfg.seed in cfg.controls.search_seeds:
        raise ConfigError(f"controls.search_seeds={cfg.controls.search_seeds} repeats the run's seed={cfg.seed}: "
                          f"list only the other search seeds")
    return [cfg.seed, *cfg.controls.search_seeds]


def _suffix(cfg: PipelineAppConfig, seed: int | None) -> str:
    return "" if seed is None or seed == cfg.seed else f"-s{seed}"


def warmup_stage(run: PipelineRun, seed: int | None = None) -> Path:
    """The weights-only warm-up every search of one seed forks from: it does not depend on any table, so
    every device shares it. A search seed has its own (the seed is in every random stream the warm-up
    leaves to its forks), on the run's data."""
    from nas.search import run_warmup

    cfg = run.cfg
    seed = cfg.seed if seed is None else seed
    key = {"space": to_plain(cfg.space), "data": run.data_key(), "proxy": to_plain(cfg.proxy), "seed": seed,
           "search": warmup_settings(cfg.search)}
    if seed != cfg.seed:
        key["data_seed"] = cfg.seed  # the run's data subset, whichever seed searches it
    st = run.stage("warmup", f"shared{_suffix(cfg, seed)}", key)

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        path = run_warmup(cfg.search, run.space(), run.data(), folder, proxy=cfg.proxy, seed=seed,
                          runtime=cfg.runtime())
        return {"warmup": str(path), "sha256": sha256_file(path)}

    res, how = st.run(do)
    run.note(st, how)
    return Path(res["warmup"])


def search_stage(run: PipelineRun, soc_name: str, warmup: Path, seed: int | None = None) -> Model:
    """Search against one SoC's table (or the fleet's tables), forking from the shared warm-up of its seed
    (the run's `seed`: the winner `spnas-<soc>`; another: the repeat `spnas-<soc>-s<seed>`)."""
    from nas.search import run_search

    cfg = run.cfg
    seed = cfg.seed if seed is None else seed
    tail = _suffix(cfg, seed)
    tables = run.tables_of(soc_name)
    socs = cfg.search.fleet if soc_name == FLEET else [soc_name]
    # the tables by name and content (a resolved host table is a path: moving the checkout keeps the cache)
    key = {"space": to_plain(cfg.space), "data": run.data_key(), "search": to_plain(cfg.search),
           "proxy": to_plain(cfg.proxy), "socs": {s: {**to_plain(cfg.soc_configs[s]), "table": Path(t).stem}
                                                 for s, t in zip(socs, tables)},
           "table_sha256": [sha256_file(resolve_table_path(t)) for t in tables], "seed": seed,
           "warmup_sha256": sha256_file(warmup)}
    if tail:
        key["data_seed"] = cfg.seed
    st = run.stage("search", f"{soc_name}{tail}", key)

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        s = run_search(cfg.search, run.space(), tables if soc_name == FLEET else tables[0], run.data(), folder,
                       proxy=cfg.proxy, name=soc_name, seed=seed, resume=resume, runtime=cfg.runtime(),
                       warmup=warmup)
        return {k: s[k] for k in ("arch", "arch_string", "predicted_ms", "predicted_ms_by_table", "cost", "cost_unit",
                                  "fleet", "tables", "val_top1", "choices", "target_ms", "table", "target",
                                  "decision", "budget", "proxy", "search_wall_s")}

    res, how = st.run(do)
    run.note(st, how)
    res = {**res, "search_seed": seed}
    if tail:
        return Model(f"spnas-{soc_name}{tail}", "repeat", soc_name, ArchSpec.from_dict(res["arch"]),
                     [f"search of {soc_name} repeated with seed {seed}"], search_dir=str(st.dir), record=res)
    return Model(f"spnas-{soc_name}", "spnas", soc_name, ArchSpec.from_dict(res["arch"]), [f"winner {soc_name}"],
                 export=True, search_dir=str(st.dir), record=res)


# ---------------------------------------------------------------------------------- controls
def controls_stage(run: PipelineRun, soc_name: str, winner: Model) -> list[Model]:
    """Random architectures at the winner's latency and each baseline width-scaled to it (pure, cached)."""
    cfg = run.cfg
    tables = run.tables_of(soc_name)
    key = {"winner": winner.arch_string(), "run_seed": cfg.seed,
           "controls": {k: v for k, v in to_plain(cfg.controls).items() if k not in ("search_seeds", "photo_search")},
           "baselines": list(cfg.baselines),
           "space": to_plain(cfg.space), "table_sha256": [sha256_file(resolve_table_path(t)) for t in tables],
           "search": controls_settings(cfg.search),
           "num_classes": run.data().num_classes}
    st = run.stage("controls", soc_name, key)

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        rec = winner_controls(run, [LatencyTable.load(t) for t in tables], winner)
        write_json_atomic(folder / "controls.json", rec)
        return rec

    res, how = st.run(do)
    run.note(st, how)
    winner.record["controls"] = {"draw": res["draw"], "scaled": [{k: r[k] for k in ("name", "within", "note",
                                                                                    "off_pct")} for r in res["scaled"]]
                                 + [{"name": r["reference"], "within": False, "note": r["note"], "off_pct": None}
                                    for r in res.get("unscaled", [])]}
    out = [Model(r["name"], "random", soc_name, ArchSpec.from_string(r["arch_string"], r["name"]),
                 [f"random control of {winner.name}"], export=cfg.controls.export, record=r) for r in res["random"]]
    out += [Model(r["name"], "scaled", soc_name, ArchSpec.from_string(r["arch_string"], r["name"]),
                  [f"{r['reference']} scaled to {winner.name}"], export=cfg.controls.export, record=r)
            for r in res["scaled"]]
    return out


def winner_costs(run: PipelineRun, tables: list[LatencyTable], winner: Model) -> tuple[Any, Any]:
    """How the winner's search priced networks (`costs_of` with the run's space and data)."""
    cfg = run.cfg
    return costs_of(run.space(), tables, cfg.search.latency_resolution, cfg.search.width, run.data().num_classes,
                    winner.record.get("fleet"))


def costs_of(space: SearchSpace, tables: list[LatencyTable], resolution: int, width: float, num_classes: int,
             fleet: dict[str, Any] | None) -> tuple[Any, Any]:
    """Two functions pricing networks as a search did: one choice per layer -> cost (fast, for rejection
    sampling) and any architecture -> cost at the deployment `resolution`. One device: ms on its table; a
    fleet (the search summary's `fleet`: devices, budgets, objective, weights): the fleet's normalised
    cost, the number the report's `_fleet_cost` gives the same net."""
    from latency_tables.lookup.fleet import FleetLatency
    from latency_tables.lookup.predictor import SpaceLatency

    lats = [SpaceLatency(space, t, resolution, width, num_classes) for t in tables]
    if not fleet:
        return lats[0].of_choices, lambda a: tables[0].predict(a.replace(resolution=resolution,
                                                                         num_classes=num_classes))
    f = FleetLatency(lats, fleet["budgets_ms"], fleet["objective"], fleet["weights"], fleet["devices"])
    return f.of_choices, lambda a: f.of_ms({n: t.predict(a.replace(resolution=resolution, num_classes=num_classes))
                                            for n, t in zip(f.names, tables)})


def winner_controls(run: PipelineRun, tables: list[LatencyTable], winner: Model) -> dict[str, Any]:
    from nas.controls import choose_controls

    cfg = run.cfg
    of_choices, of_arch = winner_costs(run, tables, winner)
    return choose_controls(cfg.controls, run.space(), of_choices, of_arch, float(winner.record["cost"]),
                           winner.record["choices"], cfg.baselines, winner.soc or winner.name,
                           cfg.search.latency_resolution, cfg.search.width, run.data().num_classes,
                           run_seed=cfg.seed)


def model_list(run: PipelineRun, winners: list[Model]) -> dict[str, Model]:
    """Winners (and search repeats), their controls, and the baselines at 1.0 and `controls.widths`; one
    entry per architecture (a width-scaled net that two winners share, or that equals a family width,
    trains once)."""
    from nas.controls import width_family

    cfg = run.cfg
    models: dict[str, Model] = {}
    by_arch: dict[str, str] = {}

    def add(m: Model) -> None:
        s = m.arch_string() if isinstance(m.arch, ArchSpec) else f"reference:{m.arch}"
        if s in by_arch:
            models[by_arch[s]].roles += [r for r in m.roles if r not in models[by_arch[s]].roles]
            return
        by_arch[s] = m.name
        models[m.name] = m

    def named(socs: list[str] | None, w: Model) -> bool:  # controls.socs, export_socs: None names every winner
        return socs is None or (w.soc or "") in socs

    for w in winners:  # every winner keeps its own row, even when two searches derive the same network
        w.export = w.kind == "spnas" and named(cfg.export_socs, w)
        models[w.name] = w
        by_arch.setdefault(w.arch_string(), w.name)
    for w in winners:
        if w.kind != "spnas" or not named(cfg.controls.socs, w):
            continue  # the report says "has no control" for this winner
        for c in controls_stage(run, w.soc or "", w):
            add(c)
    for b in cfg.baselines:
        add(Model(b, "baseline", None, b, ["reference net, width 1.0"], export=True))
        for a in width_family(b, cfg.controls.widths, cfg.search.latency_resolution, run.data().num_classes):
            add(Model(a.name, "family", None, a, [f"{b} family, width {a.width:g}"], export=cfg.controls.export))
    return models


# ---------------------------------------------------------------------------------- per model and seed
def train_stage(run: PipelineRun, m: Model, seed: int) -> None:
    """Retrain a winner or a control (or train a baseline) with the run's one recipe, for one seed."""
    from nas.superkernel import inherit_weights
    from training.loop import train_model

    cfg = run.cfg
    init = cfg.init if m.kind == "spnas" else InitKind.scratch
    supernet = Path(m.search_dir or "") / "supernet.pt" if init is InitKind.inherit else None
    st = run.stage("train", f"{m.name}/s{seed}", {
        "arch": m.arch_string(), "data": run.data_key(), "train": to_plain(cfg.train), "proxy": to_plain(cfg.proxy),
        "seed": seed, "init": init.name, "supernet_sha256": sha256_file(supernet) if supernet else None,
        "per_image": 1})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        arch = m.arch
        if isinstance(arch, ArchSpec):
            arch = str(arch.replace(name=m.name).save(folder / "derived_arch.json"))
        s = train_model(arch, cfg.train, run.data(), folder, proxy=cfg.proxy, seed=seed, resume=resume,
                        runtime=cfg.runtime(), supernet=supernet, inherit=inherit_weights,
                        latency_resolution=cfg.search.latency_resolution)
        out = {k: s[k] for k in ("test_top1", "test_top5", "val_top1", "params", "macs", "macs_at_deploy_resolution",
                                 "arch_string", "train_wall_s", "epochs", "budget", "curve", "data", "proxy",
                                 "proxy_description", "deploy_resolution") if k in s}
        if isinstance(s.get("test_correct"), str) and len(s["test_correct"]) == len(run.data().test):
            import numpy as np

            correct = np.asarray([c == "1" for c in s["test_correct"]], dtype=np.uint8)  # the training's own pass
        else:
            correct = per_image_correct(folder / "model.pt", run.data().test, cfg.train.channels_last,
                                        cfg.train.eval_batch_size)
        if abs(float(correct.mean()) - s["test_top1"]) > 1e-9:  # a near-tie logit read differently: say so
            log.warning("%s s%d: the per-image test pass gives top-1 %.6f, the training summary %.6f", m.name, seed,
                        float(correct.mean()), s["test_top1"])
        return {**out, "test_correct": pack_bits(correct)}

    res, how = st.run(do)
    run.note(st, how)
    m.seeds.setdefault(seed, {})["train"] = {**res, "model_pt": str(st.dir / "model.pt")}


def per_image_correct(model_pt: Path, split: Any, channels_last: bool = True, batch_size: int = 500) -> Any:
    """1/0 per test image (in the split's order): is the trained model's top-1 the label? Evaluated as the
    training loop tests (its proxy geometry, memory format and batch size, on the CPU); every model of a
    run is tested on the same images, so two models' results pair image by image."""
    import numpy as np
    import torch

    from search_spaces.model import build_model
    from search_spaces.proxy import Proxy
    from training.checkpoints import load_torch
    from training.devices import Compute
    from training.loop import evaluate

    blob = load_torch(model_pt, "model checkpoint")
    arch = ArchSpec.from_dict(blob["arch"])
    net = build_model(Proxy.from_dict(blob["proxy"]).apply(arch) if blob.get("proxy") else arch)
    net.load_state_dict(blob["state_dict"])
    compute = Compute(torch.device("cpu"), None, channels_last)
    compute.module(net)
    preds: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = net(x)
        preds.append(logits.float().argmax(dim=1).cpu())
        return logits

    evaluate(net, split, batch_size, forward=forward, compute=compute)
    got = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
    return (got == np.asarray(split.labels)).astype(np.uint8)


def finetune_stage(run: PipelineRun, m: Model, seed: int) -> None:
    """Fine-tune the trained model as an embedder on the photo collection's train split (same recipe for all)."""
    from training.devices import resolve_compute
    from training.finetune import finetune_embedder

    cfg = run.cfg
    rec = m.seeds[seed]
    if not cfg.finetune.enabled:
        rec["embedder_pt"], rec["finetune"] = rec["train"]["model_pt"], None
        return
    st = run.stage("finetune", f"{m.name}/s{seed}", {
        "model_sha256": sha256_file(rec["train"]["model_pt"]), "finetune": to_plain(cfg.finetune),
        "proxy": to_plain(cfg.proxy), "data": run.data_key("retrieval"), "seed": seed})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        s = finetune_embedder(rec["train"]["model_pt"], run.retrieval_data(), cfg.finetune, cfg.proxy, folder,
                              seed=seed, resume=resume, compute=resolve_compute(cfg.device, cfg.amp))
        return {k: s[k] for k in ("test_top1", "val_top1", "epochs", "budget", "curve", "resolution", "embedding",
                                  "loss", "margin", "train_wall_s", "proxy_description", "test_correct")}

    res, how = st.run(do)
    run.note(st, how)
    rec["finetune"] = res
    rec["embedder_pt"] = str(st.dir / "model.pt")


def retrieval_stage(run: PipelineRun, m: Model, seed: int) -> None:
    """Photo search with the model's fine-tuned embedder: recall@k and mAP@10 with intervals, per query."""
    from spnas.app.jobs.retrieval_eval import CheckpointEmbedder, evaluate_embedder, markdown_table

    rc, rec = run.cfg.retrieval, m.seeds[seed]
    st = run.stage("retrieval", f"{m.name}/s{seed}", {
        "embedder": sha256_file(rec["embedder_pt"]), "retrieval": {**to_plain(rc), "data": run.data_key("retrieval")},
        "seed": seed})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        s = evaluate_embedder(CheckpointEmbedder(rec["embedder_pt"]), run.retrieval_data(), rc.factory,
                              rc.latency_queries, n_boot=rc.bootstrap, seed=seed)
        s["bundle"] = rec["embedder_pt"]
        write_json_atomic(folder / "retrieval_eval.json", s)
        write_bytes_atomic(folder / "retrieval_eval.md", markdown_table(s).encode())
        return {"results": s["results"], "latency": s["latency"], "split": s["split"], "data": s["data"],
                "backend": s["backend"]}

    res, how = st.run(do)
    run.note(st, how)
    rec["retrieval"] = res


def export_stage(run: PipelineRun, m: Model, seed: int) -> None:
    """Export the model's first-seed embedder (or classifier when fine-tuning is off) to a verified bundle."""
    from spnas.app.jobs.export import run_export

    cfg = run.cfg
    rec = m.seeds[seed]
    finetuned = rec.get("finetune") is not None
    st = run.stage("export", m.name, {"model_sha256": sha256_file(rec["embedder_pt"]), "export": to_plain(cfg.export),
                                      "data": run.data_key("retrieval" if finetuned else "train"), "seed": seed})

    def do(folder: Path, resume: bool) -> dict[str, Any]:
        man = run_export(cfg.export, rec["embedder_pt"], run.retrieval_data() if finetuned else run.data(),
                         folder / "bundle", seed=seed, threads=cfg.threads,
                         source=run.retrieval_cfg() if finetuned else cfg.data)
        lat = man.get("latency", {})
        dep = lat.get("deploy_resolution") or {}
        return {"bundle": str(folder / "bundle"), "seed": seed, "fp32_bytes": man["files"]["model_fp32.tflite"]["bytes"],
                "int8_bytes": man["files"].get("model_int8.tflite", {}).get("bytes"),
                "measured_deploy_ms": dep.get("fp32_1_thread_p10_ms"), "deploy_resolution": dep.get("resolution"),
                "resolution": man.get("resolution"),
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
    m.exported = res


# ---------------------------------------------------------------------------------- the run
def run_pipeline(cfg: PipelineAppConfig) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns report.json's content."""
    from spnas.app.pipeline.report import write_report

    if cfg.data.kind is DataKind.folder:  # your photos: a folder a classifier cannot use is refused before anything
        from training.datasets import list_splits

        list_splits(cfg.data, cfg.seed)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    cfg, devices = prepare_devices(with_one_resolution(cfg))
    searched = [*cfg.socs, *([FLEET] if cfg.search.fleet else [])]
    ks = list(search_seeds(cfg))  # the run's seed first: its winners get the controls
    n_controls = sum(cfg.controls.socs is None or s in cfg.controls.socs for s in searched)
    run = PipelineRun(cfg, Path(cfg.run_dir), set(cfg.force),
               progress=RunProgress([*["warmup"] * len(ks), *["search"] * (len(searched) * len(ks)),
                                     *["controls"] * n_controls]))
    try:
        write_json_atomic(run.run_dir / "config.json", to_plain(cfg))
        winners = []
        for k in ks:
            warm = warmup_stage(run, k)
            winners += [search_stage(run, s, warm, k) for s in searched]
        models = model_list(run, winners)
        run.progress.plan([k for i, _ in enumerate(cfg.seeds) for m in models.values() for k in (
            "train", *([] if not photo_searched(cfg, m) else [
                *(["finetune"] if cfg.finetune.enabled else []), *(["export"] if i == 0 and m.export else []),
                "retrieval"]))])
        print(f"comparing {len(models)} models x {len(cfg.seeds)} seed(s): {', '.join(models)}", flush=True)
        for i, seed in enumerate(cfg.seeds):  # seed by seed: a run stopped early has whole comparisons
            for m in models.values():
                train_stage(run, m, seed)
                if not photo_searched(cfg, m):
                    continue
                finetune_stage(run, m, seed)
                if i == 0 and m.export:
                    export_stage(run, m, seed)
                retrieval_stage(run, m, seed)
    finally:
        run.progress.close()
    report_dir = Path(cfg.report_dir or run.run_dir)  # benches that run a subset share stages, not the report
    report_dir.mkdir(parents=True, exist_ok=True)
    return write_report(report_dir, cfg, models, run.events, devices)


def photo_searched(cfg: PipelineAppConfig, m: Model) -> bool:
    """Is `m` fine-tuned and photo-searched? Every model, except the random controls and search repeats
    when `controls.photo_search` is off (they are still trained and compared on proxy top-1)."""
    return cfg.controls.photo_search or m.kind not in ("random", "repeat")


def prepare_devices(cfg: PipelineAppConfig) -> tuple[PipelineAppConfig, dict[str, dict[str, Any]]]:
    """Resolve every SoC's table (those searched and those of `search.fleet`) before any data is decoded:
    `host` is the table measured on this machine (by fingerprint; `soc.if_no_table` says what to do
    without one, `soc.stale_check` spot-checks it). A skipped device leaves the run and the report says
    why; returns the config to run and, per device, what happened (table, fingerprint, spot check, skip)."""
    from export.tflite import convert_to_tflite
    from latency_tables.lookup.keys import DEPLOY_NUM_CLASSES
    from latency_tables.measuring.host import prepare_soc

    space = SearchSpace.from_config(cfg.space)
    socs, configs, devices = [], dict(cfg.soc_configs), {}
    for name in dict.fromkeys([*cfg.socs, *cfg.search.fleet]):
        soc, info = prepare_soc(cfg.soc_configs[name], space, cfg.search.latency_resolution, DEPLOY_NUM_CLASSES,
                                convert_to_tflite)
        devices[name] = info
        if soc is None:
            print(f"[left out] {name}: {info.get('skipped', 'no table')}", flush=True)
            if name in cfg.search.fleet:
                raise ConfigError(f"search.fleet names {name}, which has no table here ({info.get('skipped')}); "
                                  f"leave it out of the fleet or give it a table")
            continue
        configs[name] = soc
        if name in cfg.socs:
            socs.append(name)
    if not socs and not cfg.search.fleet:
        raise ConfigError("no device left to search for: every SoC in `socs` was skipped (see soc.if_no_table)")
    return replace(cfg, soc_configs=configs, socs=socs), devices
