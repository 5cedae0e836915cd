"""Console entry points `spnas-<verb>`; each is a Hydra app over the `configs/` tree.

`spnas-train --help` lists the config groups, `spnas-train --cfg job` prints the composed config.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from typing import Any, Callable

CONFIG_DIR = str(resources.files("configs"))


def _to_dict(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _hydra_app(config_name: str, task: Callable[[dict[str, Any]], Any]) -> None:
    """Run `task(resolved config dict)` as a Hydra app; user errors print one line, exit 2."""
    import hydra

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=config_name)
    def _main(cfg: Any) -> None:
        logging.getLogger("absl").setLevel(logging.ERROR)
        try:
            task(_to_dict(cfg))
        except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
            if os.environ.get("SPNAS_TRACEBACK"):
                raise
            logging.getLogger("spnas").error("%s", e)
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    _main()


def _train(cfg: dict[str, Any]) -> None:
    from nas.train import train

    s = train(cfg)
    print(f"{s['arch']['name'] or 'arch'} on {s['data']['name']}: test top-1 {s['test_top1']:.4f}, "
          f"top-5 {s['test_top5']:.4f} ({s['epochs']} epochs, {s['train_wall_s']:.0f} s); "
          f"run folder: {cfg['run_dir']}")


def train_main() -> None:
    """`spnas-train`: train and evaluate a fixed architecture."""
    _hydra_app("train", _train)


PROFILE_COMMANDS = ("measure", "validate", "model", "import")


def profile_main() -> None:
    """`spnas-profile [measure|validate|model|import] key=value ...`: latency tables."""
    if len(sys.argv) > 1 and sys.argv[1] in PROFILE_COMMANDS:
        sys.argv[1] = f"command={sys.argv[1]}"

    def task(cfg: dict[str, Any]) -> None:
        from nas.profile import run

        run(cfg)

    _hydra_app("profile", task)
