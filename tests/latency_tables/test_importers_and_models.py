"""Importers on small fixtures in the public formats, and the modeled Snapdragon tables."""

from pathlib import Path

import numpy as np
import pytest

from latency_tables.importers import import_ofa_yaml, import_spnas_json
from latency_tables.keys import ops_of, ops_of_space
from latency_tables.modeled import SOCS, calibrate, modeled_table
from latency_tables.predictor import predict_latency_ms
from latency_tables.table import LatencyTable
from search_spaces import default_space, mobilenet_v2

FIX = Path(__file__).with_name("fixtures")


def test_import_spnas_runtime_json(tmp_path):
    space = default_space()
    t = import_spnas_json(FIX / "spnas_runtime.json", space)
    # layer 0 (first of the 24-channel stage, stride 2): choice 3 is k5e6
    k = "expanded_conv-input:112x112x16-output:56x56x24-expand:6-kernel:5-stride:2-idskip:0-se:0-hs:0"
    assert t.ops[k].mean_ms == pytest.approx(2.30)
    # layers 3 and 4 share a shape (40-channel stage, stride 1): the rows are averaged
    k2 = "expanded_conv-input:28x28x40-output:28x28x40-expand:3-kernel:3-stride:1-idskip:1-se:1-hs:0"
    assert t.ops[k2].mean_ms == pytest.approx(0.70) and t.ops[k2].count == 2
    assert t.provenance == "imported" and t.meta["complete"] is False
    t.save(tmp_path / "x.json")
    with pytest.raises(ValueError, match="another space"):
        _bad_spnas(tmp_path, space)


def _bad_spnas(tmp_path, space):
    p = tmp_path / "short.json"
    p.write_text('{"0": {"0": 1, "1": 2, "2": 3, "3": 4}}')
    return import_spnas_json(p, space)


def test_import_proxyless_yaml_ratio():
    t = import_ofa_yaml(FIX / "proxyless_gpu8.yaml", expand="ratio")
    assert t.ops["expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:5-stride:2-idskip:0-se:0-hs:0"
                 ].mean_ms == pytest.approx(2.31)
    assert "Conv-input:224x224x3-output:112x112x32-kernel:3-stride:2-hs:0" in t.ops
    assert "Conv_1-input:7x7x320-output:7x7x1280-kernel:1-stride:1-hs:0" in t.ops
    assert "Logits-input:1x1x1280-output:1000" in t.ops


def test_import_ofa_mbv3_yaml_channels_and_var():
    t = import_ofa_yaml(FIX / "ofa_mbv3_note10.yaml", expand="channels")
    row = t.ops["expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0-se:1-hs:0"]
    assert row.mean_ms == pytest.approx(1.84) and row.std_ms == pytest.approx(0.05)
    assert "expanded_conv-input:14x14x80-output:14x14x80-expand:6-kernel:3-stride:1-idskip:1-se:0-hs:1" in t.ops
    assert "Conv_2-input:1x1x960-output:1x1x1280-hs:1" in t.ops
    # the imported key is the one our own arch enumerates
    keys = set(ops_of_space(default_space(), 224))
    assert "expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0-se:1-hs:0" in keys


@pytest.mark.parametrize("soc", sorted(SOCS))
def test_modeled_tables_reproduce_calibration_within_3pct(soc):
    shipped = LatencyTable.load(soc)
    got = predict_latency_ms(mobilenet_v2(), shipped)
    assert abs(got - SOCS[soc].calibration_ms) / SOCS[soc].calibration_ms <= 0.03
    fresh = modeled_table(SOCS[soc], [op.key for op in ops_of(mobilenet_v2())])
    assert predict_latency_ms(mobilenet_v2(), fresh) == pytest.approx(SOCS[soc].calibration_ms, rel=1e-3)


def test_socs_rank_ops_differently():
    from scipy.stats import kendalltau

    keys = ops_of_space(default_space(), 224)
    m845, m808 = calibrate(SOCS["sd845"]), calibrate(SOCS["sd808"])
    a = np.array([m845.op_ms(k) for k in keys])
    b = np.array([m808.op_ms(k) for k in keys])
    ratio = b / a
    assert ratio.max() / ratio.min() > 1.1, "sd808 must not be sd845 scaled by a constant"
    assert kendalltau(a, b)[0] < 1.0
