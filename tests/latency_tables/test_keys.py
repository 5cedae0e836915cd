"""Op keys cover every layer of the space and reference nets, and round-trip to layers."""

import random

import pytest

from latency_tables.measuring.micro import micro_module
from latency_tables.lookup.keys import OpKeyError, layer_of_key, op_key, ops_of, ops_of_references, ops_of_space, parse_op_key
from search_spaces import REFERENCE_NETS, default_space


def test_key_format_matches_design():
    arch = default_space().decode(["k5_e6"] * 14, 224)
    keys = [op.key for op in ops_of(arch)]
    assert keys[0] == "Conv-input:224x224x3-output:112x112x16-kernel:3-stride:2-hs:1"
    assert "expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0-se:1-hs:0" in keys
    assert keys[-1] == "Logits-input:1x1x1280-output:1000"
    assert "AvgPool2D-input:7x7x960" in keys and "Conv_1-input:7x7x160-output:7x7x960-kernel:1-stride:1-hs:1" in keys


@pytest.mark.parametrize("resolution", [224, 32])
def test_enumeration_covers_every_layer_of_1000_sampled_archs(resolution):
    space = default_space()
    all_keys = set(ops_of_space(space, resolution, 1.0, [1000, 10]))
    rng = random.Random(7)
    for _ in range(1000):
        arch = space.sample(rng, resolution=resolution, num_classes=rng.choice([1000, 10]))
        ops = ops_of(arch)
        costed = [b for b in arch.blocks if b.kind != "skip"]
        assert len(ops) == len(costed) + 1  # one row per non-skip block, plus Logits
        missing = {op.key for op in ops} - all_keys
        assert not missing, missing


def test_reference_keys_and_round_trip_to_layers():
    keys = ops_of_references(224, [1000])
    for name, make in REFERENCE_NETS.items():
        for op in ops_of(make()):
            assert op.key in keys
    for key in keys:
        layer = layer_of_key(key)
        if not key.startswith("Logits"):
            assert op_key(layer) == key, key
        micro = micro_module(key)
        assert micro.input_shape[0] == 1


@pytest.mark.parametrize("bad", ["", "nonsense", "expanded_conv-input:AxB", "Foo-input:1x1x1",
                                 "expanded_conv-input:8x8x24-kernel"])
def test_malformed_keys_are_rejected(bad):
    with pytest.raises(OpKeyError):
        parse_op_key(bad)
