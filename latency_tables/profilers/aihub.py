"""`AiHubProfiler`: whole-network per-layer profiles on real Snapdragon phones in Qualcomm AI Hub.

Optional (`pip install 'spnas[aihub]'`, the BSD `qai-hub` client); the token comes from the client's
own configuration (`qai-hub configure --api_token ...`, `~/.qai_hub/client.ini`), never from spnas.
A device is chosen by name (`Samsung Galaxy S9`) or by chipset (`qualcomm-snapdragon-845`, the
client's `chipset:` attribute). Each .tflite is submitted once: its job id is written to a jobs file
(keyed by the model's sha256) before the job is waited on, so a run that stops, or a re-run after a
failed job, reuses every submitted job and submits again only the failed ones.

A job's `download_profile()` is a dict: `execution_summary` (times in microseconds) and
`execution_detail`, one entry per layer (`name`, `type`, `compute_unit`, `execution_time` in us);
`profile_from_aihub` turns it into the `OpProfile` the attribution reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from spnas_core.errors import ConfigError, DeviceError, InputError
from spnas_core.files import write_json_atomic

from .base import OpEntry, OpProfile, OpProfiler, Profiler, Timing

log = logging.getLogger(__name__)

INSTALL_HINT = "install the optional AI Hub client: pip install 'spnas[aihub]' (qai-hub), then `qai-hub configure`"


def import_hub() -> Any:
    """The `qai_hub` module, or one clear error saying how to get it."""
    try:
        import qai_hub
    except ImportError as e:
        raise ConfigError(f"source=aihub needs the qai-hub client ({e}); {INSTALL_HINT}") from None
    return qai_hub


def token_configured() -> bool:
    """Whether the client has a token (its config file or environment), so a live job can run."""
    if os.environ.get("QAIHUB_API_TOKEN"):
        return True
    cfg = Path(os.environ.get("QAIHUB_CLIENT_INI", Path.home() / ".qai_hub" / "client.ini"))
    return cfg.is_file() and "api_token" in cfg.read_text(errors="replace")


def profile_from_aihub(profile: dict[str, Any], source: dict[str, Any] | None = None) -> OpProfile:
    """An AI Hub profile dict (`job.download_profile()`) as an `OpProfile` (ms).

    Layers the runtime reports without a time (folded into a neighbour) are kept with 0 ms, so the
    structure the attribution reads is the network's."""
    try:
        summary = profile["execution_summary"]
        detail = profile["execution_detail"]
        total_us = float(summary["estimated_inference_time"])
    except (KeyError, TypeError, ValueError):
        raise InputError("not an AI Hub profile: expected execution_summary.estimated_inference_time and "
                         "execution_detail (job.download_profile())") from None
    if not detail:
        raise InputError("the AI Hub profile has no per-layer execution_detail (was the job a profile job?)")
    entries = tuple(OpEntry(str(d.get("type", "")), str(d.get("name", "")), float(d.get("execution_time", 0)) / 1e3)
                    for d in detail)
    units = Counter(str(d.get("compute_unit", "")) for d in detail)
    return OpProfile(entries, total_us / 1e3, {**(source or {}), "compute_units": dict(units),
                                               "runtime": (source or {}).get("runtime", "AI Hub")})


class AiHubProfiler(Profiler, OpProfiler):
    """Profile jobs on one AI Hub device (by name or chipset), resumable through a jobs file."""

    def __init__(self, device: str | None = None, chipset: str | None = None, compute_unit: str = "cpu",
                 jobs_file: str | os.PathLike | None = None, runtime: str = "tflite", hub: Any = None) -> None:
        if not device and not chipset:
            raise ConfigError("source=aihub needs a device: aihub.device='Samsung Galaxy S9' or "
                              "aihub.chipset=qualcomm-snapdragon-845")
        self.device_name, self.chipset = device or "", chipset or ""
        self.compute_unit, self.runtime = compute_unit, runtime
        self.jobs_file = Path(jobs_file) if jobs_file else None
        self.hub = hub or import_hub()
        self.last_device: dict[str, Any] = {}

    def _device(self) -> Any:
        attrs = [f"chipset:{self.chipset}"] if self.chipset else []
        return self.hub.Device(name=self.device_name, attributes=attrs)

    def _jobs(self) -> dict[str, Any]:
        if self.jobs_file and self.jobs_file.exists():
            return json.loads(self.jobs_file.read_text())
        return {}

    def _save_jobs(self, jobs: dict[str, Any]) -> None:
        if self.jobs_file:
            write_json_atomic(self.jobs_file, jobs)

    def profile_ops(self, tflite: str | os.PathLike) -> OpProfile:
        """Submit (or reuse) the profile job of this model and return its per-layer profile."""
        tflite = Path(tflite)
        sha = hashlib.sha256(tflite.read_bytes()).hexdigest()
        jobs = self._jobs()
        job = None
        if sha in jobs:
            job = self.hub.get_job(jobs[sha]["job_id"])
            log.info("reusing AI Hub job %s for %s", jobs[sha]["job_id"], tflite.name)
        if job is None:
            job = self.hub.submit_profile_job(model=str(tflite), device=self._device(), name=f"spnas {tflite.stem}",
                                              options=f"--compute_unit {self.compute_unit}")
            jobs[sha] = {"job_id": job.job_id, "model": tflite.name, "submitted": time.strftime("%Y-%m-%d %H:%M:%S")}
            self._save_jobs(jobs)
        status = job.wait()
        if not getattr(status, "success", False):
            jobs.pop(sha, None)
            self._save_jobs(jobs)
            raise DeviceError(f"AI Hub job {job.job_id} for {tflite.name} ended {getattr(status, 'code', status)}: "
                              f"{getattr(status, 'message', '') or 'no message'}; re-run with resume=true: finished "
                              f"jobs are reused and this one is submitted again")
        dev = getattr(job, "device", None)
        attrs = list(getattr(dev, "attributes", []) or [])
        self.last_device = {"name": getattr(dev, "name", self.device_name), "os": getattr(dev, "os", ""),
                            "chipset": next((a.split(":", 1)[1] for a in attrs if a.startswith("chipset:")),
                                            self.chipset)}
        return profile_from_aihub(job.download_profile(),
                                  {"runtime": f"AI Hub ({self.runtime})", "job_id": job.job_id, **self.last_device,
                                   "compute_unit": self.compute_unit})

    def measure(self, tflite: str | os.PathLike) -> Timing:
        p = self.profile_ops(tflite)
        return Timing(p.total_ms, 0.0, 1)

    def describe(self) -> dict[str, Any]:
        return {"runtime": f"Qualcomm AI Hub profile jobs ({self.runtime})", "runtime_version": _hub_version(),
                "threads": 1, "cores_used": "AI Hub default", "compute_unit": self.compute_unit,
                "aihub_device": self.last_device.get("name") or self.device_name,
                "chipset": self.last_device.get("chipset") or self.chipset,
                "statistic": {"name": "aihub_estimated_inference_time",
                              "meaning": "AI Hub's execution_summary.estimated_inference_time and per-layer "
                                         "execution_time (us), converted to ms"}}


def _hub_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("qai-hub")
    except Exception:  # noqa: BLE001 - an optional client: no version is not an error
        return ""
