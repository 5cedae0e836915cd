"""Console entry points `spnas-<verb>`; each is a Hydra app over the `configs/` tree.

`spnas-train --help` lists the config groups, `spnas-train --cfg job` prints the composed config.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from typing import Any, Callable

CONFIG_DIR = str(resources.files("configs"))


def _to_dict(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _hydra_app(config_name: str, task: Callable[[dict[str, Any]], Any]) -> None:
    """Run `task(resolved config dict)` as a Hydra app; user errors print one line, exit 2."""
    import hydra

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _main(cfg: Any) -> None:
        logging.getLogger("absl").setLevel(logging.ERROR)
        try:
            task(_to_dict(cfg))
        except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
            if os.environ.get("SPNAS_TRACEBACK"):
                raise
            logging.getLogger("spnas").error("%s", e)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    _main()


def _train(cfg: dict[str, Any]) -> None:
    from nas.train import train

    s = train(cfg)
    print(f"{s['arch']['name'] or 'arch'} on {s['data']['name']}: test top-1 {s['test_top1']:.4f}, "
          f"top-5 {s['test_top5']:.4f} ({s['epochs']} epochs, {s['train_wall_s']:.0f} s); "
          f"run folder: {cfg['run_dir']}")


def train_main() -> None:
    """`spnas-train`: train and evaluate a fixed architecture."""
    _hydra_app("train", _train)


PROFILE_COMMANDS = ("measure", "validate", "model", "import")


def profile_main() -> None:
    """`spnas-profile [measure|validate|model|import] key=value ...`: latency tables."""
    if len(sys.argv) > 1 and sys.argv[1] in PROFILE_COMMANDS:
        sys.argv[1] = f"command={sys.argv[1]}"

    def task(cfg: dict[str, Any]) -> None:
        from nas.profile import run

        run(cfg)

    _hydra_app("profile", task)


def search_main() -> None:
    """`spnas-search`: Single-Path NAS against a device's latency table."""

    def task(cfg: dict[str, Any]) -> None:
        from nas.search import search

        s = search(cfg)
        print(f"derived for {s['soc']}: {s['arch_string']}\npredicted {s['predicted_ms']:.2f} ms on {s['table']} "
              f"({s['table_provenance']}), val top-1 {s['val_top1']:.4f}; run folder: {cfg['run_dir']}")

    _hydra_app("search", task)


SEARCH_OVERRIDE_PREFIXES = ("soc=", "space=", "data=", "data.", "search=", "search.", "seed=", "threads=")


def sweep_main() -> None:
    """`spnas-sweep`: Optuna study over lambda or target latency; Pareto front as CSV and PNG."""

    def task(cfg: dict[str, Any]) -> None:
        from hydra.core.hydra_config import HydraConfig

        from nas.sweep import sweep

        overrides = [o for o in HydraConfig.get().overrides.task if o.startswith(SEARCH_OVERRIDE_PREFIXES)]
        s = sweep(cfg, overrides)
        print(f"{len(s['trials'])} trials, {len(s['pareto'])} on the Pareto front: {s['csv']} {s['png']}")

    _hydra_app("sweep", task)


def export_main() -> None:
    """`spnas-export`: a trained model to a verified TFLite / ONNX / MediaPipe bundle."""

    def task(cfg: dict[str, Any]) -> None:
        from nas.export_job import run_export

        m = run_export(cfg)
        p = m["parity"]
        lat = m.get("latency", {}).get("cpu", {}).get("model_fp32.tflite", {}).get("1_thread", {})
        print(f"bundle {cfg['out_dir']}: fp32 max|diff| {p['tflite_fp32']['max_abs_diff']:.2e}, MediaPipe cos "
              f"{p['mediapipe_embedder']['min_cosine']:.5f}, int8 agreement "
              f"{p.get('tflite_int8', {}).get('top1_agreement', float('nan')):.3f}, fp32 1-thread "
              f"{lat.get('p10_ms', float('nan')):.3f} ms")

    _hydra_app("export", task)


def retrieval_eval_main() -> None:
    """`spnas-retrieval-eval`: recall@k / mAP@10 and query latency of a bundle on Grocery Store."""

    def task(cfg: dict[str, Any]) -> None:
        from nas.retrieval_eval import markdown_table, run

        print(markdown_table(run(cfg)))

    _hydra_app("retrieval_eval", task)


def serve_main() -> None:
    """`spnas-serve`: index services + REST gateway on loopback."""

    def task(cfg: dict[str, Any]) -> None:
        from nas.serve import run

        run(cfg)

    _hydra_app("serve", task)


def pipeline_main() -> None:
    """`spnas-pipeline`: the main job, from search to report."""

    def task(cfg: dict[str, Any]) -> None:
        import time

        from nas.pipeline import run_pipeline

        t0 = time.perf_counter()
        r = run_pipeline(cfg)
        print()
        for h in r["headline"]:
            print(f"{h['soc']:>6}: {'MET' if h['met'] else 'not met'} (latency {h['latency_delta_pct']:+.1f}% "
                  f"{h['latency_basis']}, top-1 {h['top1_delta_pts']:+.2f} points vs MobileNetV2)")
        print(f"\nreport: {cfg['run_dir']}/report.md ({time.perf_counter() - t0:.0f} s)")

    _hydra_app("pipeline", task)
