"""The command configs of `spnas-<command>`: what each command composes from the layers' own configs
(each layer keeps its config beside its code) plus its own options; `APPS` is what Hydra registers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from export.config import ExportConfig
from latency_tables.config import (
    AiHubConfig,
    ImportConfig,
    ProfileDevice,
    ProfilerConfig,
    SocConfig,
    ValidateConfig,
    WholeNetConfig,
)
from nas.config import ControlsConfig, GroundTruthConfig, SearchConfig, SweepConfig
from retrieval.config import Backend
from search_spaces.config import ProxyConfig, SpaceConfig
from spnas_core.config import check_range, did_you_mean, opt
from spnas_core.errors import ConfigError
from training.config import AmpMode, DataConfig, DistConfig, FinetuneConfig, InitKind, Runtime, TrainConfig

# `import` is a keyword, so this enum is built with the functional API (ProfileCommand["import"]).
ProfileCommand = enum.Enum("ProfileCommand", [
    ("measure", "profile every op key into a measured table (local CPU or a phone over adb)"),
    ("validate", "whole networks measured on this CPU vs the table's predictions"),
    ("model", "write the modeled Snapdragon tables"),
    ("import", "import a Single-Path NAS JSON or an OFA / ProxylessNAS YAML table"),
    ("wholenet", "a table from a few whole-network op profiles (this CPU, adb op profiling, Qualcomm AI Hub)"),
])


ProfileCommand.__doc__ = "What `spnas-profile` does (its first word)."


class RetrievalSource(enum.Enum):
    """Which photo collection the pipeline's photo search (and the fine-tuning before it) uses."""

    auto = "data=folder: your own photos (train split = gallery, test split = queries); else retrieval.data"
    data = "the proxy data set itself"
    collection = "retrieval.data (Grocery Store by default)"


@dataclass
class RetrievalConfig:
    """The photo-search evaluation inside the pipeline."""

    data: DataConfig = opt(MISSING, "photo collection (default: Grocery Store)")
    backend: Backend = opt(Backend.litert, "embedder backend")
    factory: str = opt("Flat", "FAISS index_factory string for the galleries (exact by default)")
    latency_queries: int = opt(100, "single queries timed")
    bootstrap: int = opt(2000, "bootstrap resamples of the queries for the 95% intervals")
    source: RetrievalSource = opt(RetrievalSource.auto, "auto | data | collection: which photos photo search runs on")


@dataclass
class ReportConfig:
    sweeps: str = opt("runs/sweep", "spnas-sweep folders (<soc>-<param>/pareto.csv) drawn into the plots")
    note: str = opt("", "a line the report prints above its verdicts (a preset's caveat)")
    note_data: Optional[str] = opt(None, "the data set (data.name) `note` speaks of: with other data (your photos) "
                                         "the note is left out and the report's caveat on the data given shows")
    rising_pts: float = opt(1.0, "budget check: validation top-1 rising by more than this many points over the last "
                                 "quarter of training means the comparison is budget-limited")


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
        self.runtime()  # device and amp checked at compose time (training.config.Runtime)

    def runtime(self) -> Runtime:
        """The library's view of these settings (what `train_model`, `run_search`, ... take)."""
        return Runtime(device=self.device, amp=self.amp, threads=self.threads, dist=self.dist)


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
    groundtruth: GroundTruthConfig = opt(factory=GroundTruthConfig, help="judge the winner by ground truth "
                                                                         "(space=nasbench_macro)")
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
    device: ProfileDevice = opt(ProfileDevice.local, "local | adb | aihub (aihub: command=wholenet)")
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
    wholenet: WholeNetConfig = opt(factory=WholeNetConfig, help="command=wholenet: the covering design")
    aihub: AiHubConfig = opt(factory=AiHubConfig, help="device=aihub: the AI Hub device")

    def __post_init__(self) -> None:
        # `device` is what is profiled here (local | adb), not RunConfig's torch device: its check does not apply.
        if self.resolutions and min(self.resolutions) < 8:
            raise ConfigError(f"resolutions={self.resolutions}: every input size must be >= 8")


STAGE_KINDS = ("warmup", "search", "controls", "train", "finetune", "export", "retrieval")


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
    seeds: list[int] = opt(factory=lambda: [0, 1, 2], help="every retrain and fine-tune runs once per seed; the "
                                                           "report gives means, 95% intervals and paired differences")
    controls: ControlsConfig = opt(factory=ControlsConfig, help="random and width-scaled controls per winner")
    export_socs: Optional[list[str]] = opt(None, "the winners that are exported, by SoC name ('fleet' for the fleet "
                                                 "net); default: every winner. The 1.0 baselines are always "
                                                 "exported, the controls with controls.export (the demo exports "
                                                 "the sd845 winner only, for time)")
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
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds={self.seeds}: name at least one seed, each once (e.g. seeds=[0,1,2])")
        known = [*self.soc_configs, "fleet"]  # a known device this run does not search is ignored (socs=[...] overrides)
        for key, names in (("controls.socs", self.controls.socs), ("export_socs", self.export_socs)):
            for s in names or []:
                if s not in known:
                    raise ConfigError(f"{key}: unknown device '{s}'{did_you_mean(s, known)}; known: "
                                      f"{', '.join(known)}")
        for d in self.search.fleet:
            if d not in self.soc_configs:
                raise ConfigError(f"search.fleet: unknown device '{d}'{did_you_mean(d, self.soc_configs)}; known: "
                                  f"{', '.join(self.soc_configs)}")
        bad = set(self.force) - set(STAGE_KINDS) - {"all"}
        if bad:
            raise ConfigError(f"force takes stage kinds {list(STAGE_KINDS)} or 'all'; unknown: {sorted(bad)}")


# The photo search's commands (`serve`, `index`) are added by spnas.app.compose from
# spnas/app/serving_config.py: this module may not import the application's serving side.
APPS: dict[str, type] = {
    "train": TrainAppConfig, "search": SearchAppConfig, "sweep": SweepAppConfig, "export": ExportAppConfig,
    "retrieval_eval": RetrievalEvalAppConfig, "profile": ProfileAppConfig, "pipeline": PipelineAppConfig,
}
