"""`spnas-export`: a trained model (model.pt from spnas-train, or a reference net) to a verified bundle
with measured latencies.

    spnas-export checkpoint=runs/train/x/model.pt data=cifar10 out_dir=runs/export/x
    spnas-export arch=mobilenet_v2 checkpoint=null data=cifar10      # untrained weights: latency only

Conversion, parity and the timing of the artifacts live in `export/` (`export.latency` implements
`ExportLatencyConfig`); this job adds what needs the other packages: real data for calibration and
parity (training), the local profiler as the timer, and every shipped latency table's prediction
(latency_tables) for the latency figures written into the manifest.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from export.bundle import ExportInputs, Tolerances, build_bundle
from export.config import ExportConfig, ExportLatencyConfig, Int8Policy
from export.latency import measure_latency
from latency_tables.config import ProfileDevice, ProfilerConfig
from latency_tables.lookup.predictor import predict_latency_ms
from latency_tables.lookup.table import usable_tables
from latency_tables.profilers import Profiler, Timing
from latency_tables.profilers.factory import make_profiler
from search_spaces import ArchSpec, build_model
from spnas_core.errors import ConfigError, ImageDecodeError, InputError, ParityError, TableError
from spnas_core.images import decode_rgb
from spnas_core.versions import versions
from training.checkpoints import load_model_file
from training.config import DataConfig
from training.datasets import DataBundle, load_data
from training.loop import resolve_arch
from training.runtime import set_threads

log = logging.getLogger(__name__)

# How a bundle's whole models are timed on this CPU (fewer, longer runs than a table's single ops), unpinned.
EXPORT_TIMING = ProfilerConfig(cpus=None, warmup_runs=10, num_runs=50, min_time_s=0.3)


def load_for_export(ckpt: str | Path | None, arch_ref: str | None, data: DataBundle) -> tuple[torch.nn.Module, ArchSpec]:
    """The network to export: a model.pt (checked against `arch_ref` if both are given) or a reference net."""
    if ckpt:
        model, arch, blob = load_model_file(ckpt)
        if arch_ref:
            want = resolve_arch(arch_ref, arch.num_classes, arch.resolution)
            if want.to_string() != arch.to_string():
                raise InputError(f"checkpoint {ckpt} holds {arch.to_string()} but arch={arch_ref} is "
                                 f"{want.to_string()}; pass the arch.json the checkpoint was trained with")
        if arch.num_classes != data.num_classes:
            raise InputError(f"checkpoint {ckpt} has {arch.num_classes} classes but data '{data.name}' has "
                             f"{data.num_classes}; export with the data set the model was trained on")
        return model, arch
    if not arch_ref:
        raise ConfigError("spnas-export needs checkpoint=<model.pt> (or checkpoint=null arch=<reference net> for "
                          "untrained weights)")
    arch = resolve_arch(arch_ref, data.num_classes, data.resolution)
    log.warning("exporting %s with untrained weights (no checkpoint): latency figures only", arch.name)
    torch.manual_seed(0)
    return build_model(arch).eval(), arch


def export_inputs(data: DataBundle, cfg: ExportConfig, seed: int = 0) -> ExportInputs:
    """Calibration (train), parity (test originals) and int8 evaluation (test) images."""
    n_cal, n_par, n_eval = cfg.calibration_images, cfg.parity_images, cfg.int8_eval_images
    rng = np.random.default_rng(seed)
    cal_idx = np.sort(rng.choice(len(data.train), size=min(n_cal, len(data.train)), replace=False))
    test_idx = np.sort(rng.choice(len(data.test), size=min(n_eval, len(data.test)), replace=False))
    originals: list[np.ndarray] = []
    for i in test_idx[: max(n_par, 32)]:
        ident = data.test.ids[i] if data.test.ids else ""
        img = None
        if ident and Path(ident).is_file():
            try:
                img = decode_rgb(ident)
            except ImageDecodeError:
                img = None
        originals.append(img if img is not None else data.test.images[i])
        if len(originals) >= n_par:
            break
    return ExportInputs(labels=list(data.classes), calibration=data.train.images[cal_idx],
                        parity_originals=originals, eval_images=data.test.images[test_idx],
                        eval_labels=data.test.labels[test_idx], data_info=data.summary())


@functools.lru_cache(maxsize=None)
def _local_profiler(threads: int) -> Profiler:
    return make_profiler(ProfileDevice.local, replace(EXPORT_TIMING, threads=threads))


def time_tflite(path: Path, threads: int) -> Timing:
    """One timing of a bundle's .tflite file on this CPU: the local profiler with `EXPORT_TIMING`."""
    return _local_profiler(int(threads)).measure(path)


def measure_bundle_latency(work: Path, net: torch.nn.Module, arch: ArchSpec, image: np.ndarray,
                           lcfg: ExportLatencyConfig) -> dict[str, Any]:
    """Latency of every artifact on this CPU (`export.latency`), and the table predictions for every
    shipped device."""
    out = measure_latency(work, net, arch, image, lcfg, time_tflite)
    dres = lcfg.deploy_resolution
    deploy = arch.replace(resolution=int(dres)) if dres else arch
    out["table_predictions"] = table_predictions(deploy)
    return {"latency": out}


def table_predictions(arch: ArchSpec) -> dict[str, Any]:
    """Predicted latency of `arch` (at its input size) on every table found by name that loads (a malformed
    file is reported once by `usable_tables`, never written into the manifest)."""
    preds: dict[str, Any] = {}
    for name, t in usable_tables().items():
        try:
            preds[name] = {"predicted_ms": predict_latency_ms(arch, t), "provenance": t.provenance,
                           "resolution": arch.resolution}
        except TableError as e:  # a valid table that lacks this network's rows (e.g. another resolution)
            preds[name] = {"predicted_ms": None, "resolution": arch.resolution, "error": str(e).splitlines()[0]}
    return preds


def _build(ecfg: ExportConfig, checkpoint: str | Path | None, arch_ref: str | None, data: DataBundle, out_dir: Path,
           seed: int, int8: bool, note: dict[str, Any] | None = None,
           data_source: dict[str, Any] | None = None) -> dict[str, Any]:
    net, arch = load_for_export(checkpoint, arch_ref, data)
    inputs = export_inputs(data, ecfg, seed)
    tol = Tolerances(**vars(ecfg.tolerances))
    image = inputs.parity_originals[0]

    dres = int(ecfg.latency.deploy_resolution or arch.resolution)

    def extra(work: Path) -> dict[str, Any]:
        out = dict(note or {})
        out["resolution"] = {"input": arch.resolution, "latency_tables": dres, "one_resolution": dres == arch.resolution,
                             "note": f"the model takes {arch.resolution}x{arch.resolution}; table predictions at "
                                     f"{dres}x{dres}" + ("" if dres == arch.resolution else
                                                          " (export.latency.deploy_resolution)")}
        if data_source:
            out["data_source"] = data_source
        if ecfg.measure_latency:
            out.update(measure_bundle_latency(work, net, arch, image, ecfg.latency))
        return out

    steps = ["tflite_fp32", "tflite_embedder", *(["tflite_int8"] if int8 else []), "onnx", "parity",
             *(["int8_eval"] if int8 else []), "extra"]
    names = {"extra": "latency on this CPU and on every table" if ecfg.measure_latency else "manifest"}
    with export_bar(len(steps), arch.name or "model") as bar:
        def on_step(label: str) -> None:
            if bar is not None:
                if bar.n or label != steps[0]:
                    bar.update(1)
                bar.set_postfix_str(names.get(label, label.replace("_", " ")))
        return build_bundle(net, arch, inputs, out_dir, int8=int8, opset=ecfg.onnx_opset, tol=tol,
                            versions=versions(), extra_manifest=extra, on_step=on_step)


@contextlib.contextmanager
def export_bar(total: int, name: str) -> Iterator[Any]:
    """A bar over an export's steps (the longest stage of a pipeline) on a terminal; None elsewhere."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"export {name}", unit="step", file=sys.stderr, leave=False,
               bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")
    try:
        yield bar
    finally:
        bar.close()


def data_source(cfg: DataConfig) -> dict[str, Any]:
    """What `spnas-serve` needs to serve the photos a bundle was evaluated on: the data set's config (the
    root resolved to an absolute path), recorded in the manifest as `data_source`."""
    import os

    from spnas_core.config import to_plain

    d = to_plain(cfg)
    d["root"] = str(Path(os.path.expanduser(str(cfg.root))).resolve())
    if cfg.test_root:
        d["test_root"] = str(Path(os.path.expanduser(str(cfg.test_root))).resolve())
    return {k: v for k, v in d.items() if k not in ("cache_dir",)}


def run_export(export: ExportConfig, checkpoint: str | Path | None, data: DataConfig | DataBundle,
               out_dir: str | Path, *, arch: str | None = None, seed: int = 0,
               threads: int | None = None, source: DataConfig | None = None) -> dict[str, Any]:
    """Export `checkpoint` (a `model.pt`; or None with `arch` = a reference net: untrained weights, for
    latency figures) to a verified bundle in `out_dir`, with real images of `data` (the set the model
    was trained on) for calibration and parity, and latencies measured on this CPU and predicted on
    every table; returns the manifest. The data set's config (`data` when it is one, else `source`) is
    recorded in the manifest (`data_source`): `spnas-serve` serves those photos by default.

    With `export.int8=fallback` an int8 model that alone misses its tolerance is left out and the
    float bundle ships, its manifest saying why (`int8_refused`)."""
    set_threads(threads)
    src = data_source(data if isinstance(data, DataConfig) else source) if isinstance(
        data, DataConfig) or source is not None else None
    data = load_data(data, seed) if isinstance(data, DataConfig) else data
    out_dir = Path(out_dir)
    policy = export.int8
    try:
        return _build(export, checkpoint, arch, data, out_dir, seed, int8=policy is not Int8Policy.disabled,
                      data_source=src)
    except ParityError as e:
        if policy is not Int8Policy.fallback or e.failed != ["tflite_int8"]:
            raise
        refused = e.one_line()
    log.warning("%s; exporting without int8 (export.int8=fallback)", refused)
    return _build(export, checkpoint, arch, data, out_dir, seed, int8=False, note={"int8_refused": refused},
                  data_source=src)
