"""Export: TFLite fp32/int8, ONNX, MediaPipe embedder + graph, manifest; parity on real images."""

import random
from hashlib import sha256

import numpy as np
import pytest

from export.bundle import ParityError, load_manifest, verify_files
from export.mediapipe_graph import parse_pbtxt
from export.metadata import read_metadata
from export.tflite import op_histogram

from ..conftest import compose, fmnist_args


def test_bundle_files_manifest_and_versions(small_bundle):
    m = load_manifest(small_bundle)
    for f in ("model_fp32.tflite", "model_int8.tflite", "model.onnx", "embedder.tflite", "embedder_graph.pbtxt",
              "arch.json", "weights.pt"):
        p = small_bundle / f
        assert p.is_file(), f
        assert m["files"][f]["sha256"] == sha256(p.read_bytes()).hexdigest()
        assert m["files"][f]["bytes"] == p.stat().st_size
    for pkg in ("torch", "litert-torch", "ai-edge-litert", "mediapipe", "onnx", "onnxruntime"):
        assert m["versions"].get(pkg), pkg
    verify_files(small_bundle)
    assert m["onnx"]["opset"] >= 17 and m["onnx"]["checker"] == "passed"


def test_no_transpose_ops(small_bundle):
    for f in ("model_fp32.tflite", "embedder.tflite", "model_int8.tflite"):
        hist = op_histogram(small_bundle / f)
        assert hist.get("TRANSPOSE", 0) == 0, (f, hist)
        assert load_manifest(small_bundle)["transpose_ops"][f] == 0


def test_parity_figures(small_bundle):
    p = load_manifest(small_bundle)["parity"]
    assert p["images"] >= 32
    assert p["tflite_fp32"]["max_abs_diff"] <= 1e-4
    assert p["onnx"]["max_abs_diff_logits"] <= 1e-4
    assert p["mediapipe_embedder"]["min_cosine"] >= 0.999
    assert p["tflite_int8"]["top1_agreement"] >= p["tolerances"]["int8_min_agreement"] == 0.9
    i8 = load_manifest(small_bundle)["int8"]
    assert {"top1_fp32", "top1_int8", "top1_drop", "calibration_images"} <= set(i8)


def test_latency_in_manifest(small_bundle):
    lat = load_manifest(small_bundle)["latency"]
    assert lat["cpu"]["model_fp32.tflite"]["1_thread"]["p10_ms"] > 0
    assert lat["mediapipe_embedder_end_to_end"]["median_ms"] > 0
    assert lat["onnxruntime_1_thread"]["median_ms"] > 0
    assert lat["deploy_resolution"]["resolution"] == 64
    preds = lat["table_predictions"]
    assert {"sd845", "sd670", "sd808", "sd801"} <= set(preds)


def test_mediapipe_tasks_load_with_default_options(small_bundle, cifar_root):
    from export.mediapipe_tasks import MediaPipeEmbedder, classify
    from spnas_core.images import decode_rgb

    imgs = [decode_rgb(p) for p in sorted((cifar_root / "test" / "ship").glob("*.jpg"))[:4]]
    emb = MediaPipeEmbedder(small_bundle / "embedder.tflite")  # default options
    v = emb.embed(imgs)
    emb.close()
    assert v.shape == (4, 1024) and np.isfinite(v).all()
    labels = load_manifest(small_bundle)["labels"]
    top = classify(small_bundle / "model_fp32.tflite", imgs)
    assert all(t[0][0] in labels for t in top)
    meta = read_metadata(small_bundle / "model_fp32.tflite")
    assert meta["labels"] == labels and meta["mean"] == [0.0] and meta["std"] == [255.0]


def test_graph_pbtxt_matches_metadata(small_bundle):
    g = parse_pbtxt((small_bundle / "embedder_graph.pbtxt").read_text())
    nodes = {n["calculator"]: n for n in g["node"]}
    opts = nodes["ImageToTensorCalculator"]["options"]["[mediapipe.ImageToTensorCalculatorOptions.ext]"]
    size = load_manifest(small_bundle)["input"]["size"]
    assert (opts["output_tensor_height"], opts["output_tensor_width"]) == tuple(size)
    assert opts["keep_aspect_ratio"] is False
    meta = read_metadata(small_bundle / "embedder.tflite")
    lo, hi = (0 - meta["mean"][0]) / meta["std"][0], (255 - meta["mean"][0]) / meta["std"][0]
    assert opts["output_tensor_float_range"] == {"min": pytest.approx(lo), "max": pytest.approx(hi)}
    inf = nodes["InferenceCalculator"]["options"]["[mediapipe.InferenceCalculatorOptions.ext]"]
    assert inf["model_path"] == "embedder.tflite"
    assert g["input_stream"] == "IMAGE:image" and "TensorsToEmbeddingsCalculator" in nodes


def test_sampled_space_arch_exports(fashion_mnist_root, tmp_path):
    """A sampled architecture of the search space exports with the same guarantees."""
    from search_spaces import default_space
    from spnas.app.jobs import commands

    from ..conftest import _train_small

    arch = default_space().sample(random.Random(11), resolution=32, num_classes=10)
    arch.save(tmp_path / "arch.json")
    # parity and layout need a trained net, not a good one: one epoch of 1000 images
    data = fmnist_args(fashion_mnist_root, tmp_path, train_limit=1000)
    ckpt = _train_small(tmp_path, data, str(tmp_path / "arch.json"), "sampled", epochs=1, extra=("train.min_steps=0",))
    cfg = compose("export", [f"checkpoint={ckpt}", *data, f"out_dir={tmp_path / 'b'}",
                             "export.measure_latency=false", "export.int8=disabled"])  # int8: small_bundle
    m = commands.export(cfg)
    assert m["parity"]["tflite_fp32"]["max_abs_diff"] <= 1e-4
    assert m["parity"]["mediapipe_embedder"]["min_cosine"] >= 0.999
    assert all(v == 0 for v in m["transpose_ops"].values())


def test_corrupt_checkpoint_and_mismatched_arch(small_model, fashion_mnist_root, tmp_path):
    from spnas.app.jobs import commands

    base = [*fmnist_args(fashion_mnist_root, tmp_path), "export.measure_latency=false"]
    bad = tmp_path / "model.pt"
    bad.write_bytes(small_model.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        commands.export(compose("export", base + [f"checkpoint={bad}", f"out_dir={tmp_path / 'x'}"]))
    with pytest.raises(ValueError, match="mobilenet_v2"):
        commands.export(compose("export", base + [f"checkpoint={small_model}", "arch=mobilenet_v2",
                                             f"out_dir={tmp_path / 'y'}"]))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_pbtxt_parser_handles_nesting_and_repeats():
    g = parse_pbtxt('a: 1\nnode { x: "s" y { z: 2.5 } }\nnode { x: "t" }  # c\nflag: true\nmode: BORDER_ZERO\n')
    assert g["a"] == 1 and g["flag"] is True and g["mode"] == "BORDER_ZERO"
    assert [n["x"] for n in g["node"]] == ["s", "t"] and g["node"][0]["y"]["z"] == 2.5
    with pytest.raises(ValueError):
        parse_pbtxt("a { b: 1")


def test_int8_hardswish_with_dead_outputs_still_loads(tmp_path, monkeypatch):
    """A head whose pre-activations all sit far below -3 calibrates HARD_SWISH's output scale to ~0, which
    LiteRT refuses (output_scale must exceed input_scale / 128); the exporter widens that scale instead."""
    import torch

    import export.bundle as bundle
    from export.tflite import run_tflite
    from search_spaces import build_model, mobilenet_v3_small

    torch.manual_seed(0)
    net = build_model(mobilenet_v3_small(resolution=32, num_classes=10)).eval()
    head = dict(net.named_modules())["layers.14.0"]
    with torch.no_grad():
        head.bias.fill_(-150.0)  # every hidden unit dead: h-swish outputs exactly 0 on every image
    cal = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)

    info = bundle.export_int8(net, 32, cal, tmp_path / "ok.tflite")
    assert info["hardswish_output_scales_widened"] >= 1
    out = run_tflite(tmp_path / "ok.tflite", [cal[:1].astype(np.float32) / 255.0])[0]
    assert np.isfinite(out.astype(np.float32)).all()

    monkeypatch.setattr(bundle, "widen_hardswish_output_scales", lambda gm: 0)
    with pytest.raises(ParityError, match="does not run in LiteRT") as e:
        bundle.export_int8(net, 32, cal, tmp_path / "refused.tflite")
    assert e.value.failed == ["tflite_int8"]
    assert not list(tmp_path.glob("*refused*")), "a model that cannot load must not be left behind"
