"""Latency-table configs: a target device (Hydra group `soc/`), the profilers, validation and imports."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from spnas_core.config import opt
from spnas_core.errors import ConfigError


class ProfileDevice(enum.Enum):
    local = "this machine's CPU (LiteRT interpreter; command=wholenet: LiteRT's op profiler)"
    adb = "a phone over adb (TFLite benchmark_model)"
    aihub = "a Snapdragon phone in Qualcomm AI Hub (command=wholenet only; optional qai-hub client)"


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
    allow_abi_mismatch: bool = opt(False, "adb: run a benchmark binary of another ABI than the phone's primary one "
                                          "(e.g. 32-bit on a 64-bit phone; recorded in meta)")
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
    allow_partial: bool = opt(False, "ofa tables: import a table that does not price a whole network (cut short or "
                                     "trimmed), listing what is missing in meta.missing (default: an error)")


@dataclass
class WholeNetConfig:
    """`spnas-profile command=wholenet`: a table from whole-network op profiles (`latency_tables.measuring.wholenet`)."""

    k: int = opt(2, "every key in at least this many profiled networks (its row is their median)")
    resolution: Optional[int] = opt(None, "input size of the table (default: the first of `resolutions`)")
    dry_run: bool = opt(False, "print the covering design and the device runs it needs; profile nothing")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"wholenet.k={self.k}: every key must be in at least one network (e.g. wholenet.k=2)")


@dataclass
class AiHubConfig:
    """Qualcomm AI Hub (device=aihub): which phone, which compute unit; the token is the client's own."""

    device: Optional[str] = opt(None, "device name as AI Hub lists it (e.g. 'Samsung Galaxy S9')")
    chipset: Optional[str] = opt(None, "or a chipset attribute (e.g. qualcomm-snapdragon-845)")
    compute_unit: str = opt("cpu", "cpu | gpu | npu (TFLite runtime's --compute_unit)")
