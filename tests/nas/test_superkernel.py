"""The superkernel computes exactly the fixed layer its decisions describe; decoding never swaps e3/e6."""

import random

import pytest
import torch

from latency_tables.lookup.predictor import SpaceLatency, predict_latency_ms
from latency_tables.lookup.table import LatencyTable
from nas.superkernel import SuperMBConv, SuperNet, extract_fixed_net, ste_step
from search_spaces import SKIP, build_model, default_space

CHOICES = ["k3_e3", "k3_e6", "k5_e3", "k5_e6", SKIP]
BIG = 1e6  # a threshold no mean square can reach (forces 0) / one every mean square beats (forces 1)


def force(layer: SuperMBConv, choice: str) -> None:
    """Set thresholds so the layer's hard decisions are `choice`."""
    with torch.no_grad():
        if choice == SKIP:
            layer.t_keep.fill_(BIG)
            return
        k, e = choice.split("_")
        layer.t_kernel.fill_(-BIG if k == "k5" else BIG)
        layer.t_expand.fill_(-BIG if e == "e6" else BIG)
        if layer.t_keep is not None:
            layer.t_keep.fill_(-BIG)


def _randomize_bn(module):
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("slot_index", [1, 4, 10])  # no SE / SE+relu / SE+h-swish, all skippable
@pytest.mark.parametrize("choice", CHOICES)
def test_forced_layer_equals_plain_fixed_layer(slot_index, choice):
    torch.manual_seed(slot_index)
    net = SuperNet(default_space(), resolution=32, num_classes=10)
    layer = net.super_layers()[slot_index]
    _randomize_bn(layer)
    force(layer, choice)
    assert layer.choice() == choice
    fixed = layer.to_fixed(choice).eval()
    layer.eval()
    x = torch.randn(2, layer.cin, 8, 8)
    with torch.no_grad():
        got, want = layer(x), fixed(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    if choice == SKIP:
        assert torch.equal(got, x)


def test_forced_layer_equals_fixed_in_training_mode_too():
    torch.manual_seed(0)
    layer = SuperNet(default_space(), resolution=32, num_classes=10).super_layers()[4]
    for choice in CHOICES[:4]:
        force(layer, choice)
        fixed = layer.to_fixed(choice).train()
        layer.train()
        x = torch.randn(4, layer.cin, 8, 8)
        assert torch.allclose(layer(x), fixed(x), atol=1e-5)


def test_first_layer_of_stage_cannot_skip_and_is_one_path():
    net = SuperNet(default_space(), resolution=32, num_classes=10)
    first = net.super_layers()[0]
    assert first.t_keep is None and not first.residual
    # one path: a single depthwise kernel parameter of the big kernel over the e6 channels
    dws = [p for n, p in first.named_parameters() if "dw_weight" in n]
    assert len(dws) == 1 and dws[0].shape == (first.mid, 1, 5, 5) and first.mid == 2 * first.mid_small


def test_starts_as_k5e6_everywhere():
    net = SuperNet(default_space(), resolution=32, num_classes=10)
    assert net.choices() == ["k5_e6"] * 14


def test_decode_every_choice_no_e3_e6_swap():
    """The official SPNAS code swaps e3 and e6 on decode; ours maps use_e6 = 1 to e6."""
    space = default_space()
    rng = random.Random(1)
    for _ in range(5):
        net = SuperNet(space, resolution=32, num_classes=10)
        want = [rng.choice(s.choices) for s in space.slots]
        for layer, c in zip(net.super_layers(), want):
            force(layer, c)
        assert net.choices() == want
        arch = net.derive()
        assert space.encode(arch) == want  # encode(decode) round trip
        for layer, c in zip(net.super_layers(), want):
            if c != SKIP:
                ind = layer.indicators()
                assert (float(ind["expand"].detach()) == 1.0) == c.endswith("e6")
                assert (float(ind["kernel"].detach()) == 1.0) == c.startswith("k5")


def test_extracted_network_matches_supernet_output():
    torch.manual_seed(3)
    space = default_space()
    net = SuperNet(space, resolution=32, num_classes=10)
    rng = random.Random(3)
    want = [rng.choice(s.choices) for s in space.slots]
    for layer, c in zip(net.super_layers(), want):
        force(layer, c)
    _randomize_bn(net)
    net.eval()
    fixed = extract_fixed_net(net).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), fixed(x), atol=1e-4)
    assert type(fixed) is type(build_model(net.derive()))


def test_ste_is_hard_forward_soft_backward():
    x = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    y = ste_step(x)
    assert y.tolist() == [0.0, 0.0, 1.0]
    y.sum().backward()
    s = torch.sigmoid(x.detach())
    assert torch.allclose(x.grad, s * (1 - s))


def test_latency_gradient_pushes_thresholds_up():
    """d(log R)/d(threshold) < 0: gradient descent raises thresholds, shrinking ops."""
    space = default_space()
    net = SuperNet(space, resolution=32, num_classes=10)
    sl = SpaceLatency(space, LatencyTable.load("sd845"), 224, 1.0, 10)
    ind = net.indicators()
    r = sl.expected_ms(torch.stack([i["keep"] for i in ind]).double(), torch.stack([i["kernel"] for i in ind]).double(),
                       torch.stack([i["expand"] for i in ind]).double())
    torch.log(r).backward()
    for layer in net.super_layers():
        assert layer.t_kernel.grad < 0 and layer.t_expand.grad < 0
        if layer.t_keep is not None:
            assert layer.t_keep.grad < 0
    # hard indicators: R equals the table prediction of the derived architecture
    arch = net.derive(resolution=224)
    assert float(r.detach()) == pytest.approx(predict_latency_ms(arch.replace(num_classes=10), LatencyTable.load("sd845")))


# ---------------------------------------------------------------------------------- NAS-Bench-Macro's space
# Its candidates are a chain (k3_e3 < k5_e6: one `grow` decision) and skipping a stage's first layer is a
# 1x1 conv + BN projection: the same superkernel, its choice set read from the space.
NBM_CODES = ["00000000", "22222222", "11111111", "21210200", "01020102", "12012021"]


def _nbm_net(seed: int = 0) -> SuperNet:
    from search_spaces.nasbench_macro import NASBENCH_MACRO_SPACE

    torch.manual_seed(seed)
    net = SuperNet(NASBENCH_MACRO_SPACE, resolution=32, num_classes=10)
    _randomize_bn(net)
    return net


def force_nbm(layer: SuperMBConv, choice: str) -> None:
    with torch.no_grad():
        layer.t_grow.fill_(-BIG if choice == "k5_e6" else BIG)
        layer.t_keep.fill_(BIG if choice == SKIP else -BIG)


def test_nbm_layers_decide_keep_and_grow_and_project_where_the_shape_changes():
    net = _nbm_net()
    layers = net.super_layers()
    assert [m.decision_names for m in layers] == [("grow", "keep")] * 8
    assert [m.projection for m in layers] == [True, False, True, False, False, True, False, False]
    assert net.choices() == ["k5_e6"] * 8  # every layer starts as its largest candidate
    assert net.space.options == ("k3_e3", "k5_e6", SKIP)


@pytest.mark.parametrize("code", NBM_CODES)
def test_nbm_forced_supernet_equals_the_built_network(code):
    from search_spaces.nasbench_macro import arch_of, choices_of

    net = _nbm_net()
    want = choices_of(code)
    for layer, c in zip(net.super_layers(), want):
        force_nbm(layer, c)
    assert net.choices() == want
    assert net.derive() == arch_of(code).replace(name="")
    net.eval()
    fixed = extract_fixed_net(net).eval()
    assert type(fixed) is type(build_model(arch_of(code)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        masked, sliced, plain = net(x), net(x, want), fixed(x)
    assert torch.allclose(masked, plain, atol=1e-4) and torch.allclose(sliced, plain, atol=1e-4)
    w = net.option_weights(net.indicators())
    assert w.tolist() == [[float(o == c) for o in net.space.options] for c in want]


def test_nbm_sliced_path_trains_exactly_like_the_masked_one():
    from search_spaces.nasbench_macro import choices_of

    net = _nbm_net(1)
    net.dropout.p = 0.0
    net.train()
    x = torch.randn(4, 3, 32, 32)
    want = choices_of("12012021")
    masked = net(x, net.indicators_for(want))
    sliced = net(x, want)
    assert torch.allclose(masked, sliced, atol=1e-5)
    sliced.sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert not any(n.rsplit(".", 1)[-1].startswith("t_") for n in grads), "a fixed path trains no threshold"
    assert "layers.3.shortcut.0.weight" in grads  # searchable layer 2 (module 3) is a projection in this path


def test_nbm_cost_term_is_differentiable_and_exact_for_hard_decisions():
    from latency_tables.lookup.predictor import SpaceLatency
    from search_spaces.nasbench_macro import NASBENCH_MACRO_SPACE, arch_of, choices_of

    net = _nbm_net()
    flops = LatencyTable.load("flops")
    sl = SpaceLatency(NASBENCH_MACRO_SPACE, flops, 32, 1.0, 10)
    for code in NBM_CODES:
        assert sl.of_choices(choices_of(code)) == pytest.approx(flops.predict(arch_of(code)))
    r = sl.expected(net.option_weights(net.indicators()))
    assert float(r.detach()) == pytest.approx(105.660928)  # every layer k5_e6: the benchmark's largest network
    torch.log(r).backward()
    for m in net.super_layers():
        assert m.t_grow.grad < 0 and m.t_keep.grad < 0, "the cost pushes every threshold up"
