"""A non-editable `pip install .` in a fresh venv: the commands and the API example run from anywhere,
and nothing is written into the installed package (tables, caches and runs go to SPNAS_HOME / run folders)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def photo_folder(grocery_root: Path, dest: Path, classes: int = 10, per_class: int = 16) -> Path:
    """A user's photo collection: `<dest>/<class>/*.jpg` (Grocery Store shop photos)."""
    for cls in sorted((grocery_root / "train" / "Fruit").iterdir())[:classes]:
        d = dest / cls.name
        d.mkdir(parents=True)
        for p in sorted(cls.rglob("*.jpg"))[:per_class]:
            shutil.copy(p, d / p.name)
    return dest


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_non_editable_install_runs_help_and_the_api_example(grocery_root, tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # dependencies come from the test environment (nothing is downloaded); spnas itself is installed
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    installed = site / "spnas"
    assert installed.is_dir() and (installed / "py.typed").exists() and (site / "configs" / "data").is_dir()
    assert not list(site.glob("__editable__*spnas*"))
    before = {p: _tree(site / p) for p in ("spnas", "latency_tables", "configs", "training", "nas")}
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "SPNAS_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    r = subprocess.run([str(venv / "bin" / "spnas-search"), "--help"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "search.latency_lambda" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([str(py), "-c", "import spnas; print(spnas.__file__)"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().startswith(str(site)), r.stdout + r.stderr
    photos = photo_folder(grocery_root, tmp_path / "photos")
    r = subprocess.run([str(py), str(src / "examples" / "photo_search.py"), "--photos", str(photos), "--out",
                        str(work / "run"), "--tiny"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "searched for sd845" in r.stdout and "exported" in r.stdout and "query" in r.stdout, r.stdout
    assert (work / "run" / "bundle" / "manifest.json").exists()
    assert (tmp_path / "home" / "cache" / "data").is_dir()  # the decode cache went to SPNAS_HOME
    for p, names in before.items():
        assert _tree(site / p) == names, f"the run wrote into the installed package {p}/"
