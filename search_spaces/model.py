"""`build_model(arch)`: an `ArchSpec` to a `torch.nn.Module`, as torchvision builds MobileNets.

Modules are small and plain (torchvision `models/mobilenetv3.py` style) so that one layer can be
built alone for a latency micro-model and so the superkernel can mirror them exactly.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from spnas_core.errors import ArchSpecError

from .arch import ArchSpec, ResolvedLayer


def make_activation(token: str) -> nn.Module:
    """Activation module for a grammar token (`re`, `r6`, `hs`)."""
    if token == "re":
        return nn.ReLU(inplace=True)
    if token == "r6":
        return nn.ReLU6(inplace=True)
    if token == "hs":
        return nn.Hardswish(inplace=True)
    raise ArchSpecError(f"unknown activation token '{token}'")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm + optional activation, 'same' padding."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "re"
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(make_activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-excite: pool, 1x1 reduce + ReLU, 1x1 expand + hard-sigmoid, scale."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand, kxk depthwise, optional SE, 1x1 project; identity add when shapes match."""

    def __init__(self, layer: ResolvedLayer) -> None:
        super().__init__()
        b = layer.block
        act = b.activation
        self.use_residual = layer.residual
        self.expand = (
            ConvBNAct(layer.cin, layer.mid, 1, act=act) if layer.mid != layer.cin else nn.Identity()
        )
        self.depthwise = ConvBNAct(layer.mid, layer.mid, b.kernel, b.stride, groups=layer.mid, act=act)
        self.se = SqueezeExcite(layer.mid, layer.se_hidden) if b.se else nn.Identity()
        self.project = ConvBNAct(layer.mid, layer.cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.use_residual else y


class FCAct(nn.Sequential):
    """Hidden fully connected layer of the MobileNetV3 head (bias, no BN)."""

    def __init__(self, cin: int, cout: int, act: str) -> None:
        super().__init__(nn.Linear(cin, cout), make_activation(act))


def build_layer(layer: ResolvedLayer) -> nn.Module:
    """The module for one resolved block (shared by `build_model` and the latency micro-models)."""
    b = layer.block
    if b.kind == "conv":
        return ConvBNAct(layer.cin, layer.cout, b.kernel, b.stride, act=b.activation)
    if b.kind == "ir":
        return InvertedResidual(layer)
    if b.kind == "skip":
        return nn.Identity()
    if b.kind == "proj":
        return ConvBNAct(layer.cin, layer.cout, 1, b.stride, act=None)
    if b.kind == "pool":
        return GlobalAvgPool()
    if b.kind == "fc":
        return FCAct(layer.cin, layer.cout, b.activation)
    raise ArchSpecError(f"cannot build block kind '{b.kind}'")


class GlobalAvgPool(nn.Module):
    """Global average pooling to a flat [N, C] vector.

    keepdim then flatten: the channels-last TFLite conversion keeps this a plain NHWC MEAN with no
    TRANSPOSE (a rank-reducing mean over NCHW axes gets a TRANSPOSE inserted before it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True).flatten(1)


class Net(nn.Module):
    """A network built from an `ArchSpec`: `features(x)` is the pooled embedding, `forward` logits."""

    def __init__(self, arch: ArchSpec, dropout: float = 0.2) -> None:
        super().__init__()
        self.arch = arch
        layers = arch.resolve()
        self.layers = nn.Sequential(*[build_layer(layer) for layer in layers])
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(layers[-1].cout, arch.num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (input of the classifier), shape [N, feature_dim]."""
        return self.layers(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))

    @property
    def embedding_dim(self) -> int:
        return self.classifier.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The unit-length embedding: the L2-normalised pooled features."""
        return l2_normalize(self.features(x))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, unit-length embedding) from one pass."""
        f = self.features(x)
        return self.classifier(f), l2_normalize(f)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows scaled to unit length, written with ops every converter maps (MUL, SUM, RSQRT, MAXIMUM)."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=1, keepdim=True), min=eps))


class CosineClassifier(nn.Module):
    """Scaled cosine between a unit embedding and unit class weights (normalised softmax, CosFace)."""

    def __init__(self, dim: int, num_classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale = float(scale)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * emb @ l2_normalize(self.weight).t()


class EmbeddingNet(nn.Module):
    """The embedding layer of the design on a backbone `Net`: pooled features -> linear projection to
    `dim` -> L2 normalisation. Classification (for training it, and for the exported classifier) is the
    scaled cosine to unit class weights. Every exported embedder returns these unit vectors."""

    def __init__(self, backbone: Net, dim: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.arch = backbone.arch
        self.layers = backbone.layers
        self.project = nn.Linear(backbone.classifier.in_features, dim)
        nn.init.normal_(self.project.weight, 0, (1.0 / backbone.classifier.in_features) ** 0.5)
        nn.init.zeros_(self.project.bias)
        self.classifier = CosineClassifier(dim, num_classes, scale)

    @property
    def embedding_dim(self) -> int:
        return self.project.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The unit-length embedding (what an embedder returns)."""
        return l2_normalize(self.project(self.layers(x)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.features(x)
        return self.classifier(e), e


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """torchvision's MobileNet initialisation (kaiming fan-out convs, ones/zeros BN, small linear), drawn
    from `generator` (None: the global generator)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01, generator=generator)
            nn.init.zeros_(m.bias)


def layer_key(layer: ResolvedLayer) -> str:
    """What makes a layer's module and its initial weights: the block in the grammar's string form, its real
    channels and feature-map sizes. Not its index: a network whose skipped (identity) layers sit elsewhere in
    a stage is the same network and gets the same weights."""
    return (f"{layer.block}|{layer.cin}>{layer.cout}|{layer.hin}x{layer.win}>{layer.hout}x{layer.wout}"
            f"|mid {layer.mid}|se {layer.se_hidden}")


def is_identity(layer: ResolvedLayer) -> bool:
    """A skipped layer that passes its input on unchanged (no module of its own to initialise or run)."""
    return layer.block.kind == "skip"


def layer_seed(seed: int, ordinal: int, key: str) -> int:
    """The initialisation seed of the `ordinal`-th non-identity layer, `key` (`layer_key`), of a network
    initialised with `seed`: a 63-bit digest of the three, so it does not depend on the rest of the network."""
    digest = hashlib.sha256(f"{int(seed)}|{ordinal}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seeded_layers(resolved: list[ResolvedLayer], seed: int) -> list[tuple[int, str, int]]:
    """(index in the network, ordinal key, generator seed) of each non-identity layer of `resolved`; the ordinal
    key (`"<ordinal>|<layer_key>"`) fixes the layer's initial weights under `init_per_layer`."""
    out = []
    for i, layer in enumerate(resolved):
        if not is_identity(layer):
            key = layer_key(layer)
            out.append((i, f"{len(out)}|{key}", layer_seed(seed, len(out), key)))
    return out


def init_per_layer(net: Net, seed: int) -> Net:
    """Re-initialise `net` as `init_weights` does, each non-identity layer from its own generator seeded by
    `layer_seed` (seed, its ordinal among the non-identity layers, `layer_key`), the classifier by its shape;
    returns `net`.

    Why: with the default initialisation (one generator for the whole network) a layer's initial weights
    depend on every other layer, so two networks that differ in their last layer differ everywhere. Here
    networks that share a layer at the same depth share its weights. A training-free score then compares two
    networks by what differs between them (common random numbers), networks that are the same up to where
    their skipped layers sit are initialised alike, and a prefix many networks share gives the same
    activations in all of them, so it is computed once (`nas.proxies.naswot_scores`)."""
    resolved = net.arch.resolve()
    if len(resolved) != len(net.layers):
        raise ArchSpecError(f"init_per_layer: {len(net.layers)} modules for {len(resolved)} resolved layers")
    for i, _key, layer_gen_seed in seeded_layers(resolved, seed):
        init_weights(net.layers[i], torch.Generator().manual_seed(layer_gen_seed))
    c = net.classifier
    init_weights(c, torch.Generator().manual_seed(layer_seed(seed, -1, f"classifier {c.in_features}x{c.out_features}")))
    return net


def build_seeded_layer(layer: ResolvedLayer, generator_seed: int) -> nn.Module:
    """One non-identity layer as `init_per_layer` initialises it (the global generator left alone)."""
    with torch.random.fork_rng(devices=[]):
        module = build_layer(layer)
    init_weights(module, torch.Generator().manual_seed(generator_seed))
    return module


def build_model(arch: ArchSpec, dropout: float = 0.2) -> Net:
    """Build the PyTorch network an `ArchSpec` describes."""
    return Net(arch, dropout=dropout)


def embedding_info(net: nn.Module) -> dict:
    """What a checkpoint or bundle records about a network's embedding layer (to rebuild it)."""
    if isinstance(net, EmbeddingNet):
        return {"head": "projection", "dim": net.embedding_dim, "num_classes": net.classifier.weight.shape[0],
                "scale": net.classifier.scale, "normalized": True}
    return {"head": "pooled", "dim": net.embedding_dim, "normalized": True}


def build_for_weights(arch: ArchSpec, embedding: dict | None = None) -> nn.Module:
    """The network a checkpoint or bundle holds: a plain `Net`, or an `EmbeddingNet` when `embedding`
    (from `embedding_info`) says it has a projection head."""
    if embedding and embedding.get("head") == "projection":
        return EmbeddingNet(build_model(arch), int(embedding["dim"]), int(embedding["num_classes"]),
                            float(embedding["scale"]))
    return build_model(arch)


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN affine included, running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1, via `torch.utils.flop_counter`."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, resolution, resolution)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
