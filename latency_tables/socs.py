"""The devices spnas targets: one record per SoC, the single registry of SoCs and their facts.

The `soc/` config group (`configs/groups.py`), the pipeline's default devices, the modeled tables
(`modelling.modeled`, from each record's `model`), the adb profiler's defaults and the report all read
these records; nothing else lists the SoCs or states a SoC's ABI, big-core mask, published MobileNetV2
latency or hardware specs. Adding a SoC here adds it everywhere.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

SPNAS_PAPER = "Stamoulis et al., Single-Path NAS, arXiv 1904.02877"
WIKI = "https://en.wikipedia.org/wiki/List_of_Qualcomm_Snapdragon_systems_on_chips"
SPNAS = f"{SPNAS_PAPER}; MobileNetV2 float32 latencies as given in the spnas issue tracker"


@dataclass(frozen=True)
class SocModel:
    """What the modeled table of a SoC is derived from (`modelling.modeled`): its big core's public
    specs and the measured phone whose fitted model is mapped to them."""

    core: str
    base: str  # the measured phone mapped from (a key of `modelling.sources.MEASURED`)
    clock_ghz: float
    fma_per_cycle: int
    cache_kb: int  # last-level cache the big core sees
    dram_gb_s: float
    mapping: str  # why the mapping is what it is, in one line
    sources: tuple[str, ...]


@dataclass(frozen=True)
class SocFacts:
    """Public facts about one SoC's big cores, and the figures spnas calibrates against."""

    name: str  # config option and default table name
    soc: str
    big_cores: str  # what `taskset_mask` pins to
    abi: str  # Android ABI the phone's benchmark_model binary must be built for
    taskset_mask: str | None  # hex CPU mask of the big cores (None: all cores alike)
    mobilenet_v2_ms: float | None  # published MobileNetV2 1.0 224 float32 latency (ms), the scale of the table
    table: str = ""  # latency table name (default: name)
    # What a phone with this SoC reports (ro.soc.model / ro.board.platform / ro.hardware, lower case):
    # the adb profiler refuses a phone that reports none of them.
    platforms: tuple[str, ...] = ()
    model: SocModel | None = None  # the modeled table's specs (None: no modeled table, e.g. `host`)

    @property
    def table_name(self) -> str:
        return self.table or self.name


SOCS: dict[str, SocFacts] = {
    "sd845": SocFacts("sd845", "Snapdragon 845", "Kryo 385 Gold 2.8 GHz (cores 4-7)", "arm64-v8a", "f0", 76.36,
                      platforms=("sdm845",),
                      model=SocModel("Kryo 385 Gold (Cortex-A75 derivative)", "pixel3", 2.8, 8, 2048 + 256, 29.9,
                                     "measured SoC (Pixel 3): the fitted Pixel 3 model as is",
                                     (WIKI, "Qualcomm Snapdragon 845 product brief (LPDDR4X 1866 MHz, 4x16-bit; "
                                            "2 MB L3)", SPNAS))),
    "sd670": SocFacts("sd670", "Snapdragon 670", "Kryo 360 Gold 2.0 GHz (cores 6-7)", "arm64-v8a", "c0", 111.85,
                      platforms=("sdm670",),
                      model=SocModel("Kryo 360 Gold (Cortex-A75 derivative)", "pixel3", 2.0, 8, 1024 + 256, 14.9,
                                     "the SD845's core family (Pixel 3 model) at 2.0 GHz with half the L3 and half "
                                     "the DRAM bus",
                                     (WIKI, "Qualcomm Snapdragon 670 product brief (LPDDR4X 1866 MHz, 2x16-bit; "
                                            "1 MB L3)", SPNAS))),
    "sd808": SocFacts("sd808", "Snapdragon 808", "Cortex-A57 1.82 GHz (cores 4-5)", "arm64-v8a", "30", 162.82,
                      platforms=("msm8992",),
                      model=SocModel("Cortex-A57", "pixel1", 1.82, 4, 1024, 14.9,
                                     "memory-bound Pixel 1 (SD821) profile with the A57's 2x64-bit NEON, 1 MB L2, "
                                     "LPDDR3",
                                     (WIKI, "Qualcomm Snapdragon 808 product brief (LPDDR3 933 MHz, 2x32-bit; 1 MB L2 "
                                            "A57 cluster)",
                                      "Arm Cortex-A57 software optimization guide (2x64-bit FP/ASIMD pipes)", SPNAS))),
    "sd801": SocFacts("sd801", "Snapdragon 801", "Krait 400 2.45 GHz (all cores alike)", "armeabi-v7a", None,
                      120.82, platforms=("msm8974",),
                      model=SocModel("Krait 400", "pixel1", 2.45, 4, 2048, 14.9,
                                     "memory-bound Pixel 1 (SD821) profile with Krait's 128-bit NEON, 2 MB L2, "
                                     "LPDDR3, 32-bit ARMv7",
                                     (WIKI, "Qualcomm Snapdragon 801 product brief (LPDDR3 933 MHz, 2x32-bit; 2 MB "
                                            "shared L2)",
                                      "Krait microarchitecture: one 128-bit NEON pipe, VFPv4 FMA",
                                      "ruy kernel_arm32.cc / kernel_arm64.cc: float GEMM tiles 8x4 (armv7) vs 8x8 "
                                      "(arm64)", SPNAS))),
}


def host_abi() -> str:
    """This machine's ABI in Android's naming (x86_64, arm64-v8a, ...)."""
    m = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}.get(m, m)


HOST = SocFacts("host", "host CPU", "this machine's CPU (LiteRT, XNNPACK)", host_abi(), None, None)


def all_devices() -> dict[str, SocFacts]:
    """Every device a config can name: the Snapdragon SoCs and `host`."""
    return {**SOCS, "host": HOST}


# Not a device: multiply-adds as the cost (`latency_tables.lookup.table.MacsTable`), for FLOPs-budgeted
# searches such as NAS-Bench-Macro's ground truth (`spnas-search soc=flops`; the pipeline, which exports and
# times winners on devices, does not take it).
FLOPS = SocFacts("flops", "multiply-adds", "no device: multiply-adds counted from shapes", "", None, None)


def cost_options() -> dict[str, SocFacts]:
    """Every `soc` option a search can name: the devices and `flops`."""
    return {**all_devices(), "flops": FLOPS}
