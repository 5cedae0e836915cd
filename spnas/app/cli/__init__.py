"""The command line: `main.py` holds the `spnas-<command>` console entry points (one-line errors, exit
codes, `--help`, `--version`, a subcommand's first word rewritten into its config key), and `compose.py`
registers every command config with Hydra (`APPS`), composes a command's typed config from overrides
and says, for a wrong key, type or choice, what the user meant. It calls the other rooms' jobs and
holds no work of its own."""
