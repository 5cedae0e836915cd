"""Running exported models through MediaPipe Tasks (ImageEmbedder, ImageClassifier) from Python."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from spnas_core.native import quiet_native


def _mp_image(img: np.ndarray):
    """Pixels as MediaPipe's SRGB image, after the project's one decoding path (`spnas_core.images.to_rgb_array`):
    grey, alpha, 16-bit or float arrays are converted exactly as for every other backend."""
    import mediapipe as mp

    from spnas_core.images import to_rgb_array

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=to_rgb_array(img))


class MediaPipeEmbedder:
    """`mediapipe.tasks.python.vision.ImageEmbedder` on an embedder .tflite, default options."""

    def __init__(self, model_path: str | os.PathLike, l2_normalize: bool | None = None) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        opts = vision.ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                           l2_normalize=l2_normalize)
        with quiet_native():
            self.task = vision.ImageEmbedder.create_from_options(opts)

    def embed_one(self, img: np.ndarray) -> np.ndarray:
        """One RGB uint8 image (any size: MediaPipe stretches it) -> float32 embedding."""
        r = self.task.embed(_mp_image(img))
        return np.asarray(r.embeddings[0].embedding, dtype=np.float32)

    def embed(self, images: Iterable[np.ndarray]) -> np.ndarray:
        return np.stack([self.embed_one(i) for i in images])

    def close(self) -> None:
        self.task.close()


def classify(model_path: str | os.PathLike, images: Sequence[np.ndarray], max_results: int = 3
             ) -> list[list[tuple[str, float]]]:
    """ImageClassifier with default options: top categories (label, score) per image."""
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                         max_results=max_results)
    with quiet_native():
        task = vision.ImageClassifier.create_from_options(opts)
    with task:
        out = []
        for img in images:
            cats = task.classify(_mp_image(img)).classifications[0].categories
            out.append([(c.category_name, float(c.score)) for c in cats])
    return out
