"""Parameters and multiply-adds of a network, counted from its shapes (no torch, microseconds a network).

The counting convention is NAS-Bench-Macro's (and the usual "FLOPs" of mobile NAS papers): multiply-adds
of convolutions and fully connected layers; BatchNorm, activations, pooling and residual adds are free.
`tests/search_spaces` checks both figures against `count_params` / `count_macs` of built networks and
against the benchmark's own `params` and `flops` for all 6,561 codes.
"""

from __future__ import annotations

from .arch import ArchSpec, ResolvedLayer


def layer_params_macs(layer: ResolvedLayer) -> tuple[int, int]:
    """Parameters (conv weights, BN affine, linear weight + bias) and multiply-adds (convs and linear, as the
    benchmark counts them: BN, activations, pooling and residual adds are free) of one resolved block."""
    b = layer.block
    out_px = layer.hout * layer.wout
    if b.kind == "conv":
        w = layer.cin * layer.cout * b.kernel * b.kernel  # type: ignore[operator]
        return w + 2 * layer.cout, w * out_px
    if b.kind == "proj":
        w = layer.cin * layer.cout
        return w + 2 * layer.cout, w * out_px
    if b.kind == "ir":
        mid, k = layer.mid, b.kernel
        params = macs = 0
        if mid != layer.cin:
            params += layer.cin * mid + 2 * mid
            macs += layer.cin * mid * layer.hin * layer.win
        params += mid * k * k + 2 * mid  # type: ignore[operator]
        macs += mid * k * k * out_px  # type: ignore[operator]
        params += mid * layer.cout + 2 * layer.cout
        macs += mid * layer.cout * out_px
        if b.se:
            params += 2 * mid * layer.se_hidden + mid + layer.se_hidden
            macs += 2 * mid * layer.se_hidden
        return params, macs
    if b.kind == "fc":
        return layer.cin * layer.cout + layer.cout, layer.cin * layer.cout
    return 0, 0  # skip, pool


def params_and_macs(arch: ArchSpec) -> tuple[int, int]:
    """(parameters, multiply-adds) of a network counted from its shapes, classifier included; equal to
    `count_params(build_model(arch))` and to the benchmark's `params` / `flops` for its codes."""
    layers = arch.resolve()
    params = macs = 0
    for layer in layers:
        p, m = layer_params_macs(layer)
        params += p
        macs += m
    cin = layers[-1].cout
    return params + cin * arch.num_classes + arch.num_classes, macs + cin * arch.num_classes
