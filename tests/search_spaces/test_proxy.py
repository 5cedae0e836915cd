"""Proxy geometry: training below the deployment resolution changes strides only, never weights,
op keys or the exported architecture."""

from __future__ import annotations

import pytest
import torch

from latency_tables.lookup.keys import ops_of
from search_spaces import build_model, default_space, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from search_spaces.proxy import Proxy, _min_input_map, proxy_for


@pytest.mark.parametrize("make", [mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small,
                                  lambda: default_space().largest(224, 1.0, 10)])
def test_proxy_keeps_every_layer_at_least_4x4_with_the_same_weights(make):
    arch = make().replace(num_classes=10)
    design = arch.replace(resolution=32)
    assert _min_input_map(design) < 4  # the problem: ImageNet strides at 32 px
    px = proxy_for(arch, 32)
    trained = px.apply(arch)
    assert _min_input_map(trained) >= 4 and len(px.dropped) == 2
    assert all(arch.blocks[i].stride == 2 and trained.blocks[i].stride == 1 for i in px.dropped)
    # the same parameters: a state dict trained under the proxy loads into the design network
    a, b = build_model(design).state_dict(), build_model(trained).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    build_model(design).load_state_dict(b)
    # the deployed geometry and its latency keys are untouched
    assert [op.key for op in ops_of(arch.replace(resolution=224))] == [op.key for op in ops_of(arch)]
    assert proxy_for(arch, 224).dropped == () and proxy_for(arch, 32, strides="design").dropped == ()


def test_drop_orders_and_round_trip():
    arch = mobilenet_v3_large().replace(num_classes=10)
    last, first = proxy_for(arch, 32, drop="last"), proxy_for(arch, 32, drop="first")
    assert max(last.dropped) > max(first.dropped) and first.dropped[0] == 0  # the stem first
    assert Proxy.from_dict(last.to_dict()) == last
    assert "trained at 1" in last.describe(arch)
    with pytest.raises(Exception, match="not stride 2"):
        Proxy(32, (1,)).apply(arch)


def test_supernet_under_proxy_matches_its_derived_net():
    from nas.superkernel import SuperNet, extract_fixed_net

    space = default_space()
    px = proxy_for(space.largest(32, 1.0, 10), 32)
    torch.manual_seed(0)
    sup = SuperNet(space, 32, 1.0, 10, 0.0, 0.0, px).eval()
    with torch.no_grad():
        for m in sup.super_layers():  # a mixed architecture: some layers small, some skipped
            m.t_kernel.fill_(float(m.statistics()["ms_ring"]) * (1.5 if m.slot.index % 2 else 0.5))
            if m.t_keep is not None and m.slot.index % 3 == 0:
                m.t_keep.fill_(1e3)
    fixed = extract_fixed_net(sup).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sup(x), fixed(x), atol=1e-5)
    assert len(set(sup.choices())) > 1
