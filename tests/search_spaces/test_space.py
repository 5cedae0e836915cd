"""The MobileNetV3-derived search space as data."""

import random

import pytest

from search_spaces import SKIP, ArchSpecError, SearchSpace, build_model, default_space
from search_spaces.space import Stage


def test_structure_follows_mobilenet_v3_large():
    s = default_space()
    assert [(st.channels, st.repeats, st.stride, st.se, st.act) for st in s.stages] == [
        (24, 2, 2, False, "re"), (40, 3, 2, True, "re"), (80, 4, 2, False, "hs"),
        (112, 2, 1, True, "hs"), (160, 3, 2, True, "hs")]
    assert s.num_layers == 14


def test_layer_choices_and_count():
    s = default_space()
    choices = s.enumerate_layer_choices()
    for slot, c in zip(s.slots, choices):
        assert set(c) >= {"k3_e3", "k3_e6", "k5_e3", "k5_e6"}
        assert (SKIP in c) == (slot.position > 0), "first layer of a stage must not be skippable"
    assert s.num_architectures() == 4**5 * 5**9


def test_decode_encode_and_skip_rules():
    s = default_space()
    rng = random.Random(0)
    for _ in range(200):
        choices = [rng.choice(c) for c in s.enumerate_layer_choices()]
        arch = s.decode(choices, resolution=32, num_classes=10)
        assert s.encode(arch) == choices
    bad = ["k3_e3"] * s.num_layers
    bad[0] = SKIP
    with pytest.raises(ArchSpecError, match="layer 0"):
        s.decode(bad)
    with pytest.raises(ArchSpecError, match="14 searchable layers"):
        s.decode(["k3_e3"])


def test_sampled_architectures_build_and_run():
    import torch

    s = default_space()
    rng = random.Random(3)
    for _ in range(5):
        arch = s.sample(rng, resolution=32, num_classes=10)
        y = build_model(arch).eval()(torch.randn(1, 3, 32, 32))
        assert y.shape == (1, 10)


def test_space_from_config_dict():
    d = {"name": "tiny", "stem": "conv_k3_c16_s2_hs", "fixed": [], "head": ["pool"],
         "stages": [{"channels": 24, "repeats": 2, "stride": 2}]}
    s = SearchSpace.from_dict(d)
    assert s.num_architectures() == 4 * 5
    assert s.stages[0] == Stage(24, 2, 2)
    with pytest.raises(ArchSpecError, match="malformed"):
        SearchSpace.from_dict({"name": "x"})


def test_single_path_nas_mnasnet_space():
    """The paper's space: stem, 22 MBConv blocks (the first and last fixed), 20 searchable, 1280 head."""
    import torch

    from search_spaces.spaces import SPACES

    s = SPACES["spnas_mnasnet"]
    assert s.num_layers == 20 and [(st.channels, st.repeats, st.stride) for st in s.stages] == [
        (24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2)]
    arch = s.largest(224)
    ir = [b for b in arch.blocks if b.kind == "ir"]
    assert len(ir) == 22 and str(ir[0]) == "ir_k3_e1_c16_s1" and str(ir[-1]) == "ir_k3_e6_c320_s1"
    assert all(b.act is None and not b.se for b in ir), "ReLU, no squeeze-excite"
    assert [slot.skippable for slot in s.slots[:4]] == [False, True, True, True]
    assert s.num_architectures() == 4**5 * 5**15
    rng = random.Random(3)
    choices = [rng.choice(c) for c in s.enumerate_layer_choices()]
    small = s.decode(choices, resolution=32, num_classes=10)
    assert s.encode(small) == choices
    assert build_model(small)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
