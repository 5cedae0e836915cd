"""The declared interfaces of retrieval's extension points (nn-Meter's `backends/interface.py` idea):
what an implementation must do, in one place, importing nothing heavy (no torch, no FAISS), so the
index builds and the gateway can name them without loading a model.

- `Embedder`: images in, unit vectors out. Implementations: the four bundle backends of
  `retrieval.embedders` (one per `retrieval.config.Backend`: `MediaPipeImageEmbedder`,
  `LiteRTEmbedder`, `OnnxEmbedder`, `TorchEmbedder`, built by `make_embedder`) and the pipeline's
  `spnas.app.jobs.retrieval_eval.CheckpointEmbedder`.
- `Resolver`: where the index services are. Implementations: `retrieval.resolver.DirectoryResolver`,
  `StaticResolver`, `retrieval.k8s.resolver.KubernetesResolver`, or a user's class (`make_resolver`).
- `IndexFamily`: which FAISS index a version of n listings gets. Implementations, tried in this order
  (`retrieval.factory.FAMILIES`): `FlatFamily`, `HnswFamily`, `IvfPqDiskFamily`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from retrieval.config import FactoryConfig


@runtime_checkable
class Embedder(Protocol):
    """Images in, L2-normalised float32 vectors out, from one model.

    Contract:
    - `embed(images)` takes RGB uint8 arrays (H x W x 3, any size: the embedder resizes, the way
      MediaPipe's ImageEmbedder does on a phone) and returns a float32 array [len(images), dim] of unit
      rows in the order given; an empty list gives a [0, dim] array. `progress` shows a bar (None: for
      large batches only).
    - `dim` is the vector size, fixed for the embedder's life.
    - `bundle_sha256` names the model's weights: vectors of two embedders are comparable, and the index
      builds' embedding cache shares them, only when it is the same.
    - `name` says which backend made the vectors (for logs and results).
    - No thread safety is promised: one embedder per thread.
    """

    dim: int
    bundle_sha256: str
    name: str

    def embed(self, images: Sequence[np.ndarray], progress: bool | None = None) -> np.ndarray: ...


@runtime_checkable
class Resolver(Protocol):
    """Where the index services are: the gateway's only source of addresses.

    Contract:
    - `addresses()` returns `host:port` of every index service that may be serving now; the gateway
      checks each one's health and asks it what it serves, so a resolver knows nothing of versions and
      may list a service that is gone (it is skipped).
    - It is called on every refresh of every gateway worker (each `delta.refresh_s`), from one thread;
      a resolver whose listing is costly caches it. It raises only when it cannot list at all.
    - A user's resolver (`resolver=<module>:<Class>`) is built without arguments.
    """

    def addresses(self) -> list[str]:
        """host:port of every index service that may be serving now."""
        ...


@runtime_checkable
class IndexFamily(Protocol):
    """A family of FAISS indexes a version may be built as, chosen by the version's size.

    Contract:
    - `fits(n, cfg)` says whether a version of `n` listings takes this family under `cfg`
      (`retrieval.config.FactoryConfig`); the families are tried in order and the first that fits
      wins, so the last one fits every size.
    - `factory(n, d, cfg)` is the FAISS `index_factory` string for `n` vectors of dimension `d`, metric
      inner product; a family whose exact vectors stay on disk ends it with spnas's `,RDisk` suffix
      (`retrieval.factory.RDISK`), which `build_index` strips and `write_vectors` honours.
    - `name` names the family in logs and documentation.
    The string, not the family, is what a version records (`manifest.json`'s `factory`), so a user's own
    factory string (`retrieval-eval factory=...`) needs no family.
    """

    name: str

    def fits(self, n: int, cfg: "FactoryConfig") -> bool: ...

    def factory(self, n: int, d: int, cfg: "FactoryConfig") -> str: ...
