"""The block grammar: exact round trips and clear errors for impossible specs."""

import json
import random

import pytest

from search_spaces import REFERENCE_NETS, ArchSpec, ArchSpecError, Block, default_space


@pytest.mark.parametrize("name", sorted(REFERENCE_NETS))
def test_reference_round_trips(name, tmp_path):
    arch = REFERENCE_NETS[name]()
    s = arch.to_string()
    assert ArchSpec.from_string(s) == arch
    assert ArchSpec.from_string(s).to_string() == s
    assert ArchSpec.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    path = arch.save(tmp_path / "arch.json")
    back = ArchSpec.load(path)
    assert back == arch and back.name == name
    for b in arch.blocks:
        assert str(Block.parse(str(b))) == str(b)


def test_1000_sampled_architectures_round_trip():
    space = default_space()
    rng = random.Random(1234)
    for i in range(1000):
        arch = space.sample(rng, resolution=rng.choice([32, 96, 224]), width=rng.choice([0.75, 1.0, 1.25]),
                           num_classes=rng.choice([10, 81, 1000]))
        s = arch.to_string()
        again = ArchSpec.from_string(s)
        assert again == arch and again.to_string() == s
        assert ArchSpec.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert space.encode(arch) == space.encode(again)


def test_width_multiplier_rounds_channels_to_multiples_of_8():
    arch = REFERENCE_NETS["mobilenet_v2"](width=0.75)
    for layer in arch.resolve():
        if layer.block.kind in ("conv", "ir"):
            assert layer.cout % 8 == 0 and layer.mid % 8 == 0


def test_float_expansions_survive_round_trip():
    b = Block.parse("ir_k3_e3.67_c24_s1")
    assert b.expansion == 3.67 and str(b) == "ir_k3_e3.67_c24_s1"


HEAD = ["conv_k1_c960_s1_hs", "pool"]

INVALID = [
    # (blocks, the message must mention these)
    (["conv_k3_c16_s2", "ir_k3_e6_c24_s2", "skip_s2", *HEAD], ["block 2", "stride 2"]),
    (["conv_k3_c16_s2", "ir_k3_e6_c24_s2", "skip_c40", *HEAD], ["block 2", "channels"]),
    (["conv_k3_c16_s2", "ir_k4_e6_c24_s2", *HEAD], ["block 1", "kernel 4"]),
    (["conv_k3_c16_s2", "ir_k3_e6_c24_s3", *HEAD], ["block 1", "stride"]),
    (["conv_k3_c16_s2", "ir_k3_e0.5_c24_s1", *HEAD], ["block 1", "expansion"]),
    (["conv_k3_c16_s2", "xx_k3_c24", *HEAD], ["block 1", "unknown block kind"]),
    (["conv_k3_c16_s2", "ir_k3_e6_c24_s1_zz", *HEAD], ["block 1", "unknown token 'zz'"]),
    (["conv_k3_c16_s2", "ir_k3_k5_e6_c24_s1", *HEAD], ["block 1", "repeats"]),
    (["ir_k3_e6_c24_s1", *HEAD], ["block 0", "stem"]),
    (["conv_k3_c16_s2", "ir_k3_e6_c24_s1"], ["pool"]),
    (["conv_k3_c16_s2", "pool", "ir_k3_e6_c24_s1"], ["block 2", "only 'fc'"]),
    (["conv_k3_c16_s2", "ir_k3_e6_c0_s1", *HEAD], ["block 1", "positive"]),
    (["conv_k3_c16_s2_se", *HEAD], ["block 0", "squeeze-excite"]),
    (["conv_k3_c16_s2", "ir_k3_e6_s1", *HEAD], ["block 1", "channel"]),
]


@pytest.mark.parametrize("blocks,needles", INVALID)
def test_invalid_specs_name_block_and_problem(blocks, needles):
    with pytest.raises(ArchSpecError) as e:
        ArchSpec.from_blocks(blocks)
    for n in needles:
        assert n in str(e.value), f"'{n}' not in: {e.value}"


def test_invalid_header_and_global_fields():
    with pytest.raises(ArchSpecError, match="resolution"):
        ArchSpec.from_string("r4 w1 n10 | conv_k3_c16_s2 pool")
    with pytest.raises(ArchSpecError, match="width"):
        ArchSpec.from_string("r32 w0 n10 | conv_k3_c16_s2 pool")
    with pytest.raises(ArchSpecError, match="header token"):
        ArchSpec.from_string("q32 | conv_k3_c16_s2 pool")


def test_load_reports_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ArchSpec.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchSpecError, match="not valid JSON"):
        ArchSpec.load(bad)
    bad.write_text(json.dumps({"format": "spnas.arch/1", "blocks": ["conv_k3_c16_s2", "skip_s2", "pool"]}))
    with pytest.raises(ArchSpecError, match="bad.json.*block 1"):
        ArchSpec.load(bad)
