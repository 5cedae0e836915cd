"""The application floor: what the commands run, composed from the layers below, in rooms by job.

- `cli/`: the `spnas-<command>` entry points and the composition of their typed configs with Hydra;
- `pipeline/`: `spnas-pipeline` (search -> controls -> retrain -> fine-tune -> export -> photo search ->
  report), its stage folders, the evidence and the report;
- `jobs/`: the single-job commands (train, search, sweep, export, retrieval-eval, profile), each a
  command config unpacked into the plain arguments of the libraries it joins;
- `serving/`: the photo search's commands (`spnas-serve`, `spnas-index`);
- `base.py`: the settings every command has (`RunConfig`).

The rooms import downward only: `cli` > `pipeline` > `jobs` | `serving` > `base` (import-linter keeps it).
No module here is imported by the library.
"""
