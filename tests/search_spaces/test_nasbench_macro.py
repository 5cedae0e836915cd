"""NAS-Bench-Macro's space in the block grammar: every code round-trips, and every network has exactly the
benchmark's parameters and FLOPs."""

import json

import pytest
import torch

from search_spaces import ArchSpec, build_model, count_macs, count_params
from search_spaces.nasbench_macro import (NASBENCH_MACRO_SPACE, all_codes, arch_of, canonical, check_code,
                                          code_of_arch, distinct_codes, params_and_macs)
from spnas_core.errors import ArchSpecError


def test_every_code_round_trips_through_the_grammar():
    codes = all_codes()
    assert len(codes) == 3 ** 8 == NASBENCH_MACRO_SPACE.num_architectures()
    for code in codes:
        arch = arch_of(code)
        again = ArchSpec.from_string(arch.to_string())
        assert again == arch and code_of_arch(again) == code
        assert ArchSpec.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


def test_identity_at_a_stage_start_is_a_projection_and_elsewhere_the_identity():
    arch = arch_of("00000000")
    kinds = [str(b) for b in arch.blocks]
    assert kinds == ["conv_k3_c32_s1", "proj_c64_s2", "skip", "proj_c128_s2", "skip", "skip", "proj_c256_s2", "skip",
                     "skip", "conv_k1_c1280_s1", "pool"]
    assert [layer.hout for layer in arch.resolve()][:9] == [32, 16, 16, 8, 8, 8, 4, 4, 4]


def test_canonical_codes_are_the_benchmarks_equivalence_classes(nasbench_macro_file):
    data = json.loads(nasbench_macro_file.read_text())
    classes: dict[str, set[str]] = {}
    for code, rec in data.items():
        classes.setdefault(canonical(code), set()).add(json.dumps(rec, sort_keys=True))
    assert len(classes) == len(distinct_codes()) == 3969
    assert all(len(recs) == 1 for recs in classes.values()), "codes of one network share one record"
    assert canonical("20102010") == "20120010" and canonical("20120010") == "20120010"
    assert canonical("01100000") == "01100000"  # a stage's first identity (a projection) stays where it is


def test_params_and_flops_equal_the_benchmark_for_every_code(nasbench_macro_file):
    data = json.loads(nasbench_macro_file.read_text())
    assert len(data) == 6561
    for code in all_codes():
        assert params_and_macs(arch_of(code)) == (data[code]["params"], data[code]["flops"]), code


@pytest.mark.parametrize("code", ["00000000", "22222222", "21210200", "10201102"])
def test_counting_from_shapes_equals_the_built_network(code):
    arch = arch_of(code)
    net = build_model(arch)
    assert (count_params(net), count_macs(net, 32)) == params_and_macs(arch)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("bad", ["2121020", "212102003", "21210203", "abcdefgh", 21210200])
def test_a_malformed_code_is_one_clear_error(bad):
    with pytest.raises(ArchSpecError, match="8 digits"):
        check_code(bad)
