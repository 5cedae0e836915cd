"""Validating tables: how well a table predicts whole networks (`validate.py`: error metrics, the
validation sample, the scatter plot) and how well the modeled tables hold against measurements they
were not fitted to (`grounding.py`)."""
