"""`spnas-pipeline`: the whole comparison in one run. `config.py` is its command config, `run.py` the
stages per SoC (search, controls, retrain per seed, fine-tune, export, photo search) over the
libraries, `stages.py` the cached stage folders, `progress.py` the run-level progress line,
`evidence.py` the pure statistics a NAS claim must carry, and `report*.py` the report built only from
the stage outputs. The stages call the single-job rooms (`spnas.app.jobs`) for export and photo
search, never the command line."""
