"""Deployment wrappers: what every exported artifact computes.

Every exported model takes RGB float pixels scaled to [0, 1] (MediaPipe metadata: mean 0, std 255)
and applies the per-channel training normalisation inside the graph, because MediaPipe's metadata
holds a single scalar mean/std. Outputs: logits (classifier), the unit-length embedding (embedder:
L2-normalised inside the model, so MediaPipe with default options, LiteRT, ONNX and PyTorch all
return unit vectors), or both (ONNX server-side extractor).
"""

from __future__ import annotations

import torch
from torch import nn

from spnas_core.errors import ExportError
from spnas_core.images import MEAN_RGB, STD_RGB

OUTPUTS = ("logits", "features", "both")


class DeployModel(nn.Module):
    """`net` behind the [0, 1]-RGB input contract; NCHW in (converters add the NHWC interface)."""

    def __init__(self, net: nn.Module, output: str = "logits") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ExportError(f"output must be one of {OUTPUTS}")
        self.net = net.eval()
        self.output = output
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1) / 255.0)
        self.register_buffer("inv_std", 255.0 / torch.tensor(STD_RGB).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor):
        x = (x - self.mean) * self.inv_std
        if self.output == "logits":
            return self.net(x)
        if self.output == "features":
            return self.net.embed(x)
        return self.net.outputs(x)


class NHWC(nn.Module):
    """NHWC input for exporters that do not add the layout themselves (ONNX, PT2E quantization)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor):
        return self.module(x.permute(0, 3, 1, 2))


def to_unit_float(images_uint8_nhwc) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW in [0, 1] (the DeployModel input)."""
    return torch.as_tensor(images_uint8_nhwc).permute(0, 3, 1, 2).float() / 255.0
