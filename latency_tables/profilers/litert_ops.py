"""`LiteRtOpProfiler`: a whole network's per-op profile on this CPU, from LiteRT's own profiler.

The Python `Interpreter` of ai-edge-litert has no op profiling, and no `benchmark_model` binary for
this machine can be installed from a package registry. LiteRT's C API (`libLiteRt.so`, shipped in
the ai-edge-litert wheel) does profile: a `CompiledModel` created with the runtime option
`enable_profiling = true` records every operator XNNPACK runs (`LiteRtCompiledModelGetProfiler`),
and `LiteRtGetProfileSummary` prints them with TFLite's profile summarizer, the code behind
benchmark_model's `--enable_op_profiling=true`. This module calls that API with ctypes, so the
table built from whole-network profiles on this CPU goes through the same parser and attribution
as a phone's benchmark_model output.

The end-to-end latency is timed with the profiler stopped (the table statistic: the fastest of
`repeats` runs' means); the per-op times come from `profile_runs` further runs with it started.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from spnas_core.errors import DeviceError

from .base import OpProfile, OpProfiler, Profiler, Timing, fastest_run, statistic_meta
from .parsers import parse_op_profile

_HW_CPU = 1  # kLiteRtHwAcceleratorCpu
_RUNTIME_OPTIONS_ID = b"runtime_options_string"  # LiteRtRuntimeOptionsT::Identifier(): a TOML payload
_CPU_OPTIONS_ID = b"xnnpack"  # LiteRtCpuOptionsT::Identifier() in this release: TOML, `num_threads = N`
_NOOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda p: None)


def _lib() -> ctypes.CDLL:
    import ai_edge_litert

    path = Path(ai_edge_litert.__file__).with_name("libLiteRt.so")
    if not path.is_file():
        raise DeviceError(f"{path} not found: this ai-edge-litert wheel ships no LiteRT C library, so this CPU cannot "
                          f"be op-profiled (use device=adb or aihub)")
    return ctypes.CDLL(str(path))


class _Api:
    """The few LiteRT C API calls the profile needs; every status is checked."""

    def __init__(self) -> None:
        self.lib = _lib()

    def __call__(self, fn: str, *args: Any) -> None:
        st = getattr(self.lib, fn)(*args)
        if st != 0:
            raise DeviceError(f"LiteRT {fn} failed with status {st}")


class LiteRtOpProfiler(Profiler, OpProfiler):
    """Per-op profiles of whole networks on this CPU (LiteRT CompiledModel, XNNPACK, its profiler)."""

    def __init__(self, threads: int = 1, cpus: Iterable[int] | None = None, warmup_runs: int = 10,
                 num_runs: int = 30, repeats: int = 3, profile_runs: int = 30) -> None:
        self.threads = int(threads)
        self.cpus = sorted(set(int(c) for c in cpus)) if cpus else None
        self.warmup_runs, self.num_runs = int(warmup_runs), int(num_runs)
        self.repeats, self.profile_runs = max(1, int(repeats)), max(1, int(profile_runs))
        self._api: _Api | None = None
        self._env = ctypes.c_void_p()

    def _setup(self) -> _Api:
        if self._api is None:
            self._api = _Api()
            self._api("LiteRtCreateEnvironment", 0, None, ctypes.byref(self._env))
        return self._api

    def profile_ops(self, tflite: str | os.PathLike) -> OpProfile:
        """End-to-end timing (profiler stopped) and the per-op profile (started) of one network."""
        timing, text = self._run(tflite)
        return OpProfile(tuple(parse_op_profile(text)), timing.value,
                         {"runtime": "LiteRT CompiledModel (XNNPACK) with its profiler", "compute_unit": "CPU",
                          "profile_runs": self.profile_runs, "timing": {"mean_ms": timing.mean_ms,
                                                                        "run_means_ms": list(timing.run_means_ms)}})

    def profile_summary(self, tflite: str | os.PathLike) -> str:
        """The profiler's own summary text (TFLite's profile summarizer, as benchmark_model prints it)."""
        return self._run(tflite)[1]

    def _run(self, tflite: str | os.PathLike) -> tuple[Timing, str]:
        api = self._setup()
        old = os.sched_getaffinity(0)
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        vp = ctypes.c_void_p
        model, opts, opaque, cpu, cm, prof = vp(), vp(), vp(), vp(), vp(), vp()
        payload = ctypes.create_string_buffer(b"enable_profiling = true\n")
        threads = ctypes.create_string_buffer(f"num_threads = {self.threads}\n".encode())
        buffers: list[int] = []
        try:
            api("LiteRtCreateModelFromFile", self._env, str(tflite).encode(), ctypes.byref(model))
            api("LiteRtCreateOptions", ctypes.byref(opts))
            api("LiteRtSetOptionsHardwareAccelerators", opts, _HW_CPU)
            api("LiteRtCreateOpaqueOptions", _RUNTIME_OPTIONS_ID, ctypes.cast(payload, vp), _NOOP, ctypes.byref(opaque))
            api("LiteRtAddOpaqueOptions", opts, opaque)
            api("LiteRtCreateOpaqueOptions", _CPU_OPTIONS_ID, ctypes.cast(threads, vp), _NOOP, ctypes.byref(cpu))
            api("LiteRtAddOpaqueOptions", opts, cpu)
            api("LiteRtCreateCompiledModel", self._env, model, opts, ctypes.byref(cm))
            api("LiteRtCompiledModelGetProfiler", cm, ctypes.byref(prof))
            ins, n_in, outs, n_out = self._buffers(api, model, cm)
            buffers += list(ins) + list(outs)

            sz = ctypes.c_size_t  # LiteRtParamIndex and counts are size_t: passed at their width

            def run() -> None:
                api("LiteRtRunCompiledModel", cm, sz(0), sz(n_in), ins, sz(n_out), outs)

            api("LiteRtStopProfiler", prof)
            for _ in range(self.warmup_runs):
                run()
            runs = []
            for _ in range(self.repeats):
                ts = []
                for _ in range(self.num_runs):
                    t = time.perf_counter_ns()
                    run()
                    ts.append((time.perf_counter_ns() - t) / 1e6)
                runs.append(Timing(float(np.mean(ts)), float(np.std(ts)), len(ts), float(np.median(ts)),
                                   float(np.min(ts)), float(np.percentile(ts, 10))))
            timing = fastest_run(runs)
            api("LiteRtResetProfiler", prof)
            api("LiteRtStartProfiler", prof)
            for _ in range(self.profile_runs):
                run()
            api("LiteRtStopProfiler", prof)
            summary = ctypes.c_char_p()
            api("LiteRtGetProfileSummary", prof, cm, ctypes.byref(summary))
            text = (summary.value or b"").decode(errors="replace")
        finally:
            for b in buffers:
                self._api.lib.LiteRtDestroyTensorBuffer(ctypes.c_void_p(b))  # type: ignore[union-attr]
            if cm:
                self._api.lib.LiteRtDestroyCompiledModel(cm)  # type: ignore[union-attr]
            if opts:
                self._api.lib.LiteRtDestroyOptions(opts)  # type: ignore[union-attr]
            if model:
                self._api.lib.LiteRtDestroyModel(model)  # type: ignore[union-attr]
            if self.cpus:
                os.sched_setaffinity(0, old)
        return timing, text

    def _buffers(self, api: _Api, model: ctypes.c_void_p, cm: ctypes.c_void_p) -> tuple[Any, int, Any, int]:
        """Managed host buffers for every input and output of the first signature (zeros: the
        latency of these networks does not depend on the values)."""
        vp = ctypes.c_void_p
        sig, sz = vp(), ctypes.c_size_t
        api("LiteRtGetModelSignature", model, sz(0), ctypes.byref(sig))
        out = []
        for count_fn, tensor_fn, req_fn in (
                ("LiteRtGetNumSignatureInputs", "LiteRtGetSignatureInputTensorByIndex",
                 "LiteRtGetCompiledModelInputBufferRequirements"),
                ("LiteRtGetNumSignatureOutputs", "LiteRtGetSignatureOutputTensorByIndex",
                 "LiteRtGetCompiledModelOutputBufferRequirements")):
            n = ctypes.c_size_t()
            api(count_fn, sig, ctypes.byref(n))
            bufs = []
            for i in range(n.value):
                tensor, req, buf = vp(), vp(), vp()
                api(tensor_fn, sig, sz(i), ctypes.byref(tensor))
                ttype = ctypes.create_string_buffer(512)  # LiteRtRankedTensorType, filled by the library
                api("LiteRtGetRankedTensorType", tensor, ttype)
                api(req_fn, cm, sz(0), sz(i), ctypes.byref(req))
                api("LiteRtCreateManagedTensorBufferFromRequirements", self._env, ttype, req, ctypes.byref(buf))
                bufs.append(buf)
                if count_fn.endswith("Inputs"):
                    self._fill(api, buf)
            out += [(vp * len(bufs))(*bufs), len(bufs)]
        return out[0], out[1], out[2], out[3]

    @staticmethod
    def _fill(api: _Api, buf: ctypes.c_void_p) -> None:
        """Standard-normal float32 input, as `LocalProfiler` feeds (fresh buffers hold whatever memory held)."""
        size, addr = ctypes.c_size_t(), ctypes.c_void_p()
        api("LiteRtGetTensorBufferSize", buf, ctypes.byref(size))
        api("LiteRtLockTensorBuffer", buf, ctypes.byref(addr), ctypes.c_int(1))  # kLiteRtTensorBufferLockModeWrite
        try:
            x = np.random.default_rng(0).standard_normal(size.value // 4).astype(np.float32)
            ctypes.memmove(addr, x.ctypes.data, x.nbytes)
        finally:
            api("LiteRtUnlockTensorBuffer", buf)

    def measure(self, tflite: str | os.PathLike) -> Timing:
        """End-to-end timing only (the `Profiler` interface)."""
        p = self.profile_ops(tflite)
        t = p.source["timing"]
        return Timing(t["mean_ms"], 0.0, self.num_runs, run_means_ms=tuple(t["run_means_ms"]))

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        from latency_tables.lookup.fingerprint import machine_fingerprint
        from .local import cpu_model

        return {"runtime": "LiteRT CompiledModel (ai-edge-litert C API, XNNPACK) with its op profiler",
                "runtime_version": metadata.version("ai-edge-litert"), "cpu_model": cpu_model(),
                "threads": self.threads, "cores_used": ",".join(map(str, self.cpus)) if self.cpus else "any",
                "warmup_runs": self.warmup_runs, "num_runs": self.num_runs, "repeats": self.repeats,
                "profile_runs": self.profile_runs, "compute_unit": "CPU",
                "statistic": statistic_meta(self.repeats, self.num_runs, self.warmup_runs),
                "fingerprint": machine_fingerprint(self.threads).to_dict()}
