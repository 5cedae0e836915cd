"""The README's own-images command on a folder of 7 product classes (`own_photos_pipeline`): the tables
price a 7-class classifier (they once held classifier rows only for 10, 43, 81 and 1000 classes), every
stage gets a step budget (not 4 optimisation steps at batch 128), and photo search runs on the user's
own photos, not on the Grocery Store set."""

import json

from latency_tables.lookup.predictor import predict_latency_ms
from latency_tables.lookup.table import LatencyTable
from search_spaces import ArchSpec


def test_readme_own_images_command_on_7_classes(own_photos_pipeline):
    ov, run, report, _ = own_photos_pipeline
    assert (run / "report.md").stat().st_size > 200
    arch = ArchSpec.load(run / "search" / "sd845" / "arch.json")
    assert arch.num_classes == 7
    table = LatencyTable.load("sd845")
    assert "Logits-input:1x1x1280-output:7" not in table.ops  # computed by the table's model, marked so
    assert predict_latency_ms(arch.replace(resolution=224), table) > 0
    assert table.source_of("Logits-input:1x1x1280-output:7") == "model"
    assert any(h["soc"] == "sd845" for h in report["headline"])
    # a step budget: the small folder gets a smaller batch and the steps it was given
    s = json.loads((run / "train" / "mobilenet_v2" / "s0" / "summary.json").read_text())
    assert s["budget"]["total_steps"] == 12 and s["budget"]["batch_size"] == 16 and s["epochs"] >= 2
    # photo search on the user's photos: their test split queries their train split
    ret = json.loads((run / "retrieval" / "mobilenet_v2" / "s0" / "retrieval_eval.json").read_text())
    photos = next(o.split("=", 1)[1] for o in ov if o.startswith("data.root="))
    assert ret["data"] != "grocery" and "catalogue" not in ret["results"] and ret["results"]["train"]["gallery_size"] > 0
    ft = json.loads((run / "finetune" / "mobilenet_v2" / "s0" / "summary.json").read_text())
    assert ft["data"]["num_classes"] == 7 and photos
