"""The pipeline's command config (`spnas-pipeline`): the layers' configs every model of the run shares,
the devices, baselines, seeds and controls, the photo-search evaluation and the report options."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from export.config import ExportConfig
from latency_tables.config import SocConfig
from latency_tables.socs import all_devices
from nas.config import ControlsConfig, SearchConfig
from retrieval.config import Backend
from search_spaces.config import ProxyConfig, SpaceConfig
from spnas.app.base import RunConfig
from spnas_core.config import did_you_mean, opt
from spnas_core.errors import ConfigError
from training.config import DataConfig, FinetuneConfig, InitKind, TrainConfig

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


STAGE_KINDS = ("warmup", "search", "controls", "train", "finetune", "export", "retrieval")


@dataclass
class PipelineAppConfig(RunConfig):
    """`spnas-pipeline`: search -> retrain -> export -> photo search -> report, per SoC, vs baselines."""

    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"space": "mbv3_large"}, {"data": "cifar10"}, {"data@retrieval.data": "grocery"},
        {"search": "default"}, {"train": "default"}, {"export": "default"},
        *({f"soc@soc_configs.{name}": name} for name in all_devices()), {"experiment": "demo"}])
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
    socs: list[str] = opt(factory=lambda: list(all_devices()),
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
