"""Reference networks match their published parameter counts and MACs (within 2%)."""

import pytest

from search_spaces import build_model, count_macs, count_params, reference

# (name, published params, published MACs) at 224x224, 1000 classes
PUBLISHED = [
    ("mobilenet_v2", 3.47e6, 300e6),  # paper: 3.4 M (3.47 M in the TF release), 300 M MACs
    ("mobilenet_v3_large", 5.4e6, 219e6),
    ("mobilenet_v3_small", 2.5e6, 56e6),
]


@pytest.mark.parametrize("name,params,macs", PUBLISHED)
def test_published_params_and_macs(name, params, macs):
    arch = reference(name)
    model = build_model(arch)
    p = count_params(model)
    m = count_macs(model, 224)
    assert abs(p - params) / params <= 0.02, f"{name}: {p / 1e6:.3f} M params vs {params / 1e6} M"
    assert abs(m - macs) / macs <= 0.02, f"{name}: {m / 1e6:.1f} M MACs vs {macs / 1e6} M"


def test_mobilenet_v2_params_in_published_range():
    p = count_params(build_model(reference("mobilenet_v2")))
    assert 3.4e6 <= p <= 3.5e6 * 1.02


@pytest.mark.parametrize("name,dim", [("mobilenet_v2", 1280), ("mobilenet_v3_large", 1280),
                                      ("mobilenet_v3_small", 1024)])
def test_features_and_logits_shapes(name, dim):
    import torch

    arch = reference(name, resolution=64, num_classes=7)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model.features(x).shape == (2, dim)
    assert model(x).shape == (2, 7)
    assert arch.feature_dim == dim


def test_unknown_reference_lists_known_names():
    from spnas_core.errors import ArchSpecError

    with pytest.raises(ArchSpecError, match="mobilenet_v2"):
        reference("resnet50")
