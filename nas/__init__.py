"""The search itself: Single-Path superkernel layers, decisions, latency loss, search loop, sweeps.

Imports `search_spaces`, `latency_tables` and `training`; knows nothing of export or retrieval.
"""
