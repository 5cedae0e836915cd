"""Training-free proxies (nas/proxies.py): NASWOT's kernel as Mellor et al. define it, SynFlow's sign."""

from __future__ import annotations

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
    x = torch.randn(16, 3, 32, 32)
    deep, shallow = arch_of("11111111"), arch_of("10000000")
    assert score_arch(deep, "naswot", x) > score_arch(shallow, "naswot", x)
    assert score_arch(deep, "synflow", x) > score_arch(shallow, "synflow", x) > 0


def test_one_build_scores_both_proxies_as_separate_builds_do():
    """The harness's training-free search builds each network once for NASWOT and SynFlow: the scores must
    be those of two separate builds (NASWOT first: SynFlow rewrites the weights)."""
    from nas.proxies import score_arch_many

    x = torch.randn(8, 3, 32, 32)
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
