"""Profilers: measure a .tflite file's latency on this CPU or on a phone over adb.

- `base.py`: the declared interface (`Profiler`, `Timing`, the table statistic);
- `local.py`: `LocalProfiler`, the LiteRT interpreter on this CPU;
- `adb.py`: `AdbProfiler`, TFLite's benchmark_model on a phone over adb;
- `parsers.py`: benchmark_model's output of every era.

Both reduce a model to the same statistic (`STATISTIC`, named in a table's meta): the mean of one
run's timed invocations, the fastest of `repeats` runs. `latency_tables.measuring.profiling.profile_keys`
drives either over a list of op keys.
"""

from .adb import RECONNECT_HINT, AdbProfiler, RemoteCommandError, elf_abi
from .base import STATISTIC, STATISTIC_HELP, Profiler, Timing, fastest_run, statistic_meta
from .local import LocalProfiler, cpu_model
from .parsers import normalise_output, parse_benchmark_output

__all__ = ["AdbProfiler", "LocalProfiler", "Profiler", "RECONNECT_HINT", "RemoteCommandError", "STATISTIC",
           "STATISTIC_HELP", "Timing", "cpu_model", "elf_abi", "fastest_run", "normalise_output",
           "parse_benchmark_output", "statistic_meta"]
