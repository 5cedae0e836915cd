"""The search configs (Hydra group `search/`, the sweep node), beside the search loop and the sweep."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Optional

from spnas_core.config import check_range, opt, to_plain
from spnas_core.errors import ConfigError
from training.config import AugmentConfig, OptimizerConfig, OptimizerKind


class LossForm(enum.Enum):
    """The latency term of the search loss."""

    log = "CE + lambda * log R (the paper's form)"
    target = "CE + lambda * |log(R/T)|: settle at the budget T"
    target_one_sided = "CE + lambda * max(0, log(R/T)): stay under the budget T"


class ThresholdSchedule(enum.Enum):
    """How the decision thresholds' learning rate moves over the searching steps."""

    cosine = "cosine decay to 0 at the start of the last epoch: decisions settle, the last epoch shows they hold"
    constant = "the base learning rate throughout (the original behaviour)"


class FleetObjective(enum.Enum):
    """How a fleet search (`search.fleet`) folds its devices' latencies into one cost."""

    max = "max over devices of R_d / T_d: the slowest phone, relative to its budget, decides"
    weighted = "sum over devices of w_d R_d / T_d (search.fleet_weights, e.g. market shares; normalised to sum 1)"


class WarmupSampling(enum.Enum):
    """Which paths the warm-up trains (the weights only; no latency term, no threshold updates)."""

    decided = "the path the thresholds decide (the paper: every layer its largest candidate, since thresholds start at 0)"
    path_keep = "drop each decision's weights at random, keeping each with search.warmup_path_keep (the official code)"
    uniform = "one path per step, every layer's candidate (skip included) drawn uniformly (SPOS)"
    fair = ("strict fairness (FairNAS): per step, as many paths as a layer has candidates, each layer taking every "
            "candidate once in a random order; one update from their mean loss")
    sandwich = ("the largest, the smallest and search.sandwich_random random paths per step; the others learn from "
                "the largest's predictions (in-place distillation, BigNAS)")


class StartRule(enum.Enum):
    """Where the threshold decisions start when the latency term switches on (`nas.start`)."""

    largest = "every layer its largest candidate (the paper: thresholds at search.threshold_init)"
    deepest = "every layer kept at its smallest candidate (depth first; training-free, nothing scored)"
    proxy = ("the best of search.start_samples random networks within the budget by the mean of their NASWOT and "
             "depth ranks (training-free)")


class FinalistProxy(enum.Enum):
    none = "rank the finalists by the supernet alone"
    naswot = "rank by the mean of the supernet's rank and NASWOT's (a training-free score, nas.proxies)"
    naswot_depth = ("rank by the mean of NASWOT's and depth's ranks (depth: layers kept, then cost), and the "
                    "supernet's where search.finalists.supernet")
    naswot_layers = ("rank by the mean of NASWOT's and the layer count's ranks, and the supernet's where "
                     "search.finalists.supernet (equal layer counts tie, so NASWOT orders networks of one depth)")


@dataclass
class FinalistsConfig:
    """The networks around the derived one, ranked within the budget (`nas.finalists`). The default, for every
    space, is what won on NAS-Bench-Macro's ground truth at radius 1 (docs/groundtruth.md): NASWOT and the layer
    count, no supernet; `search=paper` keeps the paper's rule (radius 0: the derived network is the winner)."""

    radius: int = opt(1, "rank every network within this many layer changes of the derived one (and the decision "
                         "window's), pick the best within the budget; 0: the derived network is the winner (the paper)")
    proxy: FinalistProxy = opt(FinalistProxy.naswot_layers, "none | naswot | naswot_depth | naswot_layers: "
                                                            "training-free scores ranked beside the supernet's")
    supernet: bool = opt(False, "rank by the supernet's held-out loss too (on ground truth it ranks networks of one "
                                "cost band with tau 0.37 and drew the picks down: off by default)")
    recal_images: int = opt(0, "validation images that re-estimate BatchNorm for each finalist (0: each held-out "
                               "batch is normalised by its own statistics, one pass instead of two, and the "
                               "networks' common layers run once; the two rank alike, docs/groundtruth.md)")
    eval_images: int = opt(256, "validation images each finalist is scored on (held-out cross-entropy)")
    max_candidates: int = opt(400, "at most this many finalists, nearest first")

    def __post_init__(self) -> None:
        check_range("search.finalists.radius", self.radius, 0, 4)
        check_range("search.finalists.recal_images", self.recal_images, 0, 100_000)
        check_range("search.finalists.eval_images", self.eval_images, 1, 100_000)
        check_range("search.finalists.max_candidates", self.max_candidates, 1, 100_000)
        if self.radius > 0 and self.proxy is FinalistProxy.none and not self.supernet:
            raise ConfigError("search.finalists ranks by nothing (proxy=none, supernet=false): set "
                              "search.finalists.proxy=naswot_layers or search.finalists.supernet=true, or radius=0")


class SweepParam(enum.Enum):
    latency_lambda = "the latency weight lambda (log scale)"
    target_ms = "the latency budget T of a target loss"


@dataclass
class TargetFraction:
    """A per-device budget: `fraction` x the latency of reference net `arch` on the same table."""

    arch: str = opt("mobilenet_v2", "reference net whose latency sets the budget")
    fraction: float = opt(0.75, "budget as a fraction of that latency")


def _threshold_optimizer() -> OptimizerConfig:
    return OptimizerConfig(optimizer=OptimizerKind.adam, lr=0.005, momentum=0.0, nesterov=False, weight_decay=0.0)


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
    decision_window_steps: Optional[int] = opt(None, "the majority decision over exactly this many final steps instead "
                                                     "of the last epoch (a search shorter than an epoch of a large "
                                                     "data set)")
    warmup_path_keep: Optional[float] = opt(None, "drop candidate paths at random during warm-up, keeping each "
                                                  "with this probability (the official code: 0.6; null: off)")
    warmup_sampling: WarmupSampling = opt(WarmupSampling.uniform, "decided | path_keep | uniform | fair | sandwich: "
                                                                  "the paths the warm-up trains (uniform: the supernet "
                                                                  "ranks networks best, docs/groundtruth.md)")
    sandwich_random: int = opt(2, "warmup_sampling=sandwich: random paths per step beside the largest and smallest")
    eval_batch_size: int = opt(500, "batch size for validation")
    start: StartRule = opt(StartRule.largest, "largest | deepest | proxy: the network the threshold decisions start "
                                              "from when the latency term switches on")
    start_samples: int = opt(50, "start=proxy: random networks within the budget that are scored")
    start_margin: float = opt(0.25, "start=deepest|proxy: each threshold this fraction of its statistic on the "
                                    "start network's side")
    finalists: FinalistsConfig = opt(factory=FinalistsConfig, help="rank the networks around the derived one")
    fleet: list[str] = opt(factory=list, help="one network for several devices: their names (e.g. [sd845, sd670, "
                                              "sd808, sd801]); the latency term is the fleet's (fleet_objective)")
    fleet_objective: FleetObjective = opt(FleetObjective.max, "max | weighted (with search.fleet)")
    fleet_weights: Optional[list[float]] = opt(None, "with fleet_objective=weighted: one weight per device of "
                                                     "search.fleet (null: equal)")
    augment: AugmentConfig = opt(factory=AugmentConfig, help="train-time augmentation")
    weights: OptimizerConfig = opt(factory=OptimizerConfig, help="optimizer of the network weights")
    thresholds: OptimizerConfig = opt(factory=_threshold_optimizer, help="optimizer of the decision thresholds")

    def __post_init__(self) -> None:
        check_range("search.steps", self.steps, 1, 10_000_000)
        check_range("search.warmup_fraction", self.warmup_fraction, 0.0, 0.95)
        check_range("search.min_threshold_updates", self.min_threshold_updates, 0, 10_000_000)
        check_range("search.batch_size", self.batch_size, 1, 1 << 16)
        check_range("search.min_batch_size", self.min_batch_size, 1, self.batch_size,
                     hint="at most search.batch_size")
        check_range("search.target_tolerance", self.target_tolerance, 0.0, 1.0)
        if self.warmup_path_keep is not None:
            check_range("search.warmup_path_keep", self.warmup_path_keep, 0.0, 1.0)
            # a keep probability names the official code's sampling; it replaces the default (uniform)
            if self.warmup_sampling in (WarmupSampling.fair, WarmupSampling.sandwich):
                raise ConfigError(f"search.warmup_path_keep={self.warmup_path_keep} is the path_keep sampling; it cannot "
                                  f"go with search.warmup_sampling={self.warmup_sampling.name} (set it to null)")
            self.warmup_sampling = WarmupSampling.path_keep
        elif self.warmup_sampling is WarmupSampling.path_keep:
            raise ConfigError("search.warmup_sampling=path_keep needs search.warmup_path_keep (the official code: 0.6)")
        check_range("search.sandwich_random", self.sandwich_random, 0, 16)
        check_range("search.start_samples", self.start_samples, 1, 100_000)
        check_range("search.start_margin", self.start_margin, 0.0, 10.0)
        if self.decision_window_steps is not None:
            check_range("search.decision_window_steps", self.decision_window_steps, 1, 10_000_000)
        if self.latency_lambda < 0:
            raise ConfigError(f"search.latency_lambda={self.latency_lambda}: must be >= 0")
        if self.loss is not LossForm.log and self.target_ms is None and self.target_fraction_of is None:
            raise ConfigError(f"search.loss={self.loss.name} needs a budget: set search.target_ms=<ms> or "
                              f"search.target_fraction_of={{arch: mobilenet_v2, fraction: 0.75}}")
        if self.target_ms is not None and self.target_ms <= 0:
            raise ConfigError(f"search.target_ms={self.target_ms}: must be > 0")
        if self.fleet and len(set(self.fleet)) != len(self.fleet):
            raise ConfigError(f"search.fleet lists a device twice: {self.fleet}")
        if self.fleet and len(self.fleet) < 2:
            raise ConfigError(f"search.fleet={self.fleet}: a fleet has at least two devices (one device: soc=...)")
        if self.fleet_weights is not None:
            if len(self.fleet_weights) != len(self.fleet) or any(w < 0 for w in self.fleet_weights) or \
                    sum(self.fleet_weights) <= 0:
                raise ConfigError(f"search.fleet_weights={self.fleet_weights}: one non-negative weight per device of "
                                  f"search.fleet={self.fleet}, not all zero")
            if self.fleet_objective is not FleetObjective.weighted:
                raise ConfigError("search.fleet_weights needs search.fleet_objective=weighted")


# The search settings that only matter once the latency term is on: a weights-only warm-up does not
# depend on them, so searches that differ in nothing else share one warm-up.
LATENCY_ONLY = ("latency_lambda", "loss", "target_ms", "target_fraction_of", "target_tolerance", "thresholds",
                "threshold_schedule", "decision_window_min_steps", "latency_resolution", "fleet", "fleet_objective",
                "fleet_weights")


# The search settings a winner's controls depend on: how its latency is read (resolution, width) and budgeted.
CONTROLS_DEPEND_ON = ("latency_resolution", "target_fraction_of", "target_ms", "fleet_objective", "fleet_weights",
                      "width")
assert set(LATENCY_ONLY) | set(CONTROLS_DEPEND_ON) <= {f.name for f in fields(SearchConfig)}, \
    "LATENCY_ONLY or CONTROLS_DEPEND_ON names a field SearchConfig lacks"


def warmup_settings(search: SearchConfig) -> dict[str, object]:
    """The settings of `search` a weights-only warm-up depends on, as plain data (a stage cache key)."""
    return {k: v for k, v in to_plain(search).items() if k not in LATENCY_ONLY}


def controls_settings(search: SearchConfig) -> dict[str, object]:
    """The settings of `search` a winner's controls depend on, as plain data (a stage cache key)."""
    plain = to_plain(search)
    return {k: plain[k] for k in CONTROLS_DEPEND_ON}


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
        check_range("sweep.heartbeat_s", self.heartbeat_s, 1, 86_400)
        if self.grace_s is not None and self.grace_s <= self.heartbeat_s:
            raise ConfigError(f"sweep.grace_s={self.grace_s} must exceed sweep.heartbeat_s={self.heartbeat_s} "
                              f"(a live worker beats once per heartbeat)")
        check_range("sweep.max_retry", self.max_retry, 0, 100)


@dataclass
class GroundTruthConfig:
    """Judge a search by ground truth where the space has it (NAS-Bench-Macro: `nas.groundtruth`)."""

    enabled: bool = opt(False, "look the winner up in NAS-Bench-Macro's table (space=nasbench_macro): its rank, "
                               "percentile and regret within the budget, beside the exact random controls")
    path: Optional[str] = opt(None, "the benchmark file (default: $SPNAS_SHARED/datasets/nas-bench-macro/"
                                    "nas-bench-macro_cifar10.json)")


@dataclass
class ControlsConfig:
    """The controls every winner is judged against (docs/design.md, "Evidence"; `nas.controls`): random nets
    of its space at its latency, the reference nets width-scaled to it, and the search itself repeated with
    other seeds (its own noise)."""

    random: int = opt(3, "architectures drawn uniformly from the space within +-tolerance of the winner's predicted "
                         "latency on its table, each with its own seed derived from the run's seed and the winner "
                         "(seeded rejection sampling; seeds and draws are recorded); the winner is compared with "
                         "their mean, and ranked among them")
    tolerance: float = opt(0.02, "the band around the winner's latency that random and width-scaled controls must "
                                 "fall in")
    scale_baselines: bool = opt(True, "also train every baseline width-scaled (bisection on the width) to each "
                                      "winner's latency")
    widths: list[float] = opt(factory=list, help="extra fixed widths of every baseline, for the reference family's "
                                                 "curve (e.g. [0.5])")
    export: bool = opt(False, "also export the controls (random, width-scaled, extra widths); by default only the "
                              "winners and the 1.0 baselines are exported, every model is photo-searched with its "
                              "fine-tuned embedder")
    seed: int = opt(0, "mixed into every random draw's seed with the run's seed and the winner (another value: "
                       "other draws for the same run)")
    search_seeds: list[int] = opt(factory=list, help="repeat every search with these seeds too (each seed its own "
                                                     "warm-up, shared by its devices, on the run's data): their "
                                                     "winners train like the others and the report gives the "
                                                     "winners' spread; the controls are drawn for the run's `seed`")
    photo_search: bool = opt(True, "fine-tune and photo-search the random controls and the search repeats too; "
                                   "false: only the winners and the reference nets (width-scaled ones included); "
                                   "every model is still trained and compared on proxy top-1, and those left out "
                                   "are not exported either (the evidence preset, for time)")
    socs: Optional[list[str]] = opt(None, "the winners that get controls, by SoC name ('fleet' for the fleet net; "
                                          "devices the run does not search are ignored); default: every winner "
                                          "(the demo gives them to sd845 only, for time)")

    def __post_init__(self) -> None:
        check_range("controls.random", self.random, 0, 1000)
        check_range("controls.tolerance", self.tolerance, 0.001, 0.5)
        for w in self.widths:
            check_range("controls.widths", w, 0.05, 4.0)
        if len(set(self.search_seeds)) != len(self.search_seeds):
            raise ConfigError(f"controls.search_seeds lists a seed twice: {self.search_seeds}")
