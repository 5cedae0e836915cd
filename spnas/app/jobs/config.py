"""The command configs of the single-job commands (`spnas-train`, `-search`, `-sweep`, `-export`,
`-retrieval-eval`, `-profile`): what each composes from the layers' own configs (each layer keeps its
config beside its code) plus its own options."""

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
from nas.config import GroundTruthConfig, SearchConfig, SweepConfig
from retrieval.config import Backend
from search_spaces.config import ProxyConfig, SpaceConfig
from spnas.app.base import RunConfig
from spnas_core.config import opt
from spnas_core.errors import ConfigError
from training.config import DataConfig, InitKind, TrainConfig

# `import` is a keyword, so this enum is built with the functional API (ProfileCommand["import"]).
ProfileCommand = enum.Enum("ProfileCommand", [
    ("measure", "profile every op key into a measured table (local CPU or a phone over adb)"),
    ("validate", "whole networks measured on this CPU vs the table's predictions"),
    ("model", "write the modeled Snapdragon tables"),
    ("import", "import a Single-Path NAS JSON or an OFA / ProxylessNAS YAML table"),
    ("wholenet", "a table from a few whole-network op profiles (this CPU, adb op profiling, Qualcomm AI Hub)"),
])


ProfileCommand.__doc__ = "What `spnas-profile` does (its first word)."


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
