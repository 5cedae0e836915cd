"""The single-job commands, each joining libraries for one job: `config.py` holds their command
configs; `commands.py` unpacks train, search, sweep and export configs into the library's plain
arguments (the CLIs and the Python API both call it); `export.py` is a trained model to a verified
bundle with its latencies (export + training's data + the latency tables), `retrieval_eval.py` a
bundle's photo-search quality (retrieval + export + training's data), `profile.py` the latency-table
workflows (measure, validate, model, import, whole-network) with the export stage's converter
injected. A job takes its libraries' configs and plain arguments, never another command's config."""
