"""Embedders: images in, L2-normalised float32 vectors out, from a model bundle.

Four backends behind one interface (`retrieval.interface.Embedder`), one per `retrieval.config.Backend`:
MediaPipe ImageEmbedder (`embedder.tflite`), the LiteRT interpreter, ONNX Runtime (`model.onnx`) and PyTorch. Every backend
but MediaPipe resizes with `spnas_core.images.resize_like_mediapipe`, the warp MediaPipe applies
itself, so a query embedded on a phone and a gallery embedded on a server land in the same space.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from export.bundle import bundle_id, load_manifest
from spnas_core.errors import ConfigError
from spnas_core.images import resize_like_mediapipe, to_rgb_array
from spnas_core.native import quiet_native

from .config import Backend
from .interface import Embedder

# The backends' names, from the one list of them (`retrieval.config.Backend`).
BACKENDS = tuple(b.name for b in Backend)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _batches(images: Sequence[np.ndarray], size: int, progress: bool | None, desc: str) -> Iterator[Sequence[np.ndarray]]:
    show = progress if progress is not None else len(images) >= 512
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc=desc, unit="img", dynamic_ncols=True)
    for i in range(0, len(images), size):
        chunk = images[i:i + size]
        yield chunk
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()


class _BundleEmbedder(Embedder):
    """What the bundle backends share: the manifest, the embedding size, MediaPipe's resize."""

    name = "base"
    batch_size = 64

    def __init__(self, bundle: str | os.PathLike) -> None:
        self.bundle = Path(bundle)
        self.manifest = load_manifest(self.bundle)
        self.bundle_sha256 = bundle_id(self.bundle)  # verifies every embedding file against the manifest's sha256
        self.size = int(self.manifest["input"]["size"][0])
        self.dim = _feature_dim(self.manifest)

    def _prep(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Resize like MediaPipe, scale to [0, 1]: the bundle's NHWC float input."""
        return np.stack([resize_like_mediapipe(to_rgb_array(im), self.size)
                         for im in images]).astype(np.float32) / 255.0

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, images: Sequence[np.ndarray], progress: bool | None = None) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self._run(self._prep(chunk)) for chunk in _batches(images, self.batch_size, progress, self.name)]
        return l2_normalize(np.concatenate(out))


def _feature_dim(manifest: dict) -> int:
    """The embedding size of a bundle (its projection, or the pooled features of a plain classifier)."""
    if manifest.get("embedding", {}).get("dim"):
        return int(manifest["embedding"]["dim"])
    from search_spaces import ArchSpec

    return ArchSpec.from_dict(manifest["arch"]).feature_dim


class LiteRTEmbedder(_BundleEmbedder):
    """The LiteRT interpreter on `embedder.tflite`, batched by resizing the input tensor."""

    name = "litert"

    def __init__(self, bundle: str | os.PathLike, threads: int = 1) -> None:
        super().__init__(bundle)
        from ai_edge_litert.interpreter import Interpreter

        with quiet_native():  # TFLite's "Created ... XNNPACK delegate" line, once per embedder
            self.it = Interpreter(model_path=str(self.bundle / "embedder.tflite"), num_threads=threads)
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = self.it.get_output_details()[0]["index"]
        self._batch = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            with quiet_native():  # the XNNPACK delegate is applied (and announced) when tensors are allocated
                self.it.resize_tensor_input(self.inp, list(x.shape))
                self.it.allocate_tensors()
            self._batch = len(x)
        self.it.set_tensor(self.inp, x)
        self.it.invoke()
        return self.it.get_tensor(self.out).reshape(len(x), -1).copy()


class OnnxEmbedder(_BundleEmbedder):
    """ONNX Runtime on `model.onnx` (the server-side extractor; 'embedding' output)."""

    name = "onnx"

    def __init__(self, bundle: str | os.PathLike, threads: int = 0) -> None:
        super().__init__(bundle)
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(self.bundle / "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(["embedding"], {self.input: x})[0]


class TorchEmbedder(_BundleEmbedder):
    """PyTorch on the bundle's weights (`weights.pt` + `arch.json`)."""

    name = "torch"

    def __init__(self, bundle: str | os.PathLike) -> None:
        super().__init__(bundle)
        import torch

        from export.bundle import load_torch_model
        from export.deploy import DeployModel

        self.torch = torch
        self.model = DeployModel(load_torch_model(self.bundle), "features").eval()

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


class MediaPipeImageEmbedder(_BundleEmbedder):
    """MediaPipe Tasks ImageEmbedder with default options: gets the original image, resizes it itself."""

    name = "mediapipe"

    def __init__(self, bundle: str | os.PathLike) -> None:
        super().__init__(bundle)
        from export.mediapipe_tasks import MediaPipeEmbedder

        self.task = MediaPipeEmbedder(self.bundle / "embedder.tflite")  # default options: the model normalises

    def embed(self, images: Sequence[np.ndarray], progress: bool | None = None) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self.task.embed([to_rgb_array(i) for i in chunk]) for chunk in _batches(images, 64, progress, self.name)]
        return l2_normalize(np.concatenate(out))


# Each backend's embedder, by its `Backend` (bundle folder, threads) -> Embedder.
IMPLEMENTATIONS: dict[Backend, Callable[[str | os.PathLike, int], Embedder]] = {
    Backend.mediapipe: lambda bundle, threads: MediaPipeImageEmbedder(bundle),
    Backend.litert: lambda bundle, threads: LiteRTEmbedder(bundle, threads),
    Backend.onnx: lambda bundle, threads: OnnxEmbedder(bundle, threads),
    Backend.torch: lambda bundle, threads: TorchEmbedder(bundle),
}


def make_embedder(backend: str | Backend, bundle: str | os.PathLike, threads: int = 1) -> Embedder:
    """An embedder by backend (a `Backend` or its name: mediapipe | litert | onnx | torch)."""
    name = backend.name if isinstance(backend, Backend) else backend
    if name not in Backend.__members__:
        raise ConfigError(f"unknown embedder backend '{backend}' (known: {', '.join(BACKENDS)})")
    return IMPLEMENTATIONS[Backend[name]](bundle, threads)
