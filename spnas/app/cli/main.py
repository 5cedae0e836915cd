"""Console entry points `spnas-<verb>`: Hydra-composed typed configs, one-line errors.

    spnas-search soc=sd808 search.steps=600        # group=option and key=value overrides (Hydra grammar)
    spnas-search --help                           # every option with its default and help text
    spnas-search --cfg job                        # the composed config, unresolved (as Hydra prints it)
    spnas-search --version

The config is composed and type-checked before anything else happens; a wrong key, type or choice
exits with code 2 and one line naming the key. Every project error (`spnas_core.errors.SpnasError`) is
printed as one line (what failed, what to do next) and exits with its category's code; anything
else is a bug and shows its traceback. `SPNAS_TRACEBACK=1` shows tracebacks for every error.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import time
from typing import Any, Callable, NoReturn, Sequence

from spnas_core.errors import EXIT_INPUT, ConfigError, SpnasError



# The project's loggers report progress (INFO); everything else shows from WARNING up, except the libraries
# named below, whose warnings are noise a user cannot act on. (Never name "root" here: on Python 3.11
# `getLogger("root")` is the root logger itself, and silencing it hides every warning of every command.)
PROJECT_LOGGERS = ("spnas", "spnas_core", "nas", "training", "search_spaces", "latency_tables", "export", "retrieval")
NOISY_LOGGERS = ("absl", "torchao", "torch.utils._pytree", "httpx", "jax._src.xla_bridge", "tensorflow",
                 "ai_edge_litert", "litert_torch", "ai_edge_torch", "mediapipe")
# Start-up chatter of the native libraries (TensorFlow's and MediaPipe's C++ logging), set before they load;
# a value the user set is kept.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2", "TF_ENABLE_ONEDNN_OPTS_NOTICE": "0"}
# Python warnings of third-party packages at import and conversion time, none a user can act on.
QUIET_WARNING_MODULES = r"(torchao|tensorflow|tf_keras|keras|ai_edge_litert|litert_torch|ai_edge_torch|mediapipe|jax|" \
                        r"google\.protobuf|onnxscript|torch\.onnx|torch\._export|torch\.export)(\.|$)"


def _quiet_third_parties() -> None:
    """Filter the third-party start-up noise (TensorFlow, absl, torchao, MediaPipe) from a command's output."""
    import warnings

    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", module=QUIET_WARNING_MODULES)


def _configure_logging() -> None:
    """The project's progress at INFO (per-epoch lines at DEBUG), everything else from WARNING up, and the
    noisy libraries only at ERROR; `SPNAS_LOG=DEBUG` shows the per-epoch lines."""
    _quiet_third_parties()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    level = os.environ.get("SPNAS_LOG", "INFO").upper()
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _fail(app: str, e: BaseException, code: int) -> NoReturn:
    if os.environ.get("SPNAS_TRACEBACK"):
        raise e
    msg = e.one_line() if isinstance(e, SpnasError) else " ".join(str(e).split())
    print(f"spnas-{app.replace('_', '-')}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def subcommand_argv(argv: Sequence[str], commands: type[enum.Enum] | None) -> list[str]:
    """A command's first word as its `command=` key when it names one of `commands` (the command config's
    enum of subcommands; a dash reads as an underscore: `spnas-index build-due`); other argv as given."""
    args = list(argv)
    if commands is not None and args and args[0].replace("-", "_") in commands.__members__:
        return [f"command={args[0].replace('-', '_')}", *args[1:]]
    return args


def subcommand_usage(commands: type[enum.Enum] | None) -> str:
    """The usage line's subcommand choice, from the same enum the first word is read with."""
    return f"[{'|'.join(n.replace('_', '-') for n in commands.__members__)}] " if commands is not None else ""


def run_app(app: str, summary: str, task: Callable[[Any], Any], argv: Sequence[str] | None = None,
            subcommands: type[enum.Enum] | None = None) -> NoReturn:
    """Parse argv (its first word a subcommand when `subcommands` names one), compose and type the config,
    run `task(config)`; exit with the right code."""
    from spnas._version import __version__

    from spnas.app.cli.compose import compose_node, render_help, to_typed

    args = subcommand_argv(sys.argv[1:] if argv is None else argv, subcommands)
    if "--version" in args or "-V" in args:
        print(f"spnas-{app.replace('_', '-')} {__version__}")
        sys.exit(0)
    cfg_mode = None
    if "--cfg" in args or "-c" in args:
        i = args.index("--cfg") if "--cfg" in args else args.index("-c")
        cfg_mode = args[i + 1] if i + 1 < len(args) else "job"
        del args[i:i + 2]
    try:
        if "--help" in args or "-h" in args:
            print(render_help(app, summary, subcommand_usage(subcommands)), end="")
            sys.exit(0)
        unknown = [a for a in args if a.startswith("-")]
        if unknown:
            raise ConfigError(f"unknown flag {unknown[0]}: the flags are --help, --cfg job, --version; "
                                   f"everything else is key=value")
        node = compose_node(app, args)
        if cfg_mode:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(node, resolve=cfg_mode == "resolved"), end="")
            sys.exit(0)
        cfg = to_typed(node, app)
        _configure_logging()
        task(cfg)
    except SpnasError as e:
        _fail(app, e, e.exit_code)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        _fail(app, e, EXIT_INPUT)  # an input path the library did not check itself
    except KeyboardInterrupt:
        print(f"spnas-{app.replace('_', '-')}: interrupted; finished work is kept (re-run to resume)", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)


# ---------------------------------------------------------------------------------- commands
def _is_main_rank() -> bool:
    """Under torchrun only rank 0 prints the result line (every rank runs the command)."""
    return int(os.environ.get("RANK", "0")) == 0


def _train(cfg: Any) -> None:
    from spnas.app.jobs import commands

    s = commands.train(cfg)
    if _is_main_rank():
        print(f"{s['arch']['name'] or 'arch'} on {s['data']['name']}: test top-1 {s['test_top1']:.4f}, "
              f"top-5 {s['test_top5']:.4f} ({s['epochs']} epochs, {s['train_wall_s']:.0f} s); run folder: {cfg.run_dir}")


def train_main() -> None:
    """`spnas-train`: train and evaluate a fixed architecture."""
    run_app("train", "train and evaluate a fixed architecture", _train)


def profile_main() -> None:
    """`spnas-profile [measure|validate|model|import|wholenet] key=value ...`: latency tables."""
    from spnas.app.jobs.config import ProfileCommand

    def task(cfg: Any) -> None:
        from spnas.app.jobs.profile import run

        run(cfg)

    run_app("profile", "latency tables. Subcommands (first word): measure (default: profile every op of this "
                       "CPU, or a phone with device=adb), validate (whole networks vs the table), model (write the "
                       "modeled Snapdragon tables), import (a Single-Path NAS JSON or OFA/ProxylessNAS YAML table), "
                       "wholenet (a table from a few whole-network op profiles: this CPU, device=adb or device=aihub)",
            task, subcommands=ProfileCommand)


def search_main() -> None:
    """`spnas-search`: Single-Path NAS against a device's latency table."""

    def task(cfg: Any) -> None:
        from spnas.app.jobs import commands

        s = commands.search(cfg)
        if _is_main_rank():
            unit = s.get("cost_unit", "ms")
            print(f"derived for {s['soc']}: {s['arch_string']}\npredicted {s['cost']:.2f} {unit} on {s['table']} "
                  f"({s['table_provenance']}), val top-1 {s['val_top1']:.4f}; run folder: {cfg.run_dir}")
            if s["target"].get("met") is False:
                print(f"the search missed its budget: {s['target']['reason']}")
            if s.get("groundtruth"):
                from nas.groundtruth import describe_judgement

                print("\n".join(describe_judgement(s["groundtruth"], s["groundtruth"]["unit"])))

    run_app("search", "Single-Path NAS against one device's latency table", task)


def sweep_main() -> None:
    """`spnas-sweep`: Optuna study over lambda or target latency; Pareto front as CSV and PNG."""

    def task(cfg: Any) -> None:
        from spnas.app.jobs import commands

        s = commands.sweep(cfg)
        print(f"{len(s['trials'])} trials, {len(s['pareto'])} on the Pareto front: {s['csv']} {s['png']}")

    run_app("sweep", "Optuna multi-objective study (accuracy up, predicted latency down) over lambda or the "
                     "target latency", task)


def export_main() -> None:
    """`spnas-export`: a trained model to a verified TFLite / ONNX / MediaPipe bundle."""

    def task(cfg: Any) -> None:
        from spnas.app.jobs import commands

        m = commands.export(cfg)
        p = m["parity"]
        lat = m.get("latency", {}).get("cpu", {}).get("model_fp32.tflite", {}).get("1_thread", {})
        int8 = p.get("tflite_int8", {}).get("top1_agreement")
        print(f"bundle {cfg.out_dir}: fp32 max|diff| {p['tflite_fp32']['max_abs_diff']:.2e}, MediaPipe cos "
              f"{p['mediapipe_embedder']['min_cosine']:.5f}, int8 "
              f"{'agreement %.3f' % int8 if int8 is not None else 'not shipped'}, fp32 1-thread "
              f"{lat.get('p10_ms', float('nan')):.3f} ms")
        if m.get("int8_refused"):
            print(f"int8 left out: {m['int8_refused']}")

    run_app("export", "a trained model to a verified TFLite / ONNX / MediaPipe bundle", task)


def retrieval_eval_main() -> None:
    """`spnas-retrieval-eval`: recall@k / mAP@10 and query latency of a bundle."""

    def task(cfg: Any) -> None:
        from spnas.app.jobs.retrieval_eval import markdown_table, run

        print(markdown_table(run(cfg)))

    run_app("retrieval_eval", "photo search quality and latency of one bundle", task)


def serve_main() -> None:
    """`spnas-serve [all|gateway]`: the photo search on one machine, or its gateway alone."""
    from spnas.app.serving.config import ServeCommand

    def task(cfg: Any) -> None:
        from spnas.app.serving.serve import run

        run(cfg)

    run_app("serve", "the photo search: gateway + index services of the ready versions on one machine "
                     "(all, default), or the gateway alone (gateway)", task, subcommands=ServeCommand)


def index_main() -> None:
    """`spnas-index [build|build-due|serve|fetch|list|retain] key=value ...`: index versions."""
    from spnas.app.serving.config import IndexCommand

    def task(cfg: Any) -> None:
        from spnas.app.serving.index import run

        run(cfg)

    run_app("index", "index versions of the photo search. Subcommands (first word): build (one period), build-due "
                     "(what is due, then retention: a CronJob), serve (one version over gRPC), fetch (copy a version "
                     "locally: an initContainer), list, retain", task, subcommands=IndexCommand)


def pipeline_main() -> None:
    """`spnas-pipeline`: the main job, from search to report."""

    def task(cfg: Any) -> None:
        from spnas.app.pipeline.run import run_pipeline

        t0 = time.perf_counter()
        r = run_pipeline(cfg)
        print()
        for line in (r.get("note"), r.get("data_caveat")):
            if line:
                print(line)
        for h in r["headline"]:
            print(h["text"])
        for row in r["rows"]:
            if row["kind"] == "spnas" and (row["record"].get("target") or {}).get("met") is False:
                print(f"{row['soc']:>6}: the search missed its budget: {row['record']['target']['reason']}")
        for soc, info in r["provenance"].get("devices", {}).items():
            if "skipped" in info:
                print(f"{soc:>6}: skipped: {info['skipped']}")
            elif (info.get("stale_check") or {}).get("warning"):
                print(f"{soc:>6}: {info['stale_check']['warning']}")
        print(f"\nreport: {cfg.report_dir or cfg.run_dir}/report.md ({time.perf_counter() - t0:.0f} s)")

    run_app("pipeline", "search -> retrain -> export -> photo search -> report, per SoC, against baselines", task)
