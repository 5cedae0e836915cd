"""Training-free proxies (nas/proxies.py): NASWOT's kernel as Mellor et al. define it, SynFlow's sign."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.proxies import naswot_score, score_arch
from search_spaces.nasbench_macro import arch_of


def _naswot_by_definition(model: nn.Module, x: torch.Tensor) -> float:
    codes = []
    hs = [m.register_forward_hook(lambda _m, _i, o: codes.append((o.flatten(1) > 0).double()))
          for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    model.train()
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    k = sum(c @ c.t() + (1 - c) @ (1 - c).t() for c in codes)
    return float(torch.linalg.slogdet(k)[1])


def test_naswot_is_the_log_determinant_of_the_relu_code_agreements():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    x = torch.randn(16, 3, 8, 8)
    assert abs(naswot_score(model, x) - _naswot_by_definition(model, x)) < 1e-9


def test_proxies_order_a_network_above_its_skipped_version():
    """More kept layers, more distinct activation patterns and more parameters: both proxies grow."""
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    deep, shallow = arch_of("11111111"), arch_of("10000000")
    assert score_arch(deep, "naswot", x) > score_arch(shallow, "naswot", x)
    assert score_arch(deep, "synflow", x) > score_arch(shallow, "synflow", x) > 0


def test_one_build_scores_both_proxies_as_separate_builds_do():
    """The harness's training-free search builds each network once for NASWOT and SynFlow: the scores must
    be those of two separate builds (NASWOT first: SynFlow rewrites the weights)."""
    from nas.proxies import score_arch_many

    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    arch = arch_of("20110211")
    both = score_arch_many(arch, ("synflow", "naswot"), x, 3)
    assert both == {"naswot": score_arch(arch, "naswot", x, 3), "synflow": score_arch(arch, "synflow", x, 3)}


def test_naswot_reads_hard_swish_units_as_relus():
    """MobileNetV3's later blocks use hard-swish: positive exactly where its input is, so it gives a ReLU's bits
    (before, NASWOT skipped those layers: a hard-swish-only network scored -inf, an empty kernel)."""
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    hswish = nn.Sequential(conv1, nn.Hardswish(), conv2, nn.Hardswish(), head)
    relu = nn.Sequential(conv1, nn.ReLU(), conv2, nn.Hardswish(), head)
    x = torch.randn(16, 3, 8, 8)
    # the second layer's input differs (hard-swish vs ReLU outputs), so compare each with its own definition
    both = (nn.ReLU, nn.ReLU6, nn.Hardswish)
    for model in (hswish, relu):
        codes = []
        hs = [m.register_forward_hook(lambda _m, _i, o: codes.append((o.flatten(1) > 0).double()))
              for m in model.modules() if isinstance(m, both)]
        with torch.no_grad():
            model.train()(x)
        for h in hs:
            h.remove()
        assert len(codes) == 2
        k = sum(c @ c.t() + (1 - c) @ (1 - c).t() for c in codes)
        assert abs(naswot_score(model, x) - float(torch.linalg.slogdet(k)[1])) < 1e-9
    assert naswot_score(hswish, x) > float("-inf")


def test_networks_that_share_a_layer_share_its_initial_weights():
    """Layer-by-layer initialisation: a layer's weights depend on the seed, its depth and itself, not on the
    rest of the network (with one generator for the whole network, changing the last layer changed them all)."""
    from nas.proxies import build_for_scoring

    a, b = build_for_scoring(arch_of("21021012"), 5), build_for_scoring(arch_of("21021011"), 5)
    for j in range(len(a.layers) - 3):  # the stem and the first seven searchable layers are the same
        sa, sb = a.layers[j].state_dict(), b.layers[j].state_dict()
        assert sa.keys() == sb.keys()
        for name in sa:
            assert torch.equal(sa[name], sb[name]), (j, name)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    convs = [[m.weight for m in n.layers[8].modules() if isinstance(m, nn.Conv2d)]
             for n in (a, b, build_for_scoring(arch_of("21021012"), 6))]
    assert convs[0][0].shape != convs[1][0].shape or not torch.equal(convs[0][0], convs[1][0])
    assert not torch.equal(convs[0][0], convs[2][0])  # another seed, other weights
    state = torch.random.get_rng_state()
    build_for_scoring(arch_of("11111111"), 0)
    assert torch.equal(state, torch.random.get_rng_state())  # scoring leaves the global generator alone


def test_codes_of_one_network_score_alike():
    """Codes that differ only in where a stage's skipped layers sit are one network (one canonical code): they
    get the same weights and the same scores, whole or over the tree."""
    from nas.proxies import naswot_scores
    from search_spaces.nasbench_macro import all_codes, canonical

    groups: dict[str, list[str]] = {}
    for c in all_codes():
        groups.setdefault(canonical(c), []).append(c)
    same = next(g for g in groups.values() if len(g) >= 3)[:3]
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = [score_arch(arch_of(c), "naswot", x, 2) for c in same]
    assert len(set(whole)) == 1 and whole[0] > float("-inf"), (same, whole)
    assert naswot_scores([arch_of(c) for c in same], x, 2) == whole


def _counting_layer_runs(monkeypatch):
    import nas.proxies

    runs = []
    real = nas.proxies._run_reading_codes
    monkeypatch.setattr(nas.proxies, "_run_reading_codes", lambda m, h: runs.append(1) or real(m, h))
    return runs


def test_naswot_over_a_prefix_tree_equals_each_whole_network_and_runs_fewer_layers(monkeypatch):
    """naswot_scores shares the layers networks have in common and gives each network's own score bit for bit,
    for networks of different depths and a network listed twice; a radius-2 neighbourhood of 8 layers runs
    under half the layers that scoring each network alone runs."""
    import random

    from nas.finalists import neighbourhood
    from nas.proxies import naswot_scores
    from search_spaces.nasbench_macro import choices_of, code_of

    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    rng = random.Random(3)
    codes = ["".join(rng.choice("012") for _ in range(8)) for _ in range(6)] + ["21021012", "21021012", "10000000"]
    tree = naswot_scores([arch_of(c) for c in codes], x, 4)
    assert tree == [score_arch(arch_of(c), "naswot", x, 4) for c in codes]
    assert all(t > float("-inf") for t in tree) and len(set(tree)) == len(set(codes))
    space_codes = [code_of(c) for c in neighbourhood(_macro_space(), choices_of("12021101"), 2)]
    assert len(space_codes) == 129
    runs = _counting_layer_runs(monkeypatch)
    naswot_scores([arch_of(c) for c in space_codes], x, 0)
    alone = sum(sum(layer.block.kind != "skip" for layer in arch_of(c).resolve()) for c in space_codes)
    assert len(runs) < 0.5 * alone, (len(runs), alone)


def _macro_space():
    import spnas
    from search_spaces import SearchSpace

    return SearchSpace.from_config(spnas.compose("search", ["experiment=nasbench_macro"]).space)


def test_naswot_over_a_prefix_tree_reads_hard_swish_layers_of_the_mobilenet_space():
    """The MobileNetV3 space (hard-swish units, squeeze-excite, a hidden FC head) scores alike both ways."""
    import spnas
    from nas.proxies import naswot_scores
    from search_spaces import SearchSpace

    space = SearchSpace.from_config(spnas.compose("search", []).space)
    base = space.largest_choices()
    smaller = [c for c in space.slots[-1].choices if c != base[-1]][0]
    nets = [base, base[:-1] + [smaller], [c for c in space.slots[0].choices if c != base[0]][0:1] + base[1:]]
    assert len({tuple(n) for n in nets}) == 3
    archs = [space.decode(c, 32, 0.5, 10) for c in nets]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tree = naswot_scores(archs, x, 1)
    assert tree == [score_arch(a, "naswot", x, 1) for a in archs]
    assert len(set(tree)) == 3 and all(t > float("-inf") for t in tree)


def test_the_prefix_tree_refuses_a_layer_that_changes_its_input_in_place():
    from nas.proxies import _run_reading_codes

    h = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="in place"):
        _run_reading_codes(nn.ReLU(inplace=True), h)
    y, codes = _run_reading_codes(nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True)), h)
    assert y.shape == (2, 3) and len(codes) == 1
