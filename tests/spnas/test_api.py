"""`import spnas`: a small typed surface, cheap to import, the same configs as the commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

import spnas


def test_import_is_cheap_and_lazy():
    code = "import sys, spnas; print('torch' in sys.modules, 'hydra' in sys.modules, spnas.__version__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    torch_loaded, hydra_loaded, version = r.stdout.split()
    assert torch_loaded == "False" and hydra_loaded == "False" and version[0].isdigit()
    assert set(spnas.__all__) >= {"compose", "search", "train", "export", "load_table", "ArchSpec",
                                  "open_photo_index", "SpnasError"}
    with pytest.raises(AttributeError):
        spnas.no_such_thing  # noqa: B018


def test_architectures_and_tables():
    mbv2 = spnas.reference("mobilenet_v2")
    assert spnas.ArchSpec.parse(mbv2.to_string()).to_string() == mbv2.to_string()
    t = spnas.load_table("sd845")
    assert t.predict(mbv2) == pytest.approx(76.36, rel=0.01)
    with pytest.raises(spnas.SpnasError) as e:
        spnas.load_table("sd999")
    assert e.value.exit_code == 4 and "sd845" in str(e.value)  # a missing table is a table error (4)


def test_api_takes_a_config_or_overrides_not_both():
    cfg = spnas.compose("search", ["search.steps=30"])
    with pytest.raises(spnas.ConfigError, match="either"):
        spnas.search(cfg, overrides=["seed=1"])
    with pytest.raises(spnas.ConfigError, match="SearchAppConfig"):
        spnas.search(spnas.compose("train"))


def test_load_data_from_a_photo_folder(grocery_root, tmp_path):
    from .test_install import photo_folder

    photos = photo_folder(grocery_root, tmp_path / "photos", classes=3, per_class=10)
    d = spnas.load_data(photos, resolution=48)
    assert d.num_classes == 3 and d.resolution == 48
    assert len(d.train) + len(d.val) + len(d.test) == 30


@pytest.mark.parametrize("args", [(["search.steps=600"],), ("search", "search.steps=600"), ("search", [600])])
def test_a_wrong_call_to_compose_is_a_config_error_naming_the_expected_call(args):
    """The old API took the overrides alone: that (or one string of overrides) is a ConfigError that shows
    the call, not a TypeError from deep inside."""
    with pytest.raises(spnas.ConfigError, match=r'spnas\.compose\("search", \["soc=sd808", "search\.steps=600"\]\)'):
        spnas.compose(*args)
