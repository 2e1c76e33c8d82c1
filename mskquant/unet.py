"""The project's one set of 2D U-Net building blocks.

Module names follow the published SIJ disease-region weights (``down_path.N.convblock``,
``up_path.N.UpBlock`` / ``up_path.N.ConvBlock``, ``last_layer``) so those state dicts load
unchanged; the same blocks build the knee cartilage network with transposed-convolution
up-sampling. Each level is two 3x3 (by default) convolutions, each followed by batch
normalisation and ReLU; up-sampling is bilinear + 1x1 convolution or a 2x2 transposed
convolution; the skip connection is concatenated after the up-sampled features.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ModelError


class ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, batch_norm: bool = True) -> None:
        super().__init__()
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            layers.append(nn.Conv2d(c_in, out_ch, kernel_size, padding=pad))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=True))
        self.convblock = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convblock(x)


class UpBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, up_mode: str = "bilinear", kernel_size: int = 3,
                 batch_norm: bool = True) -> None:
        super().__init__()
        if up_mode == "bilinear":
            self.UpBlock = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                         nn.Conv2d(in_ch, out_ch, kernel_size=1))
        elif up_mode == "transpose":
            self.UpBlock = nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2))
        else:
            raise ValueError(f"unknown up_mode {up_mode!r}")
        self.ConvBlock = ConvBlock(2 * out_ch, out_ch, kernel_size, batch_norm)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        return self.ConvBlock(torch.cat([self.UpBlock(x), bridge], dim=1))


class UNet2D(nn.Module):
    """2D U-Net; ``features`` lists the feature maps per level (its length is the depth)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: Sequence[int] = (16, 32, 64, 128),
                 kernel_size: int = 3, batch_norm: bool = True, up_mode: str = "bilinear",
                 final_activation: str = "sigmoid") -> None:
        super().__init__()
        self.features = list(features)
        self.down_path = nn.ModuleList()
        prev = in_channels
        for f in self.features:
            self.down_path.append(ConvBlock(prev, f, kernel_size, batch_norm))
            prev = f
        self.up_path = nn.ModuleList()
        for f in reversed(self.features[:-1]):
            self.up_path.append(UpBlock(prev, f, up_mode, kernel_size, batch_norm))
            prev = f
        self.last_layer = nn.Conv2d(prev, out_channels, kernel_size=1)
        if final_activation not in ("sigmoid", "none"):
            raise ValueError(f"unknown final_activation {final_activation!r}")
        self.final_activation = final_activation

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bridges = []
        for n, down in enumerate(self.down_path):
            x = down(x)
            if n < len(self.down_path) - 1:
                bridges.append(x)
                x = F.max_pool2d(x, 2)
        for up, bridge in zip(self.up_path, reversed(bridges)):
            x = up(x, bridge)
        x = self.last_layer(x)
        return torch.sigmoid(x) if self.final_activation == "sigmoid" else x


def build_unet(params: dict) -> UNet2D:
    allowed = {"in_channels", "out_channels", "features", "kernel_size", "batch_norm", "up_mode", "final_activation"}
    unknown = set(params) - allowed
    if unknown:
        raise ModelError(f"Unknown U-Net parameter(s) {sorted(unknown)} in the model registry: fix Models.json.")
    return UNet2D(**params)


def state_dict_mismatch(own: dict, state: dict) -> str:
    """How ``state`` fails to fit a network whose state dict is ``own`` ("" when it fits):
    missing and unexpected keys and tensors of another shape, each counted with an example."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    detail = []
    if missing:
        detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        detail.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    return "; ".join(detail)


def load_weights(model: nn.Module, path, what: str = "model") -> nn.Module:
    """Load a state dict (or a checkpoint holding ``state_dict``) and check it fits ``model`` exactly."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise ModelError(f"{what} weights {path} cannot be read ({type(exc).__name__}): the file is corrupt or "
                         f"not a PyTorch state dict; download or export it again.") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{what} weights {path} hold a {type(state).__name__}, not a state dict: "
                         f"save them with torch.save(model.state_dict(), path).")
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise ModelError(f"{what} weights {path} do not fit the registered architecture ({mismatch}): "
                         f"use weights trained for this model or register them with the matching architecture.")
    model.load_state_dict(state)
    return model
