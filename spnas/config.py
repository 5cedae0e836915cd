"""Typed configuration: one dataclass per config group and per command, each default in one place.

These are Hydra structured configs. `spnas.app.compose` registers them in Hydra's ConfigStore (the
YAML files under `configs/` are presets that override them), composes a command's config from
overrides, checks every type and choice before anything is decoded, and hands library code these
typed objects, never dicts. Closed choices are enums; a value outside them fails at compose time
with the key named. Cross-field rules live in `__post_init__` and run at compose time too.

Every field's help text (`opt(..., "help")`) is what `spnas-<command> --help` prints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import MISSING

from .errors import ConfigError


def opt(default: Any = MISSING, help: str = "", *, factory: Any = None) -> Any:  # noqa: A002 - field help
    """A dataclass field with a help text (shown by `--help`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# ====================================================================================== enums
class LossForm(enum.Enum):
    """The latency term of the search loss."""

    log = "CE + lambda * log R (the paper's form)"
    target = "CE + lambda * |log(R/T)|: settle at the budget T"
    target_one_sided = "CE + lambda * max(0, log(R/T)): stay under the budget T"


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


class Backend(enum.Enum):
    """An embedder backend of `retrieval.embedders`."""

    mediapipe = "MediaPipe Tasks ImageEmbedder on embedder.tflite"
    litert = "LiteRT interpreter on embedder.tflite"
    onnx = "ONNX Runtime on model.onnx"
    torch = "PyTorch on weights.pt"


class Int8Policy(enum.Enum):
    """What an export does about the int8 model."""

    disabled = "no int8 model"
    required = "an int8 model that misses its agreement tolerance refuses the whole export"
    fallback = "an int8 model that misses its tolerance is left out; the bundle ships float and says so"


class InitKind(enum.Enum):
    scratch = "random initialisation"
    inherit = "start from the search's superkernel weights (needs supernet=...)"


# `import` is a keyword, so this enum is built with the functional API (ProfileCommand["import"]).
ProfileCommand = enum.Enum("ProfileCommand", [
    ("measure", "profile every op key into a measured table (local CPU or a phone over adb)"),
    ("validate", "whole networks measured on this CPU vs the table's predictions"),
    ("model", "write the modeled Snapdragon tables"),
    ("import", "import a Single-Path NAS JSON or an OFA / ProxylessNAS YAML table"),
])
ProfileCommand.__doc__ = "What `spnas-profile` does (its first word)."


class ProfileDevice(enum.Enum):
    local = "this machine's CPU (LiteRT interpreter)"
    adb = "a phone over adb (TFLite benchmark_model)"


class TableFormat(enum.Enum):
    auto = "read the format from the file's content"
    ofa = "Once-for-All / ProxylessNAS YAML lookup table"
    spnas = "Single-Path NAS runtime-model JSON"


class ExpandMeaning(enum.Enum):
    auto = "inferred from the rows (an error when they allow both meanings)"
    ratio = "expand:<e> is the expansion ratio (ProxylessNAS)"
    channels = "expand:<c> is the expanded channel count (OFA MobileNetV3)"


class K3e3Row(enum.Enum):
    """Which figure a Single-Path NAS import uses for k3e3."""

    estimate = "R(k5e3) * R(k3e6) / R(k5e6), as the official runtime model computes it"
    measured = "the file's measured index-0 row"


class MissingTablePolicy(enum.Enum):
    """What a run does when no table measured on this machine exists (soc=host)."""

    error = "stop, naming this machine's fingerprint and the tables found, and how to measure it"
    profile = "profile this machine now (progress bar, resumable, cached under its fingerprint)"
    skip = "leave the host out of the run (the pipeline skips its row)"


class StaleCheck(enum.Enum):
    """A quick check of a measured table against this machine before a search or report uses it."""

    off = "no check"
    warn = "measure a few reference networks; warn when the table's predictions drift beyond the tolerance"
    refuse = "the same check; stop when the drift is beyond the tolerance"


class EmbeddingLoss(enum.Enum):
    """The retrieval loss of the fine-tuning stage (on unit embeddings and unit class weights)."""

    cosface = "normalised softmax with an additive cosine margin (CosFace): s * (cos - m) for the true class"
    normsoftmax = "normalised softmax (temperature 1/s), no margin"


class ThresholdSchedule(enum.Enum):
    """How the decision thresholds' learning rate moves over the searching steps."""

    cosine = "cosine decay to 0 at the start of the last epoch: decisions settle, the last epoch shows they hold"
    constant = "the base learning rate throughout (the original behaviour)"


class ProxyStrides(enum.Enum):
    auto = "drop as few stride-2 blocks as needed so every layer's input map is >= proxy.min_map"
    design = "train with the design strides whatever the resolution"


class DropOrder(enum.Enum):
    last = "drop the last stride-2 blocks first (cheapest on a CPU: the late stages grow, the early ones do not)"
    first = "drop the stem's and first stages' strides first (the usual CIFAR adaptation; 4-16x the compute)"


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


class SweepParam(enum.Enum):
    latency_lambda = "the latency weight lambda (log scale)"
    target_ms = "the latency budget T of a target loss"


# ====================================================================================== groups
@dataclass
class DataConfig:
    """A data set (config group `data/`: cifar10, grocery, fashion_mnist, folder)."""

    name: str = opt("folder", "name shown in summaries and reports")
    kind: DataKind = opt(DataKind.folder, "source format")
    root: str = opt(MISSING, "data set folder (data=folder: your photos in class folders)")
    resolution: int = opt(32, "square size images are decoded to (resized as MediaPipe resizes)")
    val_fraction: float = opt(0.1, "share of train held out for validation when there is no val split")
    test_fraction: float = opt(0.2, "data=folder without split folders: share of each class used as test")
    label_level: LabelLevel = opt(LabelLevel.fine, "grocery: fine (81 products) or coarse labels")
    train_limit: Optional[int] = opt(None, "use at most this many train images (class-balanced)")
    val_limit: Optional[int] = opt(None, "use at most this many val images")
    test_limit: Optional[int] = opt(None, "use at most this many test images")
    cache_dir: Optional[str] = opt(None, "decoded-data cache (default <SPNAS_HOME>/cache/data)")
    loader: DataLoaderKind = opt(DataLoaderKind.memory, "memory | stream")
    transform: TransformKind = opt(TransformKind.stretch, "stretch | imagenet")
    workers: int = opt(4, "data.loader=stream: DataLoader worker processes per rank (0: decode in the main process)")
    min_crop_scale: float = opt(0.08, "transform=imagenet: smallest area fraction of a random-resized crop")

    def __post_init__(self) -> None:
        _check_range("data.resolution", self.resolution, 8, 4096)
        _check_range("data.val_fraction", self.val_fraction, 0.0, 0.9)
        _check_range("data.test_fraction", self.test_fraction, 0.0, 0.9)
        for k in ("train_limit", "val_limit", "test_limit"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"data.{k}={v}: must be >= 1 (or null for no limit)")
        _check_range("data.workers", self.workers, 0, 256)
        _check_range("data.min_crop_scale", self.min_crop_scale, 0.01, 1.0)
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
class TargetFraction:
    """A per-device budget: `fraction` x the latency of reference net `arch` on the same table."""

    arch: str = opt("mobilenet_v2", "reference net whose latency sets the budget")
    fraction: float = opt(0.75, "budget as a fraction of that latency")


def _threshold_optimizer() -> OptimizerConfig:
    return OptimizerConfig(optimizer=OptimizerKind.adam, lr=0.005, momentum=0.0, nesterov=False, weight_decay=0.0)


@dataclass
class ProxyConfig:
    """Training geometry below the deployment resolution (search_spaces.proxy): the same for every model
    compared; the deployed geometry (design strides at search.latency_resolution) is what is exported
    and what the latency tables price."""

    strides: ProxyStrides = opt(ProxyStrides.auto, "auto | design")
    min_map: int = opt(4, "with strides=auto: smallest input map any layer may see while training")
    drop: DropOrder = opt(DropOrder.last, "with strides=auto: which stride-2 blocks to train at stride 1 first")

    def __post_init__(self) -> None:
        _check_range("proxy.min_map", self.min_map, 1, 64)


@dataclass
class SearchConfig:
    """The Single-Path NAS search (config group `search/`). Lengths are in optimisation steps: the data
    size sets how many epochs that is, so a small photo folder gets as many threshold updates as a large
    data set."""

    steps: int = opt(2800, "optimisation steps in all (8 epochs of CIFAR-10's 45k train images at batch 128; "
                           "the paper: 8 ImageNet epochs)")
    warmup_fraction: float = opt(0.25, "share of the steps with the latency term and threshold updates off")
    min_threshold_updates: int = opt(200, "floor on searching steps: the budget grows to reach it")
    batch_size: int = opt(128, "largest batch; smaller sets get smaller batches (see min_batches_per_epoch)")
    min_batches_per_epoch: int = opt(8, "shrink the batch (not below min_batch_size) so an epoch has this many")
    min_batch_size: int = opt(16, "smallest batch the adaptation may choose")
    latency_lambda: float = opt(1.0, "weight of the latency term. The official Single-Path NAS code scales "
                                     "log R by 1e3: its lambda 0.020 is latency_lambda=20 here (search=paper)")
    loss: LossForm = opt(LossForm.target, "log | target | target_one_sided")
    target_ms: Optional[float] = opt(None, "latency budget T for the target forms (overrides target_fraction_of)")
    target_fraction_of: Optional[TargetFraction] = opt(factory=TargetFraction,
                                                       help="per-device budget: fraction x a reference net's "
                                                            "latency on the same table")
    target_tolerance: float = opt(0.03, "a search lands on its target when within this fraction of it")
    latency_resolution: int = opt(224, "the table is read at the deployed input size, not the proxy's")
    width: float = opt(1.0, "width multiplier of the searched networks")
    label_smoothing: float = opt(0.1, "cross-entropy label smoothing")
    dropout: float = opt(0.0, "dropout before the classifier during the search")
    threshold_init: float = opt(0.0, "initial decision thresholds (0: every layer starts as k5e6)")
    threshold_schedule: ThresholdSchedule = opt(ThresholdSchedule.cosine, "cosine | constant")
    decision_hysteresis: float = opt(0.02, "a decision changes only when its statistic crosses the threshold by "
                                           "this fraction of itself (0: the plain step)")
    decision_window_min_steps: int = opt(20, "the derived net is the majority decision over the last epoch, "
                                             "and at least this many final steps")
    warmup_path_keep: Optional[float] = opt(None, "drop candidate paths at random during warm-up, keeping each "
                                                  "with this probability (the official code: 0.6; null: off)")
    eval_batch_size: int = opt(500, "batch size for validation")
    augment: AugmentConfig = opt(factory=AugmentConfig, help="train-time augmentation")
    weights: OptimizerConfig = opt(factory=OptimizerConfig, help="optimizer of the network weights")
    thresholds: OptimizerConfig = opt(factory=_threshold_optimizer, help="optimizer of the decision thresholds")

    def __post_init__(self) -> None:
        _check_range("search.steps", self.steps, 1, 10_000_000)
        _check_range("search.warmup_fraction", self.warmup_fraction, 0.0, 0.95)
        _check_range("search.min_threshold_updates", self.min_threshold_updates, 0, 10_000_000)
        _check_range("search.batch_size", self.batch_size, 1, 1 << 16)
        _check_range("search.min_batch_size", self.min_batch_size, 1, self.batch_size,
                     hint="at most search.batch_size")
        _check_range("search.target_tolerance", self.target_tolerance, 0.0, 1.0)
        if self.warmup_path_keep is not None:
            _check_range("search.warmup_path_keep", self.warmup_path_keep, 0.0, 1.0)
        if self.latency_lambda < 0:
            raise ConfigError(f"search.latency_lambda={self.latency_lambda}: must be >= 0")
        if self.loss is not LossForm.log and self.target_ms is None and self.target_fraction_of is None:
            raise ConfigError(f"search.loss={self.loss.name} needs a budget: set search.target_ms=<ms> or "
                              f"search.target_fraction_of={{arch: mobilenet_v2, fraction: 0.75}}")
        if self.target_ms is not None and self.target_ms <= 0:
            raise ConfigError(f"search.target_ms={self.target_ms}: must be > 0")


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
    channels_last: bool = opt(True, "NHWC memory format: 2-3x faster depthwise convs on CPU")
    augment: AugmentConfig = opt(factory=AugmentConfig, help="train-time augmentation")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("train.epochs", self.epochs, 0, 100_000)
        _check_range("train.batch_size", self.batch_size, 1, 1 << 16)


@dataclass
class ExportTolerances:
    fp32_max_abs: float = opt(1.0e-4, "logits, torch vs TFLite fp32")
    onnx_max_abs: float = opt(1.0e-4, "logits and embedding, torch vs ONNX Runtime")
    mediapipe_min_cos: float = opt(0.999, "MediaPipe ImageEmbedder vs torch features")
    int8_min_agreement: float = opt(0.95, "top-1 agreement, int8 vs torch")


@dataclass
class ExportLatencyConfig:
    threads: list[int] = opt(factory=lambda: [1, 2], help="LiteRT thread counts to time")
    passes: int = opt(2, "timing passes; the fastest is kept")
    benchmark_tool: bool = opt(True, "cross-check with ai_edge_litert's benchmark_litert_model")
    mediapipe_runs: int = opt(50, "timed MediaPipe ImageEmbedder calls")
    onnx_runs: int = opt(50, "timed ONNX Runtime calls")
    deploy_resolution: Optional[int] = opt(224, "also time the fp32 model at the size the tables are read at")


@dataclass
class ExportConfig:
    """Export settings (config group `export/`)."""

    int8: Int8Policy = opt(Int8Policy.fallback, "disabled | required | fallback")
    calibration_images: int = opt(200, "real training images for int8 calibration")
    int8_eval_images: int = opt(2000, "test images for the int8 top-1 drop")
    parity_images: int = opt(64, "real test images for the parity checks (>= 32)")
    onnx_opset: int = opt(18, "ONNX opset (>= 17; 18 is the dynamo exporter's native opset)")
    measure_latency: bool = opt(True, "time every artifact on this CPU and add table predictions")
    tolerances: ExportTolerances = opt(factory=ExportTolerances, help="parity gates")
    latency: ExportLatencyConfig = opt(factory=ExportLatencyConfig, help="latency measurement")

    def __post_init__(self) -> None:
        _check_range("export.onnx_opset", self.onnx_opset, 17, 30)
        _check_range("export.parity_images", self.parity_images, 32, 100_000)


@dataclass
class SocConfig:
    """A target device (config group `soc/`, one option per SoC; facts in latency_tables.socs)."""

    name: str = opt(MISSING, "short name (sd845, ..., host)")
    soc: str = opt("", "the SoC's full name")
    table: str = opt(MISSING, "latency table: a name (latency_tables/data or <SPNAS_HOME>/tables) or a path")
    abi: str = opt("arm64-v8a", "Android ABI of the phone's benchmark binary")
    taskset_mask: Optional[str] = opt(None, "big-core CPU mask for taskset on the phone (hex)")
    if_no_table: MissingTablePolicy = opt(MissingTablePolicy.error, "host: no table matches this machine's "
                                                                    "fingerprint -> error | profile | skip")
    stale_check: StaleCheck = opt(StaleCheck.warn, "host: spot-check a measured table on this machine before use "
                                                   "(off | warn | refuse)")
    stale_tolerance: float = opt(0.10, "host: largest median |prediction / measurement - 1| of the spot check")

    def __post_init__(self) -> None:
        if not 0.0 < self.stale_tolerance < 1.0:
            raise ConfigError(f"soc.stale_tolerance={self.stale_tolerance}: must be between 0 and 1 (e.g. 0.10)")


@dataclass
class StageConfig:
    channels: int = opt(MISSING, "output channels")
    repeats: int = opt(MISSING, "searchable layers in the stage")
    stride: int = opt(MISSING, "stride of its first layer")
    se: bool = opt(False, "squeeze-excite")
    act: str = opt("re", "activation: re | r6 | hs")


@dataclass
class SpaceConfig:
    """A search space (config group `space/`; defined once in search_spaces)."""

    name: str = opt(MISSING, "space name")
    stem: str = opt(MISSING, "stem block")
    fixed: list[str] = opt(factory=list, help="fixed blocks after the stem")
    stages: list[StageConfig] = opt(factory=list, help="searchable stages")
    head: list[str] = opt(factory=list, help="head blocks")
    choices: list[str] = opt(factory=list, help="candidate choices per layer, e.g. k3_e3")
    allow_skip: bool = opt(True, "layers after the first of a stage may be skipped")


def _finetune_recipe() -> TrainConfig:
    return TrainConfig(epochs=8, batch_size=64, lr=0.02, warmup_epochs=0.5, label_smoothing=0.0, dropout=0.0,
                       weight_decay=4.0e-5)


@dataclass
class FinetuneConfig:
    """The product-domain stage: every model compared is fine-tuned the same way as an embedder on the
    retrieval data's train split (Grocery fine classes by default, or your folder) before export."""

    enabled: bool = opt(True, "fine-tune before export (false: export the proxy-trained classifier as is)")
    resolution: int = opt(96, "input size of the fine-tuning and of the exported embedder (photos support 96-128)")
    embedding_dim: int = opt(128, "size of the projection after pooling (the index stores this many floats)")
    loss: EmbeddingLoss = opt(EmbeddingLoss.cosface, "cosface | normsoftmax")
    scale: float = opt(16.0, "s: the logit scale of the cosine classifier")
    margin: float = opt(0.1, "m: the additive cosine margin of cosface")
    recipe: TrainConfig = opt(factory=_finetune_recipe, help="optimizer, epochs and batch of the fine-tuning")

    def __post_init__(self) -> None:
        _check_range("finetune.resolution", self.resolution, 32, 1024)
        _check_range("finetune.embedding_dim", self.embedding_dim, 8, 4096)
        _check_range("finetune.margin", self.margin, 0.0, 1.0)


@dataclass
class RetrievalConfig:
    """The photo-search evaluation inside the pipeline."""

    data: DataConfig = opt(MISSING, "photo collection (default: Grocery Store)")
    backend: Backend = opt(Backend.litert, "embedder backend")
    factory: str = opt("Flat", "FAISS index_factory string for the galleries (exact by default)")
    latency_queries: int = opt(100, "single queries timed")
    bootstrap: int = opt(2000, "bootstrap resamples of the queries for the 95% intervals")


@dataclass
class ReportConfig:
    sweeps: str = opt("runs/sweep", "spnas-sweep folders (<soc>-<param>/pareto.csv) drawn into the plots")


@dataclass
class ProfilerConfig:
    threads: int = opt(1, "interpreter threads")
    cpus: Any = opt("auto", "local: pin to these cores (auto = the last core; null = no pinning)")
    warmup_runs: int = opt(20, "warm-up invocations per op")
    num_runs: int = opt(100, "timed invocations per op")
    min_time_s: float = opt(0.2, "each timed run lasts at least this long")
    passes: int = opt(3, "re-measure every key in this many interleaved passes, keep the fastest")
    repeats: int = opt(3, "timed runs per measurement; the fastest run's mean is the table statistic (this CPU "
                          "and phones alike)")
    serial: Optional[str] = opt(None, "adb: the phone's serial (adb devices)")
    benchmark_binary: Optional[str] = opt(None, "adb: TFLite benchmark_model built for the phone's ABI")
    adb: str = opt("adb", "adb executable")
    taskset_mask: Optional[str] = opt(None, "adb: CPU mask (default: the SoC's big cores)")
    enable_op_profiling: bool = opt(False, "adb: ask benchmark_model for per-node times (adds profiling overhead "
                                           "to the timed runs)")
    remote_dir: str = opt("/data/local/tmp/spnas", "adb: working folder on the phone")
    allow_soc_mismatch: bool = opt(False, "adb: profile a phone whose SoC is not soc= (recorded in meta)")
    retry_refused: bool = opt(False, "re-try ops the binary refused in an earlier run (meta.refused_ops)")


@dataclass
class ValidateConfig:
    table: str = opt("host", "table to validate against this CPU")
    num_archs: int = opt(50, "random architectures (plus the reference nets)")
    seed: int = opt(0, "sampling seed")
    resolution: int = opt(224, "input size")
    passes: int = opt(10, "interleaved passes over the networks, each net's fastest kept (10: two measurements of "
                          "the same networks rank them with tau >= 0.95 on a shared 2-core VM; 3-5 did not)")
    speed_probes: int = opt(6, "calibration networks re-measured among the validated ones, for the machine's speed "
                               "now vs at calibration (0: absolute figures only)")
    out_dir: str = opt("bench/out/validate", "where validate.json and the scatter plot go")

    def __post_init__(self) -> None:
        if self.passes < 1 or self.speed_probes < 0:
            raise ConfigError(f"validate.passes={self.passes}, validate.speed_probes={self.speed_probes}: passes must "
                              "be >= 1 and speed_probes >= 0 (e.g. validate.passes=10 validate.speed_probes=6)")


@dataclass
class ImportConfig:
    path: Optional[str] = opt(None, "the table file to import")
    format: TableFormat = opt(TableFormat.auto, "auto | ofa | spnas (the content decides; a given format is checked)")
    expand: ExpandMeaning = opt(ExpandMeaning.auto, "ofa tables: meaning of expand:<n> (auto: from the rows)")
    device: Optional[str] = opt(None, "name of the imported table (default: the file's stem)")
    resolution: int = opt(224, "spnas tables: input size")
    num_classes: int = opt(1000, "spnas tables: classes")
    k3e3: K3e3Row = opt(K3e3Row.estimate, "spnas tables: estimate (official runtime model) | measured (index 0)")
    fixed_ms: Optional[float] = opt(None, "spnas tables: the fixed part (stem, first/last block, head, classifier) "
                                          "in ms; null: the official 19.5999 for a file in the official 22-block "
                                          "form, none for a file of searchable layers only")
    classifier_ms: float = opt(0.295, "spnas tables: the classifier's share of the fixed part, rescaled for "
                                      "another class count")
    out: Optional[str] = opt(None, "output path (default <SPNAS_HOME>/tables/<device>.json)")


@dataclass
class SweepConfig:
    param: SweepParam = opt(SweepParam.latency_lambda, "latency_lambda | target_ms")
    low: float = opt(0.005, "lower end of the range")
    high: float = opt(0.5, "upper end of the range")
    n_trials: int = opt(8, "trials in total (a re-run continues the study)")
    population: int = opt(4, "NSGA-II population")
    retrain_epochs: int = opt(1, "short retrain of each derived net; 0: use the supernet's val accuracy")
    storage: Optional[str] = opt(None, "Optuna storage URL (default sqlite:///<run_dir>/study.db)")
    study_name: Optional[str] = opt(None, "study name (default spnas-<soc>-<param>)")
    target_loss: LossForm = opt(LossForm.target, "with param=target_ms: target | target_one_sided")
    target_lambda: float = opt(0.5, "with param=target_ms: lambda of the target loss")
    heartbeat_s: int = opt(60, "a running trial's heartbeat (database storages); a worker silent for grace_s "
                               "has its trial marked failed and retried")
    grace_s: Optional[int] = opt(None, "seconds without a heartbeat before a trial counts as dead "
                                       "(default 2 x heartbeat_s)")
    max_retry: int = opt(2, "times a trial whose worker died is retried with the same parameter")

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ConfigError(f"sweep.low={self.low} must be below sweep.high={self.high}")
        if self.n_trials < 1:
            raise ConfigError(f"sweep.n_trials={self.n_trials}: must be >= 1")
        _check_range("sweep.heartbeat_s", self.heartbeat_s, 1, 86_400)
        if self.grace_s is not None and self.grace_s <= self.heartbeat_s:
            raise ConfigError(f"sweep.grace_s={self.grace_s} must exceed sweep.heartbeat_s={self.heartbeat_s} "
                              f"(a live worker beats once per heartbeat)")
        _check_range("sweep.max_retry", self.max_retry, 0, 100)


# ====================================================================================== commands
@dataclass
class DistConfig:
    """DistributedDataParallel under `torchrun` (world size, ranks and rendezvous come from torchrun)."""

    backend: DistBackend = opt(DistBackend.auto, "auto | gloo | nccl")
    sync_bn: bool = opt(True, "BatchNorm statistics over the global batch (N ranks train as one process would); "
                              "false: per-rank statistics, less communication")
    timeout_s: int = opt(1800, "a collective that waits longer than this fails the run")

    def __post_init__(self) -> None:
        _check_range("dist.timeout_s", self.timeout_s, 10, 86_400)


@dataclass
class RunConfig:
    """Settings every command has."""

    seed: int = opt(0, "seed of data order, augmentation and initialisation")
    threads: Optional[int] = opt(None, "torch intra-op threads (null: torch's default)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N (auto: the first CUDA GPU if there is one, else cpu; "
                              "under torchrun each rank takes cuda:LOCAL_RANK)")
    amp: AmpMode = opt(AmpMode.auto, "auto | off | bf16 | fp16")
    dist: DistConfig = opt(factory=DistConfig, help="multi-process settings (under torchrun)")

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"device={self.device}: use auto, cpu, cuda or cuda:N")
        if self.amp is AmpMode.fp16 and self.device == "cpu":
            raise ConfigError("amp=fp16 needs a CUDA device (its grad scaler is CUDA-only): use amp=bf16 or amp=off "
                              "on the CPU")


@dataclass
class TrainAppConfig(RunConfig):
    """`spnas-train`: train and evaluate a fixed architecture."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"data": "fashion_mnist"}, {"train": "default"},
                                                         {"experiment": None}])
    data: DataConfig = opt(MISSING, "data set")
    train: TrainConfig = opt(MISSING, "training recipe")
    arch: str = opt("mobilenet_v3_small", "a reference net (mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small) "
                                          "or an arch.json")
    proxy: ProxyConfig = opt(factory=ProxyConfig, help="training geometry below the deployment resolution")
    init: InitKind = opt(InitKind.scratch, "scratch | inherit")
    supernet: Optional[str] = opt(None, "with init=inherit: the search's supernet.pt")
    resume: bool = opt(False, "continue from run_dir/last.pt")
    latency_resolution: int = opt(224, "deployment input size for MACs in the summary")
    run_dir: str = opt("runs/train/${now:%Y%m%d-%H%M%S}", "run folder")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init is InitKind.inherit and not self.supernet:
            raise ConfigError("init=inherit needs supernet=<path to the search's supernet.pt>")


@dataclass
class SearchAppConfig(RunConfig):
    """`spnas-search`: Single-Path NAS against one device's latency table."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"soc": "sd845"}, {"space": "mbv3_large"},
                                                         {"data": "cifar10"}, {"search": "default"},
                                                         {"experiment": None}])
    soc: SocConfig = opt(MISSING, "target device")
    space: SpaceConfig = opt(MISSING, "search space")
    data: DataConfig = opt(MISSING, "proxy data set")
    search: SearchConfig = opt(MISSING, "search settings")
    proxy: ProxyConfig = opt(factory=ProxyConfig, help="training geometry below the deployment resolution")
    resume: bool = opt(False, "continue a killed search from run_dir/last.pt")
    run_dir: str = opt("runs/search/${soc.name}-${now:%Y%m%d-%H%M%S}", "run folder")


@dataclass
class SweepAppConfig(RunConfig):
    """`spnas-sweep`: Optuna multi-objective study over lambda or the target latency."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"soc": "sd845"}, {"space": "mbv3_large"},
                                                         {"data": "cifar10"}, {"search": "demo"},
                                                         {"train": "default"}, {"experiment": None}])
    soc: SocConfig = opt(MISSING, "target device")
    space: SpaceConfig = opt(MISSING, "search space")
    data: DataConfig = opt(MISSING, "proxy data set")
    search: SearchConfig = opt(MISSING, "search settings of every trial")
    train: TrainConfig = opt(MISSING, "retrain recipe of every trial")
    proxy: ProxyConfig = opt(factory=ProxyConfig, help="training geometry of every trial")
    sweep: SweepConfig = opt(factory=SweepConfig, help="the study")
    run_dir: str = opt("runs/sweep/${soc.name}-${sweep.param}", "study folder (a re-run continues the study)")


@dataclass
class ExportAppConfig(RunConfig):
    """`spnas-export`: a trained model to a verified TFLite / ONNX / MediaPipe bundle."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"data": "fashion_mnist"},
                                                         {"export": "default"}, {"experiment": None}])
    data: DataConfig = opt(MISSING, "the data set the model was trained on")
    export: ExportConfig = opt(MISSING, "export settings")
    checkpoint: Optional[str] = opt(MISSING, "model.pt written by spnas-train (or null with arch=<reference net>)")
    arch: Optional[str] = opt(None, "must match the checkpoint's architecture when both are given")
    out_dir: str = opt("runs/export/${now:%Y%m%d-%H%M%S}", "bundle folder")


@dataclass
class RetrievalEvalAppConfig(RunConfig):
    """`spnas-retrieval-eval`: photo search quality and latency of one bundle."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"data": "grocery"}, {"experiment": None}])
    data: DataConfig = opt(MISSING, "photo collection")
    bundle: str = opt(MISSING, "a folder written by spnas-export")
    backend: Backend = opt(Backend.litert, "embedder backend")
    factory: str = opt("Flat", "FAISS index_factory string for the galleries (exact by default)")
    latency_queries: int = opt(200, "single queries timed")
    bootstrap: int = opt(2000, "bootstrap resamples of the queries for the 95% intervals")
    threads: Optional[int] = opt(1, "embedder threads")
    out_dir: Optional[str] = opt(None, "default: <bundle>/retrieval")


@dataclass
class ProfileAppConfig(RunConfig):
    """`spnas-profile [measure|validate|model|import]`: latency tables."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"soc": "host"}, {"space": "mbv3_large"},
                                                         {"experiment": None}])
    soc: SocConfig = opt(MISSING, "device being profiled")
    space: SpaceConfig = opt(MISSING, "search space whose keys are profiled")
    command: ProfileCommand = opt(ProfileCommand.measure, "measure | validate | model | import "  # type: ignore[valid-type]
                                                          "(or as the first word: spnas-profile validate)")
    device: ProfileDevice = opt(ProfileDevice.local, "local | adb")
    table_name: Optional[str] = opt(None, "default: host-<cpu> (local) or <soc>-measured (adb)")
    out: Optional[str] = opt(None, "default: <SPNAS_HOME>/tables/<table_name>.json")
    resolutions: list[int] = opt(factory=lambda: [224, 32], help="input sizes whose keys are profiled")
    num_classes: list[int] = opt(factory=lambda: [1000, 10, 43, 81], help="classifier sizes whose keys are profiled")
    resume: bool = opt(False, "keep rows already in the table, profile only missing keys")
    force: bool = opt(False, "re-measure an existing table from scratch")
    fit_overhead: bool = opt(True, "fit the calibration (row scale + per-run overhead) on 16 held-out sampled nets")
    micro_cache: Optional[str] = opt(None, "micro-model cache folder (default <SPNAS_HOME>/cache/micro)")
    model_socs: Optional[list[str]] = opt(None, "command=model: which SoCs (default all four)")
    out_dir: Optional[str] = opt(None, "command=model: output folder (default <SPNAS_HOME>/tables)")
    profile: ProfilerConfig = opt(factory=ProfilerConfig, help="the profiler")
    validate: ValidateConfig = opt(factory=ValidateConfig, help="command=validate")
    source: ImportConfig = opt(factory=ImportConfig, help="command=import: the table to import")

    def __post_init__(self) -> None:
        # `device` is what is profiled here (local | adb), not RunConfig's torch device: its check does not apply.
        if self.resolutions and min(self.resolutions) < 8:
            raise ConfigError(f"resolutions={self.resolutions}: every input size must be >= 8")


STAGE_KINDS = ("search", "train", "finetune", "export", "retrieval")


@dataclass
class PipelineAppConfig(RunConfig):
    """`spnas-pipeline`: search -> retrain -> export -> photo search -> report, per SoC, vs baselines."""

    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"space": "mbv3_large"}, {"data": "cifar10"}, {"data@retrieval.data": "grocery"},
        {"search": "default"}, {"train": "default"}, {"export": "default"},
        {"soc@soc_configs.sd845": "sd845"}, {"soc@soc_configs.sd670": "sd670"},
        {"soc@soc_configs.sd808": "sd808"}, {"soc@soc_configs.sd801": "sd801"},
        {"soc@soc_configs.host": "host"}, {"experiment": "demo"}])
    space: SpaceConfig = opt(MISSING, "search space")
    data: DataConfig = opt(MISSING, "proxy data set for search and retraining")
    search: SearchConfig = opt(MISSING, "search settings (every SoC)")
    train: TrainConfig = opt(MISSING, "retrain recipe (every model)")
    proxy: ProxyConfig = opt(factory=ProxyConfig, help="one training geometry for every model compared")
    export: ExportConfig = opt(MISSING, "export settings (every model)")
    finetune: FinetuneConfig = opt(factory=FinetuneConfig, help="product-domain embedder fine-tuning (every model)")
    retrieval: RetrievalConfig = opt(factory=RetrievalConfig, help="photo-search evaluation")
    report: ReportConfig = opt(factory=ReportConfig, help="report options")
    soc_configs: dict[str, SocConfig] = opt(factory=dict, help="known devices (one per soc/ option)")
    experiment_name: str = opt("custom", "names the run folder")
    socs: list[str] = opt(factory=lambda: ["sd845", "sd670", "sd808", "sd801", "host"],
                          help="devices to search for (keys of soc_configs)")
    baselines: list[str] = opt(factory=lambda: ["mobilenet_v2", "mobilenet_v3_large"],
                               help="reference nets trained, exported and evaluated the same way")
    init: InitKind = opt(InitKind.scratch, "retrain winners from scratch or inherit the superkernel's weights")
    force: list[str] = opt(factory=list, help="redo stage kinds: search | train | export | retrieval | all")
    run_dir: str = opt("runs/pipeline/${experiment_name}", "run folder")
    report_dir: Optional[str] = opt(None, "where report.md/json/csv + PNGs go (default: run_dir)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.socs:
            raise ConfigError("socs is empty: name at least one device, e.g. socs=[sd845]")
        for s in self.socs:
            if s not in self.soc_configs:
                raise ConfigError(f"socs: unknown device '{s}'{did_you_mean(s, self.soc_configs)}; known: "
                                  f"{', '.join(self.soc_configs)} (add one with +soc@soc_configs.<name>=<option>)")
        if len(set(self.socs)) != len(self.socs):
            raise ConfigError(f"socs lists a device twice: {self.socs}")
        bad = set(self.force) - set(STAGE_KINDS) - {"all"}
        if bad:
            raise ConfigError(f"force takes stage kinds {list(STAGE_KINDS)} or 'all'; unknown: {sorted(bad)}")


# The photo search's commands (`serve`, `index`) are added by spnas.app.compose from
# spnas/app/serving_config.py: this module may not import the application.
APPS: dict[str, type] = {
    "train": TrainAppConfig, "search": SearchAppConfig, "sweep": SweepAppConfig, "export": ExportAppConfig,
    "retrieval_eval": RetrievalEvalAppConfig, "profile": ProfileAppConfig, "pipeline": PipelineAppConfig,
}


# ====================================================================================== helpers
def did_you_mean(word: str, candidates: Any, n: int = 3) -> str:
    """' (did you mean `x`?)' for the closest candidates, or ''."""
    import difflib

    cands = [str(c) for c in candidates]
    close = difflib.get_close_matches(word, cands, n=n, cutoff=0.6)
    if not close:
        tail = word.rsplit(".", 1)[-1]
        close = [c for c in cands if tail and (c.endswith("." + tail) or c.endswith("_" + tail) or tail in c)][:n]
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"`{c}`" for c in close) + "?)"


def _check_range(key: str, v: float, lo: float, hi: float, hint: str = "") -> None:
    if not lo <= v <= hi:
        raise ConfigError(f"{key}={v}: must be between {lo} and {hi}" + (f" ({hint})" if hint else ""))


def field_help(cls: type, name: str) -> str:
    """The help text of a dataclass field ('' if none)."""
    for f in fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    return ""


def to_plain(obj: Any) -> Any:
    """A typed config as plain JSON-able data (enums by name), e.g. for stage hashes and summaries."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj) if f.name != "defaults"}
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
