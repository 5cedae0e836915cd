"""The devices spnas targets: one record per SoC, the single source of SoC facts.

The `soc/` config group, the modeled tables, the adb profiler's defaults and the report all read
these records; nothing else states a SoC's ABI, big-core mask or published MobileNetV2 latency.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

SPNAS_PAPER = "Stamoulis et al., Single-Path NAS, arXiv 1904.02877"


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

    @property
    def table_name(self) -> str:
        return self.table or self.name


SOCS: dict[str, SocFacts] = {
    "sd845": SocFacts("sd845", "Snapdragon 845", "Kryo 385 Gold 2.8 GHz (cores 4-7)", "arm64-v8a", "f0", 76.36,
                      platforms=("sdm845",)),
    "sd670": SocFacts("sd670", "Snapdragon 670", "Kryo 360 Gold 2.0 GHz (cores 6-7)", "arm64-v8a", "c0", 111.85,
                      platforms=("sdm670",)),
    "sd808": SocFacts("sd808", "Snapdragon 808", "Cortex-A57 1.82 GHz (cores 4-5)", "arm64-v8a", "30", 162.82,
                      platforms=("msm8992",)),
    "sd801": SocFacts("sd801", "Snapdragon 801", "Krait 400 2.45 GHz (all cores alike)", "armeabi-v7a", None,
                      120.82, platforms=("msm8974",)),
}


def host_abi() -> str:
    """This machine's ABI in Android's naming (x86_64, arm64-v8a, ...)."""
    m = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a"}.get(m, m)


HOST = SocFacts("host", "host CPU", "this machine's CPU (LiteRT, XNNPACK)", host_abi(), None, None)


def all_devices() -> dict[str, SocFacts]:
    """Every device a config can name: the Snapdragon SoCs and `host`."""
    return {**SOCS, "host": HOST}


# Not a device: multiply-adds as the cost (`latency_tables.lookup.flops`), for FLOPs-budgeted searches such as
# NAS-Bench-Macro's ground truth (`spnas-search soc=flops`; the pipeline, which exports and times winners on
# devices, does not take it).
FLOPS = SocFacts("flops", "multiply-adds", "no device: multiply-adds counted from shapes", "", None, None)


def cost_options() -> dict[str, SocFacts]:
    """Every `soc` option a search can name: the devices and `flops`."""
    return {**all_devices(), "flops": FLOPS}
