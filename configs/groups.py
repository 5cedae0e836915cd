"""Every Hydra config group of spnas, in one folder: the YAML presets beside this file (`data/`,
`search/`, `experiment/`) and, registered here, the options whose facts live in code, so that adding
one in its registry adds the option:

- `soc/`: one option per device and cost of `latency_tables.socs.cost_options()` (the Snapdragon SoCs,
  `host`, `flops`);
- `space/`: one option per search space of `search_spaces.spaces.SPACES`;
- `search/default`, `train/default`, `export/default`: each layer's config with its defaults (the YAML
  presets of `search/` build on `default`).

The command configs themselves (the schemas, `spnas.app.cli.compose.APPS`) are registered by the
application; this module imports no Hydra (it is given the ConfigStore).
"""

from __future__ import annotations

from typing import Any

from export.config import ExportConfig
from latency_tables.config import SocConfig
from latency_tables.socs import SocFacts, cost_options
from nas.config import SearchConfig
from search_spaces.config import SpaceConfig, StageConfig
from training.config import TrainConfig


def soc_option(facts: SocFacts) -> SocConfig:
    """The `soc/<name>` option of a device's facts."""
    return SocConfig(name=facts.name, soc=facts.soc, table=facts.table_name, abi=facts.abi,
                     taskset_mask=facts.taskset_mask)


def space_option(space: Any) -> SpaceConfig:
    """The `space/<name>` option of a `SearchSpace`."""
    d = space.to_dict()
    return SpaceConfig(name=d["name"], stem=d["stem"], fixed=list(d["fixed"]),
                       stages=[StageConfig(**s) for s in d["stages"]], head=list(d["head"]),
                       choices=list(d["choices"]), allow_skip=d["allow_skip"], first_skip=d["first_skip"])


def register_groups(cs: Any) -> None:
    """Store the code-defined group options in Hydra's ConfigStore `cs`."""
    from search_spaces.spaces import SPACES

    cs.store(group="search", name="default", node=SearchConfig)
    cs.store(group="train", name="default", node=TrainConfig)
    cs.store(group="export", name="default", node=ExportConfig)
    for facts in cost_options().values():
        cs.store(group="soc", name=facts.name, node=soc_option(facts))
    for space in SPACES.values():
        cs.store(group="space", name=space.name, node=space_option(space))
