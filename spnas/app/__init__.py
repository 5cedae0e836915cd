"""The application floor: what the commands run, composed from the layers below.

- `config`: the command configs (`SearchAppConfig`, ...), each made of the layers' own configs;
  `compose` registers them with Hydra and types them; `cli` is the `spnas-<command>` entry points.
- `commands`: a command config unpacked into the library's plain arguments (the CLIs and the Python
  API call these).
- jobs that compose several layers: `export_job` (export + latency on this CPU and every table),
  `retrieval_eval` (photo search quality), `pipeline` with its `stages` and `report`, `serve`.
- `profile`: the `spnas-profile` command over `latency_tables`.

No module here is imported by the library; no job calls another command's module.
"""
