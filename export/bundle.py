"""Build a verified model bundle: TFLite fp32 + int8, ONNX, MediaPipe embedder + graph, manifest.

The bundle is assembled in a temporary folder beside the destination and renamed into place only
after every parity check passed, so a failed export never leaves a half-written bundle.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from search_spaces import ArchSpec, embedding_info
from spnas_core.errors import InputError, InputNotFoundError, ParityError
from spnas_core.files import atomic_path, replace_dir
from spnas_core.images import resize_like_mediapipe
from spnas_core.native import quiet_native

from .deploy import NHWC, DeployModel, to_unit_float
from .mediapipe_graph import embedder_graph
from .metadata import ImageInputSpec, ModelInfo, attach_metadata, build_metadata
from .tflite import quiet_litert, convert_to_tflite, op_histogram, run_tflite

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "spnas.bundle/1"
FILES = ("model_fp32.tflite", "model_int8.tflite", "model.onnx", "embedder.tflite", "embedder_graph.pbtxt",
         "arch.json", "weights.pt")


@dataclass
class Tolerances:
    fp32_max_abs: float = 1e-4  # logits, torch vs TFLite fp32
    onnx_max_abs: float = 1e-4  # logits and embedding, torch vs ONNX Runtime
    mediapipe_min_cos: float = 0.999  # MediaPipe embedding vs torch features
    int8_min_agreement: float = 0.95  # top-1 agreement of int8 with torch


@dataclass
class ExportInputs:
    """What the exporter needs besides the network: real images and labels."""

    labels: list[str]
    calibration: np.ndarray  # uint8 NHWC at model size, training split
    parity_originals: list[np.ndarray]  # real test images at their original size (MediaPipe resizes them)
    eval_images: np.ndarray  # uint8 NHWC at model size, test split (int8 top-1 drop)
    eval_labels: np.ndarray
    data_info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- converters
def export_fp32(net: nn.Module, size: int, path: Path, output: str) -> Path:
    """Float32 TFLite with NHWC [0, 1] input."""
    return convert_to_tflite(DeployModel(net, output).eval(), torch.rand(1, 3, size, size), path)


def export_int8(net: nn.Module, size: int, calibration: np.ndarray, path: Path) -> dict[str, Any]:
    """Post-training static int8 (PT2E, per-channel symmetric weights) calibrated on real images."""
    with quiet_native():  # a first import loads TensorFlow: absl's preamble and the oneDNN notice
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    quiet_litert()
    model = NHWC(DeployModel(net, "logits")).eval()
    cal = to_unit_float(calibration).permute(0, 2, 3, 1).contiguous()
    sample = (cal[:1],)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        ex = torch.export.export(model, sample).module()
        ex = quantize_pt2e.prepare_pt2e(ex, quantizer)
        with torch.no_grad():
            for i in range(len(cal)):
                ex(cal[i:i + 1])
        ex = quantize_pt2e.convert_pt2e(ex, fold_quantize=False)
        widened = widen_hardswish_output_scales(ex)
        edge = litert_torch.convert(ex, sample, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    with atomic_path(path) as tmp:  # nothing is left behind when the model does not load
        with contextlib.redirect_stdout(io.StringIO()):
            edge.export(str(tmp))
        try:  # a kernel that refuses its quantization parameters fails here, not halfway through parity
            run_tflite(tmp, [cal[:1].numpy()])
        except RuntimeError as e:
            raise ParityError(f"the int8 model does not run in LiteRT ({e}); export with export.int8=false",
                              ["tflite_int8"]) from e
    return {"scheme": "PT2E static, int8 per-channel symmetric weights, int8 activations",
            "calibration_images": int(len(cal)), "hardswish_output_scales_widened": widened}


_PASS_THROUGH = ("dropout", "flatten", "view", "reshape", "clone", "squeeze", "unsqueeze")


def widen_hardswish_output_scales(gm: torch.fx.GraphModule) -> int:
    """Raise too-fine int8 output scales of HARD_SWISH so LiteRT's kernel accepts them; returns how many.

    TFLite's int8 HARD_SWISH needs output_scale > input_scale / 128. Calibration breaks that when a
    layer's inputs span a wide range but its outputs a narrow one (a head whose pre-activations are
    mostly far below -3): the model then fails to load. The scale is raised to input_scale / 120 and the
    zero point moved so the calibrated output range stays covered; only that tensor loses resolution.
    """
    q_ops = (torch.ops.quantized_decomposed.quantize_per_tensor.default,
             torch.ops.quantized_decomposed.dequantize_per_tensor.default)
    changed = 0
    for n in gm.graph.nodes:
        if n.op != "call_function" or "hardswish" not in str(n.target):
            continue
        src = n.args[0]
        if getattr(src, "target", None) is not q_ops[1]:
            continue
        floor = float(src.args[1]) / 120.0
        todo, seen = list(n.users), set()
        while todo:
            u = todo.pop()
            if u in seen:
                continue
            seen.add(u)
            if u.op == "call_function" and any(k in str(u.target) for k in _PASS_THROUGH):
                todo.extend(u.users)
                continue
            if u.target is not q_ops[0] or float(u.args[1]) >= floor:
                continue
            s, zp, qmin, qmax = float(u.args[1]), int(u.args[2]), int(u.args[3]), int(u.args[4])
            lo = (qmin - zp) * s
            new_zp = int(min(max(round(qmin - lo / floor), qmin), qmax))
            for node in (u, *[d for d in u.users if d.target is q_ops[1]]):
                args = list(node.args)
                args[1], args[2] = floor, new_zp
                node.args = tuple(args)
            changed += 1
    if changed:
        gm.recompile()
    return changed


def export_onnx(net: nn.Module, size: int, path: Path, opset: int = 18) -> dict[str, Any]:
    """ONNX with NHWC [0, 1] input and two outputs (logits, embedding), batch dimension dynamic."""
    import onnx

    model = NHWC(DeployModel(net, "both")).eval()
    sample = torch.rand(2, size, size, 3)
    tmp = path.with_name(f".{path.name}.tmp")
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):  # registry and optimizer chatter (torchvision ops absent), not ours
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (sample,), str(tmp), opset_version=opset, input_names=["image"],
                              output_names=["logits", "embedding"], dynamo=True,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
            exporter = "dynamo"
        except Exception as e:  # fall back to the TorchScript exporter
            log.info("dynamo ONNX export failed (%s); using the TorchScript exporter", e)
            torch.onnx.export(model, (sample,), str(tmp), opset_version=opset, input_names=["image"],
                              output_names=["logits", "embedding"], dynamo=False,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}})
            exporter = "torchscript"
    m = onnx.load(str(tmp))
    onnx.checker.check_model(m, full_check=True)
    # a single self-contained file (the dynamo exporter may write external data for large weights)
    onnx.save_model(m, str(tmp), save_as_external_data=False)
    for extra in tmp.parent.glob(f"{tmp.name}.data"):
        extra.unlink()
    os.replace(tmp, path)
    return {"opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), "exporter": exporter,
            "checker": "passed"}


# ---------------------------------------------------------------------------------- parity
def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def _dequant(path: Path, outs: list[np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native():
        d = Interpreter(model_path=str(path)).get_output_details()[0]
    x = np.concatenate(outs).astype(np.float32)
    scale, zero = d["quantization"]
    if d["dtype"] in (np.int8, np.uint8) and scale:
        x = (x - zero) * scale
    return x


def parity_report(net: nn.Module, size: int, work: Path, inputs: ExportInputs, tol: Tolerances) -> dict[str, Any]:
    """Torch vs every artifact on real test images; raises `ParityError` naming what failed."""
    import onnxruntime as ort

    from .mediapipe_tasks import MediaPipeEmbedder

    resized = np.stack([resize_like_mediapipe(im, size) for im in inputs.parity_originals])
    x = to_unit_float(resized)
    with torch.no_grad():
        logits, feats = DeployModel(net, "both")(x)
    logits, feats = logits.numpy(), feats.numpy()
    nhwc = x.permute(0, 2, 3, 1).numpy()
    # float32 rounding grows with a value's size: logits of a cosine head reach its scale (16), so their
    # differences are judged relative to the largest logit (never below 1: small outputs stay absolute)
    rep: dict[str, Any] = {"images": int(len(resized)), "logit_scale": max(1.0, float(np.abs(logits).max()))}
    fp32 = np.concatenate(run_tflite(work / "model_fp32.tflite", [i[None] for i in nhwc]))
    rep["tflite_fp32"] = {"max_abs_diff": float(np.abs(fp32 - logits).max()),
                          "min_cosine": float(_cos(fp32, logits).min()),
                          "top1_agreement": float((fp32.argmax(1) == logits.argmax(1)).mean())}
    emb = np.concatenate(run_tflite(work / "embedder.tflite", [i[None] for i in nhwc]))
    rep["tflite_embedder"] = {"max_abs_diff": float(np.abs(emb - feats).max()),
                              "min_cosine": float(_cos(emb, feats).min())}
    sess = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
    o_logits, o_emb = sess.run(None, {sess.get_inputs()[0].name: nhwc.astype(np.float32)})
    rep["onnx"] = {"max_abs_diff_logits": float(np.abs(o_logits - logits).max()),
                   "max_abs_diff_embedding": float(np.abs(o_emb - feats).max()),
                   "min_cosine_embedding": float(_cos(o_emb, feats).min())}
    mp = MediaPipeEmbedder(work / "embedder.tflite", l2_normalize=False)
    try:
        mp_emb = mp.embed(inputs.parity_originals)
    finally:
        mp.close()
    c = _cos(mp_emb, feats)
    rep["mediapipe_embedder"] = {"min_cosine": float(c.min()), "mean_cosine": float(c.mean()),
                                 "max_abs_diff": float(np.abs(mp_emb - feats).max()),
                                 "note": "MediaPipe decodes nothing here: it gets the original-size image and "
                                         "resizes it itself; torch gets resize_like_mediapipe()"}
    if (work / "model_int8.tflite").exists():
        q = _dequant(work / "model_int8.tflite", run_tflite(work / "model_int8.tflite", [i[None] for i in nhwc]))
        rep["tflite_int8"] = {"top1_agreement": float((q.argmax(1) == logits.argmax(1)).mean()),
                              "mean_cosine_logits": float(_cos(q, logits).mean()),
                              "min_cosine_logits": float(_cos(q, logits).min())}
    rep["tolerances"] = tol.__dict__
    failed, failures = parity_failures(rep, tol)
    rep["passed"] = not failures
    if failures:
        raise ParityError("export refused, parity failed: " + "; ".join(failures), failed)
    return rep


def parity_failures(rep: dict[str, Any], tol: Tolerances) -> tuple[list[str], list[str]]:
    """Which artifacts miss their tolerance (names) and why (sentences a user can act on)."""
    scale = float(rep.get("logit_scale", 1.0))  # tolerances on logits are per unit of the largest logit
    fp32 = rep["tflite_fp32"]["max_abs_diff"] / scale
    onnx = max(rep["onnx"]["max_abs_diff_logits"] / scale, rep["onnx"]["max_abs_diff_embedding"])
    checks = [
        ("tflite_fp32", fp32 > tol.fp32_max_abs,
         f"TFLite fp32 logits differ by {rep['tflite_fp32']['max_abs_diff']:.2e} ({fp32:.2e} of the largest logit, "
         f"{scale:.3g}) > {tol.fp32_max_abs}"),
        ("onnx", onnx > tol.onnx_max_abs,
         f"ONNX differs by {onnx:.2e} (logits per unit of the largest, embedding absolute) > {tol.onnx_max_abs}"),
        ("mediapipe_embedder", rep["mediapipe_embedder"]["min_cosine"] < tol.mediapipe_min_cos,
         f"MediaPipe embedding cosine {rep['mediapipe_embedder']['min_cosine']:.5f} < {tol.mediapipe_min_cos}"),
    ]
    if "tflite_int8" in rep:
        agree = rep["tflite_int8"]["top1_agreement"]
        checks.append(("tflite_int8", agree < tol.int8_min_agreement,
                       f"int8 top-1 agreement {agree:.3f} < {tol.int8_min_agreement} (an undertrained model's "
                       f"near-tied logits flip under quantization: train longer, calibrate on more images, or export "
                       f"with export.int8=false)"))
    bad = [(name, why) for name, failed, why in checks if failed]
    return [n for n, _ in bad], [w for _, w in bad]


def int8_accuracy(net: nn.Module, work: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1 of torch fp32 and TFLite int8 on the test images, and the drop."""
    x = to_unit_float(images)
    with torch.no_grad():
        f = torch.cat([DeployModel(net, "logits")(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()
    nhwc = x.permute(0, 2, 3, 1).numpy()
    q = _dequant(work / "model_int8.tflite", run_tflite(work / "model_int8.tflite", [i[None] for i in nhwc]))
    a_f = float((f.argmax(1) == labels).mean())
    a_q = float((q.argmax(1) == labels).mean())
    return {"test_images": int(len(labels)), "top1_fp32": a_f, "top1_int8": a_q, "top1_drop": a_f - a_q,
            "top1_agreement": float((f.argmax(1) == q.argmax(1)).mean()),
            "mean_cosine_logits": float(_cos(q, f).mean())}


# ---------------------------------------------------------------------------------- the bundle
def file_entry(path: Path) -> dict[str, Any]:
    from hashlib import sha256

    return {"sha256": sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}


def build_bundle(net: nn.Module, arch: ArchSpec, inputs: ExportInputs, out_dir: str | os.PathLike, *,
                 int8: bool = True, opset: int = 18, tol: Tolerances | None = None,
                 extra_manifest: Callable[[Path], dict[str, Any]] | None = None,
                 versions: dict[str, str] | None = None,
                 on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert, verify and atomically place a bundle; returns the manifest.

    `extra_manifest(work_dir)` may add figures measured on the finished files (latency) before the
    manifest is written and the folder is renamed into place. `on_step(label)` is called as each step
    starts (`BUNDLE_STEPS`, then "extra"): a progress bar's hook.
    """
    tol = tol or Tolerances()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        net = net.eval()
        size = arch.resolution
        spec = ImageInputSpec(size, size, 0.0, 255.0)
        name = arch.name or "spnas-model"

        def step(label: str, fn: Callable[[], Any]) -> Any:
            if on_step is not None:
                on_step(label)
            ts = time.perf_counter()
            r = fn()
            timings[label] = time.perf_counter() - ts
            return r

        step("tflite_fp32", lambda: _tflite_with_metadata(net, arch, spec, inputs, work, embedder=False))
        emb_info = step("tflite_embedder", lambda: _tflite_with_metadata(net, arch, spec, inputs, work, embedder=True))
        int8_info: dict[str, Any] = {}
        if int8:
            int8_info = step("tflite_int8", lambda: export_int8(net, size, inputs.calibration, work / "model_int8.tflite"))
        onnx_info = step("onnx", lambda: export_onnx(net, size, work / "model.onnx", opset))
        (work / "embedder_graph.pbtxt").write_text(embedder_graph(spec, "embedder.tflite"))
        arch.save(work / "arch.json")
        torch.save(net.state_dict(), work / "weights.pt")  # the PyTorch embedder of the retrieval stage
        ops = {f: dict(op_histogram(work / f)) for f in ("model_fp32.tflite", "embedder.tflite", "model_int8.tflite")
               if (work / f).exists()}
        parity = step("parity", lambda: parity_report(net, size, work, inputs, tol))
        if int8:
            int8_info.update(step("int8_eval", lambda: int8_accuracy(net, work, inputs.eval_images, inputs.eval_labels)))
            h = ops["model_int8.tflite"]
            int8_info["float_islands"] = {"QUANTIZE": h.get("QUANTIZE", 0), "DEQUANTIZE": h.get("DEQUANTIZE", 0)}
        manifest = _manifest(name, arch, spec, inputs, parity, int8_info, emb_info, onnx_info, ops, timings, versions)
        if extra_manifest:
            if on_step is not None:
                on_step("extra")
            manifest.update(extra_manifest(work))
        manifest["files"] = {p.name: file_entry(p) for p in sorted(work.iterdir()) if p.is_file()}
        manifest["export_seconds"]["total"] = time.perf_counter() - t0
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json) + "\n")
        os.chmod(work, 0o755)
        replace_dir(work, out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _tflite_with_metadata(net: nn.Module, arch: ArchSpec, spec: ImageInputSpec, inputs: ExportInputs, work: Path,
                          embedder: bool) -> dict[str, Any] | None:
    """`model_fp32.tflite` (logits, with the labels) or `embedder.tflite` (the unit embedding), converted and
    given the TFLite metadata MediaPipe reads (input normalisation, output names); returns the embedding's
    description for the embedder."""
    name = arch.name or "spnas-model"
    raw = work / ("emb_raw.tflite" if embedder else "fp32_raw.tflite")
    export_fp32(net, spec.height, raw, "features" if embedder else "logits")
    if embedder:
        emb_info = embedding_info(net)
        what = ("L2-normalised projection of the pooled features" if emb_info["head"] == "projection"
                else "L2-normalised pooled features")
        info = ModelInfo(name, f"{name} image embedder ({emb_info['dim']}-d, {what})", output_name="embedding",
                         output_description=f"unit-length embedding: {what}")
    else:
        emb_info = None
        info = ModelInfo(name, f"{name} classifier ({arch.to_string()})", labels=inputs.labels, output_name="logits",
                         output_description="class logits")
    meta, files = build_metadata(spec, info, classifier=not embedder)
    out = work / ("embedder.tflite" if embedder else "model_fp32.tflite")
    out.write_bytes(attach_metadata(raw.read_bytes(), meta, files))
    raw.unlink()
    return emb_info


def _manifest(name: str, arch: ArchSpec, spec: ImageInputSpec, inputs: ExportInputs, parity: dict[str, Any],
              int8_info: dict[str, Any], emb_info: dict[str, Any] | None, onnx_info: dict[str, Any],
              ops: dict[str, Any], timings: dict[str, float], versions: dict[str, str] | None) -> dict[str, Any]:
    """`manifest.json` before the file list: what each artifact is, its input contract, parity and versions."""
    size = arch.resolution
    return {
        "format": BUNDLE_FORMAT, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "arch": arch.to_dict(), "arch_string": arch.to_string(),
        "input": {"layout": "NHWC", "dtype": "float32", "range": [0.0, 1.0], "size": [size, size],
                  "color": "RGB", "resize": "stretch (MediaPipe ImageToTensor, corners to corners, bilinear)",
                  "mediapipe_normalization": {"mean": spec.mean, "std": spec.std},
                  "per_channel_normalization": "folded into the model"},
        "outputs": {"model_fp32.tflite": "logits", "model_int8.tflite": "logits (int8, dequantize with the "
                    "output quantization)", "embedder.tflite": "embedding", "model.onnx": ["logits", "embedding"]},
        "labels": inputs.labels, "data": inputs.data_info, "parity": parity, "int8": int8_info,
        "embedding": emb_info, "onnx": onnx_info, "ops": ops,
        "transpose_ops": {f: h.get("TRANSPOSE", 0) for f, h in ops.items()}, "export_seconds": timings,
        "versions": versions or {},
    }


def _json(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def load_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    """A bundle's manifest, checked for format; clear error when the folder is not a bundle."""
    p = Path(bundle) / "manifest.json"
    if not p.is_file():
        raise InputNotFoundError(f"{bundle} is not a model bundle (no manifest.json); create one with spnas-export")
    m = json.loads(p.read_text())
    if m.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{p}: unsupported bundle format {m.get('format')!r} (expected {BUNDLE_FORMAT})")
    return m


# The files that define a bundle's embedding space: every embedder backend reads one of them.
EMBEDDING_FILES = ("arch.json", "embedder.tflite", "model.onnx", "weights.pt")


def bundle_id(bundle: str | os.PathLike) -> str:
    """The identity of a bundle's embedding space, computed from the files themselves (indexes are keyed
    by it): sha256 over the name and content hash of each embedding file. Each file is checked against
    the manifest first, so a bundle edited or truncated after export is refused (`InputError`)."""
    from hashlib import sha256

    m = load_manifest(bundle)
    names = [n for n in EMBEDDING_FILES if n in m.get("files", {})]
    if "embedder.tflite" not in names:
        raise InputError(f"bundle {bundle}: the manifest lists no embedder.tflite; re-export it with spnas-export")
    digests = verify_files(bundle, names)
    h = sha256(b"spnas.bundle-id/2\n")
    for n in names:
        h.update(f"{n}\0{digests[n]}\n".encode())
    return h.hexdigest()


def load_torch_model(bundle: str | os.PathLike) -> nn.Module:
    """The bundle's network in PyTorch (arch.json + weights.pt), eval mode."""
    from search_spaces import build_for_weights

    b = Path(bundle)
    verify_files(b, ("arch.json", "weights.pt"))
    arch = ArchSpec.load(b / "arch.json")
    net = build_for_weights(arch, load_manifest(b).get("embedding"))
    try:
        net.load_state_dict(torch.load(b / "weights.pt", map_location="cpu", weights_only=True))
    except Exception as e:
        raise InputError(f"bundle {bundle}: weights.pt does not load into arch.json's network ({e})") from None
    return net.eval()


def verify_files(bundle: str | os.PathLike, names: Sequence[str] = FILES) -> dict[str, str]:
    """Check files against the manifest's sha256 (a bundle edited or truncated after export); returns
    each file's sha256 as computed from its bytes."""
    from spnas_core.files import sha256_file

    m = load_manifest(bundle)
    out = {}
    for n in names:
        p = Path(bundle) / n
        want = m.get("files", {}).get(n, {}).get("sha256")
        got = sha256_file(p) if p.is_file() else None
        if want is None or got != want:
            raise InputError(f"bundle {bundle}: {n} is missing or does not match the manifest's sha256 (the bundle "
                             f"was changed after export); export it again with spnas-export")
        out[n] = got
    return out
