"""Measuring tables: the single-op PyTorch micro-models of op keys and their .tflite cache (`micro.py`),
profiling every key of a table with any `Profiler` (`profiling.py`), this machine's tables measured,
calibrated, spot-checked and validated (`host.py`), and tables built from a few whole-network
profiles (`covering.py` picks the networks, `attribution.py` maps a profile back to op keys,
`wholenet.py` runs it). The profilers themselves are in `latency_tables.profilers`."""
