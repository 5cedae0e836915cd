"""The layering of docs/DESIGN.md holds: `lint-imports` keeps every contract in pyproject.toml."""

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

    graph = grimp.build_graph("spnas", "nas", "training", "search_spaces", "latency_tables", "export", "retrieval")
    pkgs = ["spnas.app", "nas", "training", "search_spaces", "latency_tables", "export", "retrieval"]
    for a in pkgs:
        for b in pkgs:
            if a != b and graph.chain_exists(a, b, as_packages=True):
                assert not graph.chain_exists(b, a, as_packages=True), f"import cycle between {a} and {b}"
