"""The layering of docs/design.md holds: `lint-imports` keeps every contract in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " 0 broken" in r.stdout, r.stdout[-2000:]


def test_no_import_cycles_between_packages():
    import grimp

    graph = grimp.build_graph("spnas", "spnas_core", "nas", "training", "search_spaces", "latency_tables", "export",
                              "retrieval", cache_dir=None)
    pkgs = ["spnas_core", "spnas.app", "nas", "training", "search_spaces", "latency_tables", "export", "retrieval"]
    for a in pkgs:
        for b in pkgs:
            if a != b and graph.chain_exists(a, b, as_packages=True):
                assert not graph.chain_exists(b, a, as_packages=True), f"import cycle between {a} and {b}"


LIBRARY = ("spnas_core", "search_spaces", "latency_tables", "training", "nas", "export", "retrieval", "spnas.app")


def _is_package(graph, module: str) -> bool:
    return bool(graph.find_children(module))


def test_no_module_of_the_library_is_part_of_an_import_cycle():
    """Module level, lazy (in-function) imports included: a circle is a design smell even when Python
    tolerates it. Re-exports through a package's `__init__` are not counted (they carry no logic)."""
    import grimp

    graph = grimp.build_graph("spnas", "spnas_core", "nas", "training", "search_spaces", "latency_tables", "export",
                              "retrieval", cache_dir=None)
    mine = sorted(m for m in graph.modules if m.startswith(LIBRARY) and not _is_package(graph, m))
    cycles = []
    for m in mine:
        for n in graph.find_modules_directly_imported_by(m):
            if n in mine and n != m and graph.find_shortest_chain(importer=n, imported=m):
                chain = graph.find_shortest_chain(importer=n, imported=m)
                if not any(_is_package(graph, x) for x in chain):
                    cycles.append(" -> ".join((m, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_composing_a_config_does_not_load_torch():
    """`--help`, `--cfg job` and config errors compose configs only: they must not pay ~1.6 s for torch
    (search_spaces' builder and training's loops are imported on first use)."""
    import subprocess
    import sys

    code = ("import sys, spnas\nfrom spnas.app.cli import compose\n"
            "cfg = compose.compose('pipeline', ['experiment=demo'])\n"
            "from search_spaces import ArchSpec, default_space\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
