"""Importing tables published by other projects: Single-Path NAS's runtime model and OFA /
ProxylessNAS lookup tables (`importers.py`), and whether an imported file is whole (`completeness.py`)."""
