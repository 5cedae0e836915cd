"""Every `spnas-<verb>` is a Hydra app: --help lists the config groups, --cfg job prints the config."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
APPS = ["spnas-train", "spnas-profile", "spnas-search", "spnas-sweep", "spnas-export", "spnas-retrieval-eval",
        "spnas-serve", "spnas-pipeline"]


@pytest.mark.parametrize("app", APPS)
def test_help_lists_config_groups(app):
    r = subprocess.run([str(BIN / app), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Configuration groups" in r.stdout
    for group in ("data:", "train:", "soc:", "search:", "export:", "experiment:"):
        assert group in r.stdout
    assert app in r.stdout


@pytest.mark.parametrize("app", APPS)
def test_cfg_job_prints_config(app):
    r = subprocess.run([str(BIN / app), "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) > 5


def test_bad_override_is_a_clear_error():
    r = subprocess.run([str(BIN / "spnas-train"), "data=nonexistent"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "nonexistent" in r.stderr
