"""Training configs (Hydra groups `data/`, `train/`, the `finetune` and `dist` nodes, devices and mixed
precision), beside the loaders, loops and optimizers that read them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from spnas_core.config import check_range, opt
from spnas_core.errors import ConfigError


class OptimizerKind(enum.Enum):
    sgd = "SGD with (Nesterov) momentum"
    rmsprop = "RMSProp with TF-style settings (MobileNet / SPNAS)"
    adam = "Adam"


class DataKind(enum.Enum):
    folder = "root/<class>/<image> or root/{train,val,test}/<class>/<image>"
    cifar10 = "the CIFAR-10 JPEG tree (train/ and test/ class folders)"
    grocery = "Grocery Store lists (train.txt / val.txt / test.txt) + iconic catalogue gallery"
    fashion_mnist = "the four Fashion-MNIST IDX .gz files"


class LabelLevel(enum.Enum):
    fine = "81 products"
    coarse = "product types"


class InitKind(enum.Enum):
    scratch = "random initialisation"
    inherit = "start from the search's superkernel weights (needs supernet=...)"


class EmbeddingLoss(enum.Enum):
    """The retrieval loss of the fine-tuning stage (on unit embeddings and unit class weights)."""

    cosface = "normalised softmax with an additive cosine margin (CosFace): s * (cos - m) for the true class"
    normsoftmax = "normalised softmax (temperature 1/s), no margin"


class SmallClasses(enum.Enum):
    """What a folder's class with too few photos for the splits gets (data=folder)."""

    refuse = "stop with an error naming the class and how many photos the splits need"
    exclude = "leave the class out, with a warning line naming it"


class DataLoaderKind(enum.Enum):
    """How training and evaluation read a data set."""

    memory = "decode every split once into RAM (cached on disk); fastest for sets that fit"
    stream = "decode from the files on the fly in DataLoader worker processes (sets that do not fit in RAM)"


class TransformKind(enum.Enum):
    """Image preprocessing of the data loaders."""

    stretch = "the whole image resized to data.resolution as MediaPipe resizes (what the in-RAM path stores)"
    imagenet = ("train: random-resized crop + flip; eval: resize to resolution/0.875 and centre crop "
                "(needs data.loader=stream)")


class AmpMode(enum.Enum):
    """Automatic mixed precision of training and search steps."""

    auto = "on CUDA: bf16 where the GPU supports it, else fp16 with a grad scaler; off on CPU"
    off = "float32 throughout"
    bf16 = "bfloat16 autocast (CUDA or CPU), no grad scaler"
    fp16 = "float16 autocast with a dynamic grad scaler (CUDA only)"


class DistBackend(enum.Enum):
    """torch.distributed backend under torchrun."""

    auto = "nccl on CUDA, gloo on CPU"
    gloo = "gloo (CPU tensors; works everywhere)"
    nccl = "nccl (CUDA only)"


@dataclass
class DataConfig:
    """A data set (config group `data/`: cifar10, grocery, fashion_mnist, folder)."""

    name: str = opt("folder", "name shown in summaries and reports")
    kind: DataKind = opt(DataKind.folder, "source format")
    root: str = opt(MISSING, "data set folder (data=folder: your photos in class folders)")
    resolution: int = opt(32, "square size images are decoded to (resized as MediaPipe resizes)")
    val_fraction: float = opt(0.1, "share of train held out for validation when there is no val split")
    test_fraction: float = opt(0.2, "data=folder without split folders: share of each class used as test")
    test_root: Optional[str] = opt(None, "data=folder: a folder of the same classes (<class>/<image>) from another "
                                         "shoot, used as the test split: a held-out shoot (a random split of one "
                                         "folder tests on shots of the same scenes, which flatters)")
    small_classes: SmallClasses = opt(SmallClasses.refuse, "data=folder: a class with too few photos for the "
                                                           "splits is refused, or left out (exclude) with a warning")
    label_level: LabelLevel = opt(LabelLevel.fine, "grocery: fine (81 products) or coarse labels")
    train_limit: Optional[int] = opt(None, "use at most this many train images (class-balanced)")
    val_limit: Optional[int] = opt(None, "use at most this many val images (class-balanced; where val is carved "
                                          "out of train, the rest of the carved share stays out of train)")
    test_limit: Optional[int] = opt(None, "use at most this many test images")
    cache_dir: Optional[str] = opt(None, "decoded-data cache (default <SPNAS_HOME>/cache/data)")
    loader: DataLoaderKind = opt(DataLoaderKind.memory, "memory | stream")
    transform: TransformKind = opt(TransformKind.stretch, "stretch | imagenet")
    workers: int = opt(4, "data.loader=stream: DataLoader worker processes per rank (0: decode in the main process)")
    min_crop_scale: float = opt(0.08, "transform=imagenet: smallest area fraction of a random-resized crop")

    @classmethod
    def from_plain(cls, d: dict) -> "DataConfig":
        """A data config from its plain form (`spnas_core.config.to_plain`: enums by name), e.g. as a bundle's
        manifest records the photos it was evaluated on; keys this version does not know are ignored."""
        from dataclasses import fields

        out = {}
        for f in fields(cls):
            if f.name in d:
                default = getattr(cls, f.name, None) if not callable(getattr(cls, f.name, None)) else None
                enum_type = type(default) if isinstance(default, enum.Enum) else None
                out[f.name] = enum_type[d[f.name]] if enum_type is not None and d[f.name] is not None else d[f.name]
        return cls(**out)

    def __post_init__(self) -> None:
        check_range("data.resolution", self.resolution, 8, 4096)
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.9)
        check_range("data.test_fraction", self.test_fraction, 0.0, 0.9)
        for k in ("train_limit", "val_limit", "test_limit"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"data.{k}={v}: must be >= 1 (or null for no limit)")
        check_range("data.workers", self.workers, 0, 256)
        check_range("data.min_crop_scale", self.min_crop_scale, 0.01, 1.0)
        if self.loader is DataLoaderKind.stream and self.kind is DataKind.fashion_mnist:
            raise ConfigError("data.loader=stream reads image files; fashion_mnist is four IDX archives: use "
                              "data.loader=memory")
        if self.transform is TransformKind.imagenet and self.loader is not DataLoaderKind.stream:
            raise ConfigError("data.transform=imagenet crops the source photos, which the in-RAM cache does not "
                              "keep: add data.loader=stream")


@dataclass
class AugmentConfig:
    crop_padding: int = opt(4, "random crop after zero padding by this many pixels (0: off)")
    hflip: bool = opt(True, "random horizontal flip")


@dataclass
class OptimizerConfig:
    """An optimizer and its settings."""

    optimizer: OptimizerKind = opt(OptimizerKind.sgd, "sgd | rmsprop | adam")
    lr: float = opt(0.05, "base learning rate")
    momentum: float = opt(0.9, "momentum (sgd, rmsprop)")
    nesterov: bool = opt(True, "Nesterov momentum (sgd)")
    weight_decay: float = opt(4.0e-5, "L2 on conv / linear weights (not BN, biases)")
    rmsprop_alpha: float = opt(0.9, "rmsprop smoothing constant")
    rmsprop_eps: float = opt(1.0e-3, "rmsprop epsilon (TF-style)")

    def __post_init__(self) -> None:
        if self.lr < 0:
            raise ConfigError(f"lr={self.lr}: must be >= 0")


@dataclass
class TrainConfig(OptimizerConfig):
    """The training recipe for fixed architectures (config group `train/`)."""

    epochs: int = opt(2, "training epochs")
    batch_size: int = opt(128, "images per step in all (global: split across DDP ranks; lr is for this batch)")
    lr: float = opt(0.1, "base learning rate (linear warm-up, then cosine decay)")
    warmup_epochs: float = opt(0.2, "linear learning-rate warm-up, in epochs")
    label_smoothing: float = opt(0.1, "cross-entropy label smoothing")
    ema_decay: float = opt(0.0, "evaluate an exponential moving average of the weights (e.g. 0.999; 0: off)")
    dropout: float = opt(0.2, "dropout before the classifier")
    grad_clip: Optional[float] = opt(None, "clip the gradient norm to this value")
    eval_batch_size: int = opt(500, "batch size for validation and test")
    max_steps_per_epoch: Optional[int] = opt(None, "cap steps per epoch (tests, quick looks)")
    steps: Optional[int] = opt(None, "optimisation steps in all: the data size sets how many epochs that is "
                                     "(null: train.epochs epochs)")
    min_steps: int = opt(120, "the fewest optimisation steps a run takes, whatever the data size (a small set gets "
                              "more epochs); below 120 a run warns that it may not learn")
    min_batches_per_epoch: int = opt(8, "a small set gets a smaller batch (not below min_batch_size) so an epoch has "
                                        "this many steps; the learning rate scales with it (linear rule)")
    min_batch_size: int = opt(16, "smallest batch the small-set adaptation may choose")
    channels_last: bool = opt(True, "NHWC memory format: 2-3x faster depthwise convs on CPU")
    augment: AugmentConfig = opt(factory=AugmentConfig, help="train-time augmentation")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("train.epochs", self.epochs, 0, 100_000)
        check_range("train.batch_size", self.batch_size, 1, 1 << 16)
        if self.steps is not None:
            check_range("train.steps", self.steps, 0, 100_000_000)
        check_range("train.min_steps", self.min_steps, 0, 100_000_000)
        check_range("train.min_batch_size", self.min_batch_size, 1, 1 << 16)
        check_range("train.min_batches_per_epoch", self.min_batches_per_epoch, 1, 1 << 20)


def _finetune_recipe() -> TrainConfig:
    return TrainConfig(epochs=8, batch_size=64, lr=0.02, warmup_epochs=0.5, label_smoothing=0.0, dropout=0.0,
                       weight_decay=4.0e-5, min_steps=60)


@dataclass
class FinetuneConfig:
    """The product-domain stage: every model compared is fine-tuned the same way as an embedder on the
    retrieval data's train split (Grocery fine classes by default, or your folder) before export."""

    enabled: bool = opt(True, "fine-tune before export (false: export the proxy-trained classifier as is)")
    resolution: Optional[int] = opt(None, "input size of the fine-tuning, the exported embedder and the latency quoted "
                                          "for it (null: the photo collection's data.resolution: one resolution per "
                                          "model)")
    embedding_dim: int = opt(128, "size of the projection after pooling (the index stores this many floats)")
    loss: EmbeddingLoss = opt(EmbeddingLoss.cosface, "cosface | normsoftmax")
    scale: float = opt(16.0, "s: the logit scale of the cosine classifier")
    margin: float = opt(0.1, "m: the additive cosine margin of cosface")
    recipe: TrainConfig = opt(factory=_finetune_recipe, help="optimizer, epochs and batch of the fine-tuning")

    def __post_init__(self) -> None:
        if self.resolution is not None:
            check_range("finetune.resolution", self.resolution, 32, 1024)
        check_range("finetune.embedding_dim", self.embedding_dim, 8, 4096)
        check_range("finetune.margin", self.margin, 0.0, 1.0)


@dataclass
class DistConfig:
    """DistributedDataParallel under `torchrun` (world size, ranks and rendezvous come from torchrun)."""

    backend: DistBackend = opt(DistBackend.auto, "auto | gloo | nccl")
    sync_bn: bool = opt(True, "BatchNorm statistics over the global batch (N ranks train as one process would); "
                              "false: per-rank statistics, less communication")
    timeout_s: int = opt(1800, "a collective that waits longer than this fails the run")

    def __post_init__(self) -> None:
        check_range("dist.timeout_s", self.timeout_s, 10, 86_400)


@dataclass(frozen=True)
class Runtime:
    """Where and how a job runs: the torch device, mixed precision, intra-op threads and the DDP settings
    under torchrun. Not a config group of its own: every command's `device=`, `amp=`, `threads=` and
    `dist.*` make one (`RunConfig.runtime()`), and a notebook passes one (or none: the CPU defaults)."""

    device: str = "auto"
    amp: AmpMode = AmpMode.auto
    threads: Optional[int] = None
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"device={self.device}: use auto, cpu, cuda or cuda:N")
        if self.amp is AmpMode.fp16 and self.device == "cpu":
            raise ConfigError("amp=fp16 needs a CUDA device (its grad scaler is CUDA-only): use amp=bf16 or amp=off "
                              "on the CPU")
