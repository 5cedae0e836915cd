"""The photo search's commands: `config.py` holds `spnas-serve` and `spnas-index`'s command configs
(composed from `retrieval.config`), `serve.py` runs the index services and the gateway on one machine
(with the seed photos), `index.py` the index-version jobs a scheduler runs (build, build-due, list,
fetch, serve one version, retain). Nothing here trains or searches."""
