"""The `spnas-<verb>` commands: --help with every option, --cfg job, --version, one-line errors with
distinct exit codes (2 config, 3 input, 4 latency table, 5 export refused, 8 run-folder state)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spnas_core.errors import EXIT_CONFIG, EXIT_EXPORT, EXIT_INPUT, EXIT_TABLE

from ..conftest import fmnist_args

BIN = Path(sys.executable).parent
APPS = ["spnas-train", "spnas-profile", "spnas-search", "spnas-sweep", "spnas-export", "spnas-retrieval-eval",
        "spnas-serve", "spnas-index", "spnas-pipeline"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, app: str) -> str:
    """The error a CLI printed: exactly one line on stderr starting with `<app>: error:`, no traceback."""
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{app}: error:")]
    assert len(errs) == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return errs[0]


@pytest.mark.parametrize("app", APPS)
def test_help_lists_groups_and_every_option_with_its_comment(app):
    r = run(app, "--help", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Configuration groups" in r.stdout and app in r.stdout and "experiment:" in r.stdout
    assert "seed=0" in r.stdout and "seed of data order" in r.stdout  # key=default  help
    if app in ("spnas-search", "spnas-pipeline", "spnas-sweep"):
        for line in ("search.latency_lambda=", "weight of the latency term", "search.loss=",
                     "log | target | target_one_sided"):
            assert line in r.stdout, line
    if app == "spnas-profile":
        for sub in ("measure", "validate", "model", "import"):
            assert sub in r.stdout.split("Options")[0], sub


@pytest.mark.parametrize("app", APPS)
def test_cfg_job_prints_config_and_version(app):
    r = run(app, "--cfg", "job", timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) > 5
    v = run(app, "--version", timeout=60)
    assert v.returncode == 0 and v.stdout.strip().startswith(app + " ") and v.stdout.strip()[-1].isdigit()


def test_config_errors_exit_2_before_any_data(tmp_path):
    r = run("spnas-search", "search.steps=abc", "--cfg", "job")
    assert r.returncode == EXIT_CONFIG and "search.steps" in one_line_error(r, "spnas-search")
    r = run("spnas-search", "search.lamda=0.1", f"data.root={tmp_path / 'none'}")
    assert r.returncode == EXIT_CONFIG and "did you mean `search.latency_lambda`" in one_line_error(r, "spnas-search")
    r = run("spnas-train", "data=nonexistent")
    assert r.returncode == EXIT_CONFIG and "nonexistent" in one_line_error(r, "spnas-train")
    r = run("spnas-pipeline", "socs=[sd855]")
    assert r.returncode == EXIT_CONFIG and "sd845" in one_line_error(r, "spnas-pipeline")
    r = run("spnas-search", "--frobnicate")
    assert r.returncode == EXIT_CONFIG


def test_missing_file_is_one_line(tmp_path):
    r = run("spnas-export", f"checkpoint={tmp_path / 'none.pt'}", f"out_dir={tmp_path / 'b'}")
    line = one_line_error(r, "spnas-export")
    assert r.returncode == EXIT_INPUT and "none.pt" in line and "spnas-train" in line
    r = run("spnas-train", "data=folder", f"data.root={tmp_path / 'photos'}", f"run_dir={tmp_path / 'r'}")
    line = one_line_error(r, "spnas-train")
    assert r.returncode == EXIT_INPUT and "photos" in line and "class" in line


def test_bad_table_is_one_line_with_file_and_line(tmp_path, cifar_root):
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "spnas.lut/1",\n "meta": {"device": "x",\n "ops": {')  # cut mid-file
    r = run("spnas-search", f"soc.table={bad}", f"data.root={cifar_root}", "data.train_limit=64",
            "data.test_limit=10", f"data.cache_dir={tmp_path / 'c'}", f"run_dir={tmp_path / 'r'}")
    line = one_line_error(r, "spnas-search")
    assert r.returncode == EXIT_TABLE and f"{bad}:3:" in line, line
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"format": "spnas.lut/1", "meta": {"device": "x"}, "ops": {"k": {"mean_ms": 1}}}))
    r = run("spnas-search", f"soc.table={malformed}", f"data.root={cifar_root}", "data.train_limit=64",
            "data.test_limit=10", f"data.cache_dir={tmp_path / 'c'}", f"run_dir={tmp_path / 'r2'}")
    assert r.returncode == EXIT_TABLE and "malformed" in one_line_error(r, "spnas-search")


def test_refused_export_is_one_line(small_model, fashion_mnist_root, tmp_path):
    """A bundle that fails its MediaPipe parity is refused: one line, the export exit code, and nothing written
    (neither the bundle nor its temporary folder). The suite's one refused export: a conversion costs ~20 s."""
    r = run("spnas-export", f"checkpoint={small_model}", *fmnist_args(fashion_mnist_root, tmp_path),
            f"out_dir={tmp_path / 'refused'}", "export.measure_latency=false", "export.int8=disabled",
            "export.tolerances.mediapipe_min_cos=1.01", timeout=600)
    line = one_line_error(r, "spnas-export")
    assert r.returncode == EXIT_EXPORT and "parity failed" in line and "MediaPipe" in line
    assert not (tmp_path / "refused").exists()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".refused")], "temporary folder left behind"
    assert r.stderr.count("parity failed") == 1  # no duplicated log line


def test_yaml_preset_error_names_the_file(tmp_path):
    """A broken preset in a config group: the error names the file (and the YAML line)."""
    from spnas.app.cli import compose as c

    broken = Path(c.CONFIG_DIR) / "data" / "zz_broken_test.yaml"
    try:
        broken.write_text("name: broken\nkind: folder\nroot: [unclosed\n")
        r = run("spnas-train", "data=zz_broken_test")
        line = one_line_error(r, "spnas-train")
        assert r.returncode == EXIT_CONFIG and "zz_broken_test" in line, line
    finally:
        broken.unlink(missing_ok=True)
