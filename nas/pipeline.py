"""`spnas-pipeline`: search -> derive -> retrain -> export -> index -> evaluate, per SoC, against
MobileNetV2 (and MobileNetV3-Large) trained, exported and evaluated the same way; then the report.

    spnas-pipeline experiment=demo
    spnas-pipeline experiment=cifar10 force=[search]      # redo one stage kind

Every stage writes to its own folder in the run (`search/<soc>`, `train/<model>`, `export/<model>`,
`retrieval/<model>`) with a `stage.json` holding a content hash of its config and inputs. A stage
whose hash matches a finished `stage.json` is skipped; one that was interrupted is resumed (search
and training continue from their checkpoints); one whose inputs changed is redone. `force=[...]`
redoes stage kinds on demand (`force=[all]` everything).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from latency_tables.table import resolve_table_path
from search_spaces import ArchSpec

from .runtime import atomic_write_json, hash_obj, sha256_file

log = logging.getLogger(__name__)

STAGES = ("search", "train", "export", "retrieval")


class Stage:
    """One stage folder: run `fn` unless a finished run with the same key is already there."""

    def __init__(self, run_dir: Path, kind: str, name: str, key_inputs: dict[str, Any], force: set[str]) -> None:
        self.kind, self.name = kind, name
        self.dir = run_dir / kind / name
        self.key = hash_obj(key_inputs)
        self.force = "all" in force or kind in force
        self.state_path = self.dir / "stage.json"

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def run(self, fn: Callable[[Path, bool], dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """Returns (the stage's result, 'skipped' | 'resumed' | 'ran')."""
        st = self.state()
        if st.get("key") == self.key and st.get("status") == "done" and not self.force:
            return st["result"], "skipped"
        resume = st.get("key") == self.key and st.get("status") == "running" and not self.force
        if not resume and self.dir.exists():
            shutil.rmtree(self.dir)  # inputs changed (or forced): nothing in here is valid any more
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.state_path, {"key": self.key, "status": "running", "started": time.time()})
        t0 = time.perf_counter()
        result = fn(self.dir, resume)
        wall = time.perf_counter() - t0 + (float(st.get("wall_s", 0)) if resume else 0.0)
        atomic_write_json(self.state_path, {"key": self.key, "status": "done", "result": result, "wall_s": wall,
                                            "finished": time.time()})
        return result, "resumed" if resume else "ran"

    @property
    def wall_s(self) -> float:
        return float(self.state().get("wall_s", 0.0))


def _table_hash(name: str) -> str:
    return sha256_file(resolve_table_path(name))


def run_pipeline(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns report.json's content."""
    from .data import load_data
    from .export_job import run_export
    from .retrieval_eval import evaluate_bundle
    from .search import search
    from .train import train

    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    force = set(cfg.get("force") or [])
    unknown = force - set(STAGES) - {"all"}
    if unknown:
        raise ValueError(f"force takes stage kinds {list(STAGES)} or 'all'; unknown: {sorted(unknown)}")
    seed = int(cfg.get("seed", 0))
    data_cfg = {**dict(cfg["data"]), "seed": seed}
    ret_cfg = {**dict(cfg["retrieval"]["data"]), "seed": seed, "label_level": "fine"}
    lat_res = int(cfg["search"].get("latency_resolution", 224))
    events: list[dict[str, Any]] = []
    data_cache: dict[str, Any] = {}

    def data():
        if "train" not in data_cache:
            data_cache["train"] = load_data(data_cfg)
        return data_cache["train"]

    def rdata():
        if "ret" not in data_cache:
            data_cache["ret"] = load_data(ret_cfg)
        return data_cache["ret"]

    def note(stage: Stage, how: str) -> None:
        events.append({"stage": f"{stage.kind}/{stage.name}", "how": how, "wall_s": stage.wall_s})
        print(f"[{how:>7}] {stage.kind}/{stage.name} ({stage.wall_s:.0f} s)", flush=True)

    # ------------------------------------------------------------------ search per SoC
    models: dict[str, dict[str, Any]] = {}
    for soc_name in cfg["socs"]:
        soc = dict(cfg["soc_configs"][soc_name])
        key = {"space": cfg["space"], "data": data_cfg, "search": cfg["search"], "soc": soc,
               "table_sha256": _table_hash(soc["table"]), "seed": seed, "v": 1}
        st = Stage(run_dir, "search", soc_name, key, force)

        def do_search(folder: Path, resume: bool, soc=soc) -> dict[str, Any]:
            s = search({"run_dir": str(folder), "seed": seed, "resume": resume, "threads": cfg.get("threads"),
                        "search": cfg["search"], "soc": soc, "space": cfg["space"], "data": data_cfg}, data=data())
            return {"arch": s["arch"], "predicted_ms": s["predicted_ms"], "val_top1": s["val_top1"],
                    "choices": s["choices"], "target_ms": s["target_ms"], "table": s["table"]}

        res, how = st.run(do_search)
        note(st, how)
        models[f"spnas-{soc_name}"] = {"arch": res["arch"], "soc": soc_name, "kind": "spnas",
                                       "search": res, "search_dir": str(st.dir)}
    for b in cfg.get("baselines") or []:
        models[b] = {"arch": b, "soc": None, "kind": "baseline"}

    # ------------------------------------------------------------------ train, export, retrieval per model
    for name, m in models.items():
        arch_ref = m["arch"] if isinstance(m["arch"], str) else ArchSpec.from_dict(m["arch"]).to_string()
        tkey = {"arch": arch_ref, "data": data_cfg, "train": cfg["train"], "seed": seed,
                "init": cfg.get("init", "scratch"), "v": 1}
        st = Stage(run_dir, "train", name, tkey, force)

        def do_train(folder: Path, resume: bool, m=m, name=name) -> dict[str, Any]:
            arch = m["arch"]
            if not isinstance(arch, str):
                a = ArchSpec.from_dict(arch)
                arch = str(a.replace(name=name).save(folder / "derived_arch.json"))
            tc = {"run_dir": str(folder), "arch": arch, "seed": seed, "resume": resume, "threads": cfg.get("threads"),
                  "data": data_cfg, "train": cfg["train"], "latency_resolution": lat_res,
                  "init": cfg.get("init", "scratch"),
                  "supernet": str(Path(m["search_dir"]) / "supernet.pt") if m.get("search_dir") else None}
            s = train(tc, data=data())
            return {k: s[k] for k in ("test_top1", "test_top5", "params", "macs", "macs_at_deploy_resolution",
                                      "arch_string", "train_wall_s", "epochs", "data")}

        res, how = st.run(do_train)
        note(st, how)
        m["train"] = res
        m["model_pt"] = str(st.dir / "model.pt")
        ekey = {"model_sha256": sha256_file(m["model_pt"]), "export": cfg["export"], "data": data_cfg, "v": 1}
        st = Stage(run_dir, "export", name, ekey, force)

        def do_export(folder: Path, resume: bool, m=m) -> dict[str, Any]:
            from export.bundle import ParityError

            ecfg = {"checkpoint": m["model_pt"], "arch": None, "seed": seed, "threads": cfg.get("threads"),
                    "out_dir": str(folder / "bundle"), "data": data_cfg, "export": cfg["export"]}
            int8_refused = None
            try:
                man = run_export(ecfg, data=data())
            except ParityError as e:
                if e.failed != ["tflite_int8"]:
                    raise
                # int8 alone missed its tolerance: ship the float bundle and say so in the report
                int8_refused = str(e)
                log.warning("%s; exporting without int8", e)
                man = run_export({**ecfg, "export": {**cfg["export"], "int8": False}}, data=data())
            lat = man.get("latency", {})
            return {"bundle": str(folder / "bundle"), "fp32_bytes": man["files"]["model_fp32.tflite"]["bytes"],
                    "int8_bytes": man["files"].get("model_int8.tflite", {}).get("bytes"),
                    "measured_224_ms": (lat.get("deploy_resolution") or {}).get("fp32_1_thread_p10_ms"),
                    "measured_native_ms": lat.get("cpu", {}).get("model_fp32.tflite", {}).get("1_thread", {}).get("p10_ms"),
                    "table_predictions": {k: v.get("predicted_ms") for k, v in lat.get("table_predictions", {}).items()},
                    "parity": {"fp32_max_abs": man["parity"]["tflite_fp32"]["max_abs_diff"],
                               "mediapipe_min_cos": man["parity"]["mediapipe_embedder"]["min_cosine"]},
                    "int8": {k: man["int8"].get(k) for k in ("top1_drop", "top1_agreement")} if man.get("int8") else None,
                    "int8_refused": int8_refused,
                    "embedder_sha256": man["files"]["embedder.tflite"]["sha256"]}

        res, how = st.run(do_export)
        note(st, how)
        m["export"] = res
        rkey = {"embedder": res["embedder_sha256"], "retrieval": cfg["retrieval"], "data": ret_cfg, "v": 1}
        st = Stage(run_dir, "retrieval", name, rkey, force)

        def do_retrieval(folder: Path, resume: bool, m=m) -> dict[str, Any]:
            from .retrieval_eval import markdown_table
            from .runtime import atomic_write_bytes

            s = evaluate_bundle(m["export"]["bundle"], rdata(), cfg["retrieval"].get("backend", "litert"),
                                cfg["retrieval"].get("factory", "Flat"),
                                int(cfg["retrieval"].get("latency_queries", 100)))
            atomic_write_json(folder / "retrieval_eval.json", s)
            atomic_write_bytes(folder / "retrieval_eval.md", markdown_table(s).encode())
            return {"results": s["results"], "latency": s["latency"]}

        res, how = st.run(do_retrieval)
        note(st, how)
        m["retrieval"] = res

    from .report import write_report

    report_dir = Path(cfg.get("report_dir") or run_dir)  # benches that run a subset share stages, not the report
    report_dir.mkdir(parents=True, exist_ok=True)
    return write_report(report_dir, cfg, models, events)


