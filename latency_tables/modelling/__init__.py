"""Modelling tables: the public phone measurements used as fit and validation data (`sources.py`) and
the modeled Snapdragon tables fitted to them and mapped to each SoC (`modeled.py`), with the per-op
cost model of `latency_tables.lookup.costmodel`."""
