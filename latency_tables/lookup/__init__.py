"""The table format and prediction: op keys (`keys.py`, the row format, no torch), `LatencyTable`
(`table.py`, one device's file, its lookups and where tables are found), the per-op cost model a
modeled table answers with (`costmodel.py`), the prediction of an architecture's latency and its
differentiable form for the search (`predictor.py`, torch), a fleet's cost (`fleet.py`), FLOPs as a
cost table (`flops.py`), and the CPU fingerprint that ties a measured table to its machine
(`fingerprint.py`). Loading and reading a table imports no torch."""
