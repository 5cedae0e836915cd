"""What an architecture costs on a device, in sub-packages by concern: `lookup/` (the op-key and table
format, prediction), `profilers/` (the declared `Profiler` interface, its implementations and their
factory), `measuring/` (tables measured here or on a phone), `modelling/` (the modeled Snapdragon
tables), `importing/` (tables from other projects), `validating/` (how well tables predict). `config.py`
holds the layer's configs and `socs.py` the one registry of target SoCs."""
