"""Compose a command's typed config from Hydra overrides, with errors a user can act on.

The typed schemas (the rooms' `config.py` and each layer's `config.py`) are registered in Hydra's
ConfigStore; every config group lives in `configs/`: YAML presets, and `configs/groups.py` for the
options whose facts live in code (SoCs from `latency_tables.socs`, search spaces from `search_spaces`). Composition checks every key, type and
choice; `to_typed` then builds the dataclasses (running their cross-field checks), all before any
data is touched. Every failure becomes one `ConfigError` line naming the key, with the closest valid
keys or options ("did you mean ...?").
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from importlib import resources
from typing import Any, Iterator, Sequence

from spnas.app.jobs.config import (ExportAppConfig, ProfileAppConfig, RetrievalEvalAppConfig, SearchAppConfig,
                                   SweepAppConfig, TrainAppConfig)
from spnas.app.pipeline.config import PipelineAppConfig
from spnas.app.serving.config import IndexAppConfig, ServeAppConfig
from spnas_core.config import did_you_mean
from spnas_core.errors import ConfigError


# Every command config, by the name Hydra registers it under (the rooms declare them beside their jobs).
APPS: dict[str, type] = {
    "train": TrainAppConfig, "search": SearchAppConfig, "sweep": SweepAppConfig, "export": ExportAppConfig,
    "retrieval_eval": RetrievalEvalAppConfig, "profile": ProfileAppConfig, "pipeline": PipelineAppConfig,
    "serve": ServeAppConfig, "index": IndexAppConfig,
}

CONFIG_DIR = str(resources.files("configs"))

# Keys renamed since an earlier release: a user typing the old name is told the new one.
RENAMED = {
    "search.lambda": "search.latency_lambda",
    "import": "source",
}
# Keys replaced by others with another meaning: the message says what to use instead.
REPLACED = {
    "search.epochs": "search.steps (optimisation steps; the epochs follow from the data size)",
    "search.warmup_epochs": "search.warmup_fraction (share of search.steps)",
    "search.max_steps_per_epoch": "search.steps (the whole search's length in steps)",
}

_registered = False


def register() -> None:
    """Register the command schemas, and the group options `configs/groups.py` defines from code, in Hydra's
    ConfigStore (once)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    from configs.groups import register_groups

    setup_globals()  # ${now:...}
    OmegaConf.register_new_resolver("spnas_data", _data_path, replace=True)
    cs = ConfigStore.instance()
    for name, cls in APPS.items():
        cs.store(name=name, node=cls)
    register_groups(cs)  # every group lives in configs/: the YAML presets, and configs/groups.py for the rest
    _registered = True


def _data_path(name: str) -> str:
    """`${spnas_data:cifar10-jpg}`: a data set folder under the user data folder (or $SPNAS_DATA)."""
    from spnas_core.paths import data_root

    return str(data_root() / name)


# ---------------------------------------------------------------------------------- compose
def compose_node(app: str, overrides: Sequence[str] = ()) -> Any:
    """The composed (untyped-view) DictConfig of a command; raises `ConfigError` on any problem."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    check_call(app, overrides)
    if app not in APPS:
        raise ConfigError(f"unknown command config '{app}'{did_you_mean(app, APPS)}; known: {', '.join(APPS)}")
    register()
    overrides = [_renamed_override(o) for o in overrides]
    _check_group_keys(app, overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base=None, job_name=f"spnas-{app}"):
            return compose(config_name=app, overrides=list(overrides))
    except ConfigError:
        raise
    except Exception as e:  # Hydra and OmegaConf raise a zoo of types; each becomes one clear line
        raise translate_error(e, app, overrides) from None
    finally:
        GlobalHydra.instance().clear()


def check_call(app: Any, overrides: Any) -> None:
    """`compose` takes the command's name, then its overrides as a list of strings; anything else (the old
    API's overrides alone, one string of overrides) is one `ConfigError` showing the expected call."""
    example = f"spnas.compose(\"search\", [\"soc=sd808\", \"search.steps=600\"]) (commands: {', '.join(APPS)})"
    if not isinstance(app, str):
        raise ConfigError(f"compose takes the command name first, then a list of overrides: {example}; got "
                          f"{type(app).__name__} {app!r} as the command")
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"compose takes its overrides as a list of strings: {example}; got {overrides!r}")


def to_typed(node: Any, app: str) -> Any:
    """Build the command's dataclasses from a composed config (resolving interpolations)."""
    from omegaconf import OmegaConf

    extra = list(_extra_keys(node))
    if extra:
        keys = list(all_keys(node))
        raise ConfigError(f"unknown config key `{extra[0]}`{did_you_mean(extra[0], [k for k in keys if k not in extra])}"
                          f" (keys added with + must exist in the schema); `spnas-{app.replace('_', '-')} --help` "
                          f"lists them all")
    try:
        cfg = OmegaConf.to_object(node)
    except ConfigError:
        raise
    except Exception as e:
        cause = _find_cause(e, ConfigError)
        if cause is not None:
            raise cause from None
        raise translate_error(e, app, []) from None
    _check_app(cfg)
    return cfg


def compose(app: str, overrides: Sequence[str] = ()) -> Any:
    """Compose and type a command's config: `compose("search", ["soc=sd808", "search.steps=600"])`."""
    return to_typed(compose_node(app, overrides), app)


def _check_app(cfg: Any) -> None:
    """Checks that need the project's registries (kept out of the neutral schema module)."""
    from search_spaces.reference import REFERENCE_NETS

    for b in getattr(cfg, "baselines", None) or []:
        if b not in REFERENCE_NETS:
            raise ConfigError(f"baselines: unknown reference net '{b}'{did_you_mean(b, REFERENCE_NETS)}; known: "
                              f"{', '.join(REFERENCE_NETS)}")
    tf = getattr(getattr(cfg, "search", None), "target_fraction_of", None)
    if tf is not None and tf.arch not in REFERENCE_NETS:
        raise ConfigError(f"search.target_fraction_of.arch: unknown reference net '{tf.arch}'"
                          f"{did_you_mean(tf.arch, REFERENCE_NETS)}; known: {', '.join(REFERENCE_NETS)}")


# ---------------------------------------------------------------------------------- errors
def _renamed_override(o: str) -> str:
    key = o.split("=", 1)[0].lstrip("+~")
    if key in REPLACED and "=" in o:
        raise ConfigError(f"`{key}` was replaced: use {REPLACED[key]} (see CHANGELOG.md)")
    if key in RENAMED and "=" in o:
        raise ConfigError(f"`{key}` was renamed: use `{RENAMED[key]}={o.split('=', 1)[1]}` (see CHANGELOG.md)")
    return o


# Keys a user carries over from another command: where this one takes them instead (and what they take).
ELSEWHERE = {"pipeline": {"soc": "socs"}, "search": {"socs": "soc"}, "sweep": {"socs": "soc"}}


def _check_group_keys(app: str, overrides: Sequence[str]) -> None:
    """`spnas-pipeline soc=sd855`: the pipeline searches a list of devices (`socs`), so Hydra's "Could not
    override 'soc'" would say nothing useful; say which key takes devices here, and check the device."""
    from latency_tables.socs import all_devices

    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        other = ELSEWHERE.get(app, {}).get(key.split(".", 1)[0])
        if other is None:
            continue
        known = list(all_devices())
        names = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        bad = next((n for n in names if n not in known), None)
        example = f"socs=[{','.join(names) or 'sd845'}]" if other == "socs" else f"soc={names[0] if names else 'sd845'}"
        what = (f"; '{bad}' is not a known device{did_you_mean(bad, known)} (known: {', '.join(known)})"
                if bad else "")
        raise ConfigError(f"spnas-{app.replace('_', '-')} has no `{key}`: it takes the device{'s' if other == 'socs' else ''}"
                          f" as `{other}` (e.g. {example}){what}")


def _find_cause(e: BaseException, kind: type) -> Any:
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def all_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a composed config (for did-you-mean)."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return
    for k in node.keys():
        full = f"{prefix}{k}"
        yield full
        try:
            child = node._get_node(k)
        except Exception:
            continue
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from all_keys(child, full + ".")


def _extra_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Keys of a composed config that its dataclass schema does not have (added with `+key=`)."""
    from omegaconf import DictConfig, OmegaConf

    cls = OmegaConf.get_type(node)
    names = {f.name for f in fields(cls)} if is_dataclass(cls) else None
    for k in node.keys():
        if names is not None and k not in names:
            yield f"{prefix}{k}"
            continue
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _extra_keys(child, f"{prefix}{k}.")


def _valid_keys(app: str) -> list[str]:
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(CONFIG_DIR, version_base=None):
            node = compose(config_name=app)
        GlobalHydra.instance().clear()
        return list(all_keys(node))
    except Exception:
        return []


def translate_error(e: BaseException, app: str, overrides: Sequence[str]) -> ConfigError:
    """One actionable line for a Hydra / OmegaConf composition error."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    text = str(e)
    yaml_err = _yaml_error(e)
    if yaml_err is not None:
        return yaml_err
    missing_cfg = _find_cause(e, MissingConfigException)
    if missing_cfg is not None or "Could not find '" in text:
        return _missing_option(text, app)
    oc = _find_cause(e, OmegaConfBaseException)
    key = getattr(oc, "full_key", None) if oc is not None else None
    if isinstance(oc, (ConfigKeyError, ConfigAttributeError)) and key:
        keys = _valid_keys(app)
        tail = key.rsplit(".", 1)[-1]
        hint = did_you_mean(key, keys) or did_you_mean(tail, [k.rsplit(".", 1)[-1] for k in keys])
        if key in RENAMED:
            hint = f" (renamed: use `{RENAMED[key]}`)"
        return ConfigError(f"unknown config key `{key}`{hint}; `spnas-{app.replace('_', '-')} --help` lists them all")
    if isinstance(oc, MissingMandatoryValue) and key:
        return ConfigError(f"`{key}` is required: pass {key}=<value> (see `spnas-{app.replace('_', '-')} --help`)")
    if isinstance(oc, ValidationError) and key:
        msg = str(oc.msg if hasattr(oc, "msg") else oc).splitlines()[0]
        return ConfigError(f"`{key}`: {msg}")
    first = _first_useful_line(text)
    m = re.search(r"in '?([\w/.-]+\.yaml)'?", text)
    where = f" ({m.group(1)})" if m else ""
    return ConfigError(f"config could not be composed{where}: {first}")


def _yaml_error(e: BaseException) -> ConfigError | None:
    """A YAML syntax error in a config file: `<file>:<line>:<column>: <problem>`."""
    import yaml

    y = _find_cause(e, yaml.MarkedYAMLError)
    if y is None:
        return None
    mark = y.context_mark or y.problem_mark
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else "a config file"
    what = " ".join(x for x in (y.context, y.problem) if x)
    return ConfigError(f"{where}: YAML syntax error ({what}); fix the file or remove it")


def _first_useful_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("full_key", "object_type", "reference_type", "Set the environment")):
            return line
    return text.strip()


def _missing_option(text: str, app: str) -> ConfigError:
    m = re.search(r"Could not find '([\w@./-]+)/([\w./-]+)'", text)
    if not m:
        return ConfigError(_first_useful_line(text))
    group, option = m.group(1), m.group(2)
    options = re.findall(r"^\s+(\S+)$", text.split("Available options", 1)[-1], flags=re.M) if "Available" in text \
        else group_options(group)
    return ConfigError(f"no `{group}` option named '{option}'{did_you_mean(option, options)}; "
                       f"available: {', '.join(options) or 'none'}")


def group_options(group: str) -> list[str]:
    """The options of a config group (YAML presets and registered schemas)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base=None):
            return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    finally:
        GlobalHydra.instance().clear()


# ---------------------------------------------------------------------------------- help
def app_groups(app: str) -> list[str]:
    """The config groups a command's defaults list selects (`data@retrieval.data` -> data)."""
    out: list[str] = []
    for d in _defaults(app):
        if isinstance(d, dict):
            g = next(iter(d)).split("@")[0]
            if g not in out:
                out.append(g)
    return out


def _defaults(app: str) -> list[Any]:
    for f in fields(APPS[app]):
        if f.name == "defaults":
            return f.default_factory()  # type: ignore[misc]
    return []


def option_rows(app: str) -> list[tuple[str, str, str]]:
    """(key, default, help) for every option of a command's composed default config."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    node = compose_node(app)
    rows: list[tuple[str, str, str]] = []

    def walk(n: Any, cls: Any, prefix: str) -> None:
        for k in n.keys():
            child = n._get_node(k)
            full = f"{prefix}{k}"
            helptext = _help_of(cls, str(k))
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                sub = OmegaConf.get_type(child)
                if is_dataclass(sub) and k != "soc_configs":
                    rows.append((full + ".", "", helptext))
                    walk(child, sub, full + ".")
                    continue
            if isinstance(child, (DictConfig, ListConfig)):
                val = OmegaConf.to_yaml(child, resolve=False).strip().replace("\n", " ") if not child._is_none() \
                    else "null"
                if isinstance(child, ListConfig):
                    val = "[" + ", ".join(str(x) for x in child._content) + "]" if child._content is not None else "null"
            else:
                raw = child._value()
                val = "null" if raw is None else (raw.name if hasattr(raw, "name") and not isinstance(raw, str)
                                                  else str(raw))
            rows.append((full, val, helptext))

    walk(node, APPS[app], "")
    return rows


def _help_of(cls: Any, name: str) -> str:
    if cls is None or not is_dataclass(cls):
        return ""
    for f in fields(cls):
        if f.name == name:
            h = str(f.metadata.get("help", ""))
            choices = _enum_choices(cls, name)
            if choices and "|" not in h:
                h = f"{h} ({' | '.join(choices)})" if h else " | ".join(choices)
            return h
    return ""


def _enum_choices(cls: Any, name: str) -> list[str]:
    import enum
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        return []
    t = hints.get(name)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return [m.name for m in t]
    return []


def render_help(app: str, summary: str, usage_extra: str = "") -> str:
    """`--help`: usage, the config groups with their options, then every option with its help."""
    from spnas._version import __version__

    cmd = f"spnas-{app.replace('_', '-')}"
    lines = [f"{cmd} {__version__}: {summary}", "",
             f"Usage: {cmd} {usage_extra}[group=option ...] [key=value ...] [--cfg job] [--help] [--version]", "",
             "Configuration groups (group=option; in configs/: YAML presets and configs/groups.py; schemas in "
             "spnas/app/<room>/config.py and each layer's config.py):"]
    for g in app_groups(app):
        lines.append(f"  {g}: {', '.join(group_options(g))}")
    lines += ["", "Options (key=default  help):"]
    rows = option_rows(app)
    width = min(46, max((len(k) + len(v) + 1 for k, v, _ in rows if not k.endswith(".")), default=20))
    for k, v, h in rows:
        if k.endswith("."):
            lines.append(f"  {k:<{width}}  {h}")
            continue
        kv = f"{k}={v}"
        if len(kv) > width:
            lines.append(f"  {kv}")
            if h:
                lines.append(f"  {'':<{width}}  {h}")
        else:
            lines.append(f"  {kv:<{width}}  {h}")
    lines += ["", "Errors exit with 2 (config), 3 (input), 4 (latency table), 5 (export refused), 6 (device), "
              "7 (retrieval), 8 (run folder state); SPNAS_TRACEBACK=1 shows tracebacks."]
    return "\n".join(lines) + "\n"
