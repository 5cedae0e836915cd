"""A pipeline stage cannot go stale: it is skipped only when its key (inputs hashed by content, not by
path) is unchanged and every output it recorded is still there byte for byte; `init=inherit` retrains
follow the supernet's bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from spnas.app.pipeline.stages import Stage

from ..conftest import compose


def test_stage_reruns_when_an_output_is_deleted_or_edited(tmp_path):
    calls = []

    def work(folder: Path, resume: bool) -> dict:
        calls.append(resume)
        (folder / "sub").mkdir(exist_ok=True)
        (folder / "model.pt").write_bytes(b"weights" * 100)
        (folder / "sub" / "arch.json").write_text('{"a": 1}')
        return {"ok": True}

    def run() -> str:
        return Stage(tmp_path, "train", "m", {"x": 1}, set()).run(work)[1]

    assert run() == "ran"
    assert run() == "skipped" and len(calls) == 1
    (tmp_path / "train" / "m" / "sub" / "arch.json").unlink()
    assert run() == "ran"  # an output is gone: the stage did not really finish any more
    (tmp_path / "train" / "m" / "model.pt").write_bytes(b"other bytes, same name")
    assert run() == "ran"  # an output was edited: its recorded hash no longer matches
    assert run() == "skipped" and len(calls) == 3
    assert Stage(tmp_path, "train", "m", {"x": 2}, set()).run(work)[1] == "ran"  # a changed key still reruns


def test_a_failed_stage_keeps_its_last_good_result_and_a_rerun_continues(tmp_path):
    """New inputs that fail (a malformed table, an error, Ctrl-C) never cost the finished result: the stage
    says "failed", the old inputs skip to the old result, the new inputs continue the failed attempt."""
    import json

    import pytest

    from spnas_core.errors import TableError

    def good(folder: Path, resume: bool) -> dict:
        (folder / "arch.json").write_text('{"old": true}')
        return {"arch": str(folder / "arch.json")}

    stage = lambda key: Stage(tmp_path, "search", "sd845", {"table": key}, set())  # noqa: E731
    assert stage("sd845").run(good)[1] == "ran"
    folder = tmp_path / "search" / "sd845"

    seen = []

    def bad_table(folder: Path, resume: bool) -> dict:
        seen.append(resume)
        (folder / "last.pt").write_bytes(b"half a search")  # work done before the failure
        raise TableError("latency table broken.json is malformed at ops: not an object")

    with pytest.raises(TableError):
        stage("broken").run(bad_table)
    st = json.loads((folder / "stage.json").read_text())
    assert st["status"] == "failed" and "malformed" in st["error"]
    assert st["last_good"]["status"] == "done"
    assert json.loads((folder / "arch.json").read_text()) == {"old": True}  # nothing finished was deleted
    assert not (folder / "last.pt").exists()  # the attempt worked beside it

    result, how = stage("sd845").run(good)  # the old inputs: the finished result, not a rerun
    assert how == "skipped" and result == {"arch": str(folder / "arch.json")}
    assert json.loads((folder / "stage.json").read_text())["status"] == "done"

    with pytest.raises(TableError):
        stage("broken").run(bad_table)

    def fixed(folder: Path, resume: bool) -> dict:
        seen.append(resume)
        assert (folder / "last.pt").read_bytes() == b"half a search"  # it continues where it failed
        (folder / "arch.json").write_text('{"new": true}')
        return {"arch": str(folder / "arch.json")}

    result, how = stage("broken").run(fixed)
    assert how == "resumed" and seen == [False, True, True]
    assert result == {"arch": str(folder / "arch.json")}  # paths point into the stage folder, not the attempt's
    assert json.loads((folder / "arch.json").read_text()) == {"new": True}
    assert not any(p.name.startswith(".sd845") for p in folder.parent.iterdir())


def _cifar_copy(cifar_root: Path, dest: Path, n_train: int = 24, n_test: int = 6) -> Path:
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in sorted(p.name for p in (cifar_root / split).iterdir())[:4]:
            (dest / split / cls).mkdir(parents=True)
            for p in sorted((cifar_root / split / cls).glob("*.jpg"))[:n]:
                shutil.copy2(p, dest / split / cls / p.name)
    return dest


def _pipeline_cfg(tmp: Path, data_root: Path, extra: list[str] = ()):
    return compose("pipeline", ["experiment=demo", "socs=[sd845]", "baselines=[]", f"run_dir={tmp / 'run'}",
                                "data=cifar10", f"data.root={data_root}", f"data.cache_dir={tmp / 'cache'}",
                                "search.steps=6", "search.warmup_fraction=0", "search.min_threshold_updates=0",
                                "search.finalists.radius=0",
                                "search.batch_size=32", "train.steps=2", "train.batch_size=32",
                                "train.max_steps_per_epoch=2", "train.min_steps=0", "init=inherit", "threads=2", *extra])


def _stages(tmp: Path, data_root: Path) -> dict[str, str]:
    from spnas.app.pipeline.run import PipelineRun, search_stage, train_stage, warmup_stage

    cfg = _pipeline_cfg(tmp, data_root)
    run = PipelineRun(cfg, Path(cfg.run_dir), set())
    m = search_stage(run, "sd845", warmup_stage(run))
    train_stage(run, m, 0)
    return {e["stage"]: e["how"] for e in run.events if not e["stage"].startswith("warmup/")}


def test_pipeline_stages_follow_input_bytes_not_paths(cifar_root, tmp_path):
    data = _cifar_copy(cifar_root, tmp_path / "cifar")
    assert _stages(tmp_path, data) == {"search/sd845": "ran", "train/spnas-sd845/s0": "ran"}
    assert _stages(tmp_path, data) == {"search/sd845": "skipped", "train/spnas-sd845/s0": "skipped"}
    # the same data set at another path (copied with its times): the same content, nothing reruns
    moved = tmp_path / "elsewhere" / "cifar"
    shutil.copytree(data, moved)
    assert _stages(tmp_path, moved) == {"search/sd845": "skipped", "train/spnas-sd845/s0": "skipped"}
    # one training photo's bytes change under the same path: everything downstream reruns
    victim = sorted((data / "train").rglob("*.jpg"))[3]
    victim.write_bytes(sorted((cifar_root / "train").rglob("*.jpg"))[-1].read_bytes())
    assert _stages(tmp_path, data) == {"search/sd845": "ran", "train/spnas-sd845/s0": "ran"}
    # a deleted output reruns its stage only
    (tmp_path / "run" / "search" / "sd845" / "arch.json").unlink()
    how = _stages(tmp_path, data)
    assert how["search/sd845"] == "ran"
    # init=inherit: the retrain's key holds the supernet's hash, so a different supernet retrains
    sup = tmp_path / "run" / "search" / "sd845" / "supernet.pt"
    assert _stages(tmp_path, data)["train/spnas-sd845/s0"] == "skipped"
    blob = torch.load(sup, weights_only=True)
    k = next(k for k, v in blob["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    blob["state_dict"][k] = blob["state_dict"][k] + 0.5
    torch.save(blob, sup)
    how = _stages(tmp_path, data)
    assert how["search/sd845"] == "ran"  # the search's own output changed: it is redone first ...
    assert how["train/spnas-sd845/s0"] == "ran"  # ... and the retrain follows the new supernet


def test_decoded_data_cache_is_keyed_by_content(cifar_root, tmp_path):
    import numpy as np

    from training.config import DataConfig, DataKind
    from training.datasets import load_data

    data = _cifar_copy(cifar_root, tmp_path / "cifar")
    cache = tmp_path / "cache"

    def load(root: Path):
        return load_data(DataConfig(name="c", kind=DataKind.cifar10, root=str(root), resolution=32), 0, cache)

    a = load(data)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1
    # no pickled objects: every array loads with pickles refused, none of dtype object
    with np.load(files[0], allow_pickle=False) as z:
        assert all(z[k].dtype.kind != "O" for k in z.files)
    # a moved copy hits the same cache and its ids point into the new folder
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    b = load(moved)
    assert sorted(cache.glob("*.npz")) == files
    assert np.array_equal(a.train.images, b.train.images)
    assert all(i.startswith(str(moved)) for i in b.train.ids + b.test.ids)
    assert all(Path(i).is_file() for i in b.test.ids)
    # new bytes under the same path: decoded again, not served stale
    i = 5
    victim = Path(a.train.ids[i])
    victim.write_bytes(sorted((cifar_root / "train").rglob("*.jpg"))[-1].read_bytes())
    c = load(data)
    assert len(list(cache.glob("*.npz"))) == 2
    j = c.train.ids.index(str(victim))
    assert not np.array_equal(c.train.images[j], a.train.images[i])
