"""What "this machine" is to a measured table: a CPU fingerprint, and the host table that matches it.

A table measured with the local profiler holds per-op costs of one CPU, one runtime build and one
thread count. Its `meta.fingerprint` records what decides those costs:

- the CPU model and vendor (a virtualised name like "Intel(R) Xeon(R) Processor" is not enough on
  its own, so family/model/stepping are kept too),
- the ISA extensions XNNPACK dispatches on (x86: SSE4.1, AVX, FMA, AVX2, AVX-512 F/BW/DQ/VL/VNNI/BF16,
  AVX-VNNI, AMX; ARM: ASIMD, dot product, fp16 arithmetic, i8mm, bf16, SVE),
- the core count, the L1d / L2 / L3 sizes,
- the runtime and its version, and the interpreter thread count.

`soc=host` resolves to the table whose fingerprint *matches* this machine: every field above equal
except the core count, which only has to cover the table's threads. A table of another machine is
never used as "this CPU"; the error names both fingerprints and how to measure this one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spnas_core.errors import TableError

X86_FLAGS = ("sse4_1", "sse4_2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2")
MATCH_FIELDS = ("vendor", "cpu_model", "cpu_family", "isa", "caches_kb", "runtime", "runtime_version", "threads")


@dataclass(frozen=True)
class Fingerprint:
    """The facts of a machine that decide per-op latencies on its CPU."""

    cpu_model: str
    vendor: str = ""
    cpu_family: str = ""  # family/model/stepping (x86) or implementer/part/variant (ARM)
    machine: str = ""
    isa: tuple[str, ...] = ()
    cores: int = 0
    caches_kb: dict[str, int] = field(default_factory=dict)
    runtime: str = ""
    runtime_version: str = ""
    threads: int = 1

    @property
    def id(self) -> str:
        """Short hash of the matching fields (what a host table's file name carries)."""
        blob = json.dumps({k: _plain(getattr(self, k)) for k in MATCH_FIELDS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fingerprint":
        try:
            return cls(str(d["cpu_model"]), str(d.get("vendor", "")), str(d.get("cpu_family", "")),
                       str(d.get("machine", "")), tuple(d.get("isa") or ()), int(d.get("cores", 0)),
                       {str(k): int(v) for k, v in (d.get("caches_kb") or {}).items()}, str(d.get("runtime", "")),
                       str(d.get("runtime_version", "")), int(d.get("threads", 1)))
        except (KeyError, TypeError, ValueError) as e:
            raise TableError(f"malformed fingerprint in a table's meta ({e}); re-measure the table") from None

    def differences(self, other: "Fingerprint") -> list[str]:
        """The fields in which `other` does not match this one (what makes a table foreign)."""
        out = []
        for k in MATCH_FIELDS:
            a, b = _plain(getattr(self, k)), _plain(getattr(other, k))
            if a != b:
                out.append(f"{k}: {_show(a)} vs {_show(b)}")
        if other.cores and self.threads > other.cores:
            out.append(f"cores: {other.cores} < the table's {self.threads} threads")
        return out

    def describe(self) -> str:
        """One line: `Intel Xeon ... (AVX-512, 2 cores, L2 2048 KB, LiteRT 2.3.0, 1 thread) [id]`."""
        isa = [f for f in self.isa if f in ("avx2", "avx512f", "avx512_vnni", "amx_tile", "asimddp", "i8mm", "sve")]
        caches = ", ".join(f"{k} {v} KB" for k, v in sorted(self.caches_kb.items()))
        return (f"{self.cpu_model} [{self.cpu_family}] ({', '.join(isa) or 'baseline ISA'}; {self.cores} cores; "
                f"{caches}; {self.runtime_version and 'LiteRT ' + self.runtime_version}; {self.threads} thread"
                f"{'s' if self.threads != 1 else ''}) id {self.id}")


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


def _show(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) < 80 else s[:77] + "..."


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if out:
                    break
                continue
            if ":" in line:
                k, v = line.split(":", 1)
                out.setdefault(k.strip().lower(), v.strip())
    except OSError:
        pass
    return out


def _caches_kb() -> dict[str, int]:
    """L1d / L2 / L3 sizes of cpu0 from sysfs (KB)."""
    out: dict[str, int] = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        m = re.match(r"(\d+)([KMG]?)", size)
        if not m:
            continue
        kb = int(m.group(1)) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[m.group(2)]
        out[f"L{level}{'d' if kind == 'Data' else ''}"] = int(kb)
    return out


def machine_fingerprint(threads: int = 1, runtime: str = "LiteRT interpreter (XNNPACK)",
                        runtime_version: str | None = None) -> Fingerprint:
    """This machine's fingerprint for a table measured with `threads` interpreter threads."""
    from importlib import metadata

    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("features") or "").split())
    isa = tuple(f for f in (*X86_FLAGS, *ARM_FLAGS) if f in flags)
    model = info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()
    if "cpu family" in info:
        family = f"family {info.get('cpu family')} model {info.get('model')} stepping {info.get('stepping', '?')}"
    else:
        family = (f"implementer {info.get('cpu implementer', '?')} part {info.get('cpu part', '?')} "
                  f"variant {info.get('cpu variant', '?')}")
    if runtime_version is None:
        try:
            runtime_version = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            runtime_version = ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    return Fingerprint(model, info.get("vendor_id") or info.get("cpu implementer", ""), family, platform.machine(),
                       isa, cores, _caches_kb(), runtime, runtime_version, int(threads))


def table_fingerprint(meta: dict[str, Any]) -> Fingerprint | None:
    """The fingerprint a measured table's meta records (None for tables measured before fingerprints)."""
    fp = meta.get("fingerprint")
    return Fingerprint.from_dict(fp) if isinstance(fp, dict) else None


def host_slug(fp: Fingerprint) -> str:
    """`host-<cpu>-<id>`: the name of this machine's table."""
    name = fp.cpu_model.lower().replace("(r)", "").replace("(tm)", "")
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:40].strip("-")
    return f"host-{slug or 'cpu'}-{fp.id}"
