"""Names of a package imported on first use (PEP 562): a package whose heavy modules (torch) are not
needed by everything that imports it, e.g. config composition for `--help`."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping


def lazy_names(package: str, names: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `names[name]` (a module relative to `package`) on first use of
    `name` and caches the value in the package's `namespace` (its `globals()`), so it is looked up once."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
