"""The residual super-resolution CNN (SR-CNN of Chaudhari et al., "Deep-learning-based
super-resolution and segmentation for clinical and research musculoskeletal MRI", Methods).

The paper's network (after Kim et al., VDSR) is a plain stack of 20 3x3x3 convolutions with
64 feature maps and ReLU that learns the residual ``high - TCI``; the output is
``TCI + residual``. That network costs ~2.2 M multiply-adds per voxel - minutes per knee volume
on 2 CPU cores - so the bundled model uses the same plan at a smaller size: ``depth`` layers
of ``width`` features whose hidden layers may be *separable* (a 1x3x3 in-plane convolution
followed by a 3x1x1 through-plane one, ~12/27 of the cost of a 3x3x3 layer with twice the
non-linearities). The speed of each size on this hardware is measured by
``benchmarks/bench_superres.py --sizes`` (table in ``Resources/Models/knee-superres-3x.md``).

Array layout: ``[batch, 1, slice, row, column]`` with the through-plane (thick-slice) axis
first; the caller moves the image's slice axis there (:mod:`.infer`).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

PAPER_SIZE = {"depth": 20, "width": 64, "separable": False}


class ResidualSRNet(nn.Module):
    """``x + f(x)``; ``f`` = ``depth`` convolution layers (ReLU between), ``width`` features."""

    def __init__(self, depth: int = 8, width: int = 32, separable: bool = True) -> None:
        super().__init__()
        if depth < 2 or width < 1:
            raise ValueError(f"depth must be >= 2 and width >= 1 (got depth {depth}, width {width})")
        self.depth, self.width, self.separable = int(depth), int(width), bool(separable)
        layers = [nn.Conv3d(1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            if separable:
                layers += [nn.Conv3d(width, width, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(inplace=True),
                           nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0)), nn.ReLU(inplace=True)]
            else:
                layers += [nn.Conv3d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv3d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        for m in self.body:  # He initialisation (as VDSR): PyTorch's default shrinks the signal layer by layer
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.body[-1].weight)  # start as the identity (SR = TCI): the residual is learned
        nn.init.zeros_(self.body[-1].bias)

    @property
    def halo(self) -> int:
        """Receptive-field radius (voxels) along every axis: slabs overlapping by this are exact."""
        return self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def architecture(self) -> Dict[str, object]:
        return {"name": "residual-sr-cnn", "params": {"depth": self.depth, "width": self.width,
                                                      "separable": self.separable}}


def build_network(params: dict) -> ResidualSRNet:
    return ResidualSRNet(int(params.get("depth", 8)), int(params.get("width", 32)), bool(params.get("separable", True)))


def macs_per_voxel(depth: int, width: int, separable: bool) -> int:
    """Multiply-adds per output voxel (the cost the speed table explains)."""
    hidden = (9 + 3) * width * width if separable else 27 * width * width  # 1x3x3 + 3x1x1, or 3x3x3
    return 27 * width + (depth - 2) * hidden + 27 * width
