"""The convolutional Siamese network of Chang et al. (Methods, *Neural network architecture*,
Figure 2 and its layer table), with class activation maps (numeric core, PyTorch).

Paper -> here:

* **Branch** (shared by the left and the right knee, "Siamese"): 6 convolutions, each with
  batch normalisation and ReLU; conv 1 is 7x7 with stride 2, max pooling (3x3, stride 2)
  after layer 1 and (2x2, stride 2) after layer 3; every other convolution 3x3, stride 1.
  A 224 x 224 slice gives C x 28 x 28 final feature maps. The paper used 64, 128, 256, 256,
  512, 512 filters (C = 512). MSKQuant keeps the layer structure and makes the widths a
  parameter: the bundled demo model uses a quarter of them (16 ... 128), which runs one
  subject (46 slices) with CAMs in well under 2 s on 2 CPU cores and trains on a CPU
  (``benchmarks/bench_pain_cam.py`` times both).
* **A model per slice location** (23 of them): each location n has its own fully connected
  layer FC_n on the global-average-pooled features of the left and right slice. FC_n is
  tied so that the knees are treated alike: it scores each knee's pain evidence
  ``e_n(knee) = w_n . GAP(f_knee) + b_n`` and outputs ``d_n = e_n(right) - e_n(left)``,
  so swapping the knees flips the output. With ``branch_per_location`` each location also
  has its own convolutional branch, exactly as the paper's 23 separate 2D models; by
  default the branch weights are shared across locations too (23x fewer parameters, and
  every slice of every subject trains the same filters — the better choice for the small
  simulated training sets MSKQuant can afford).
* **Fusion**: the 23 per-location outputs are concatenated and a fully connected layer
  gives the two classes (0: left knee painful, 1: right knee painful), trained with
  cross-entropy as in the paper.
* **CAM** (Zhou et al. via the paper): FC weights x final feature maps. For knee K at
  location n, ``CAM = s_K a_n sum_c w_n[c] f_K,n[c]`` with ``a_n`` the fusion weight of
  location n towards "right painful" minus towards "left painful" and ``s_K`` = +1 for the
  right and -1 for the left knee, so that positive values are evidence that *this* knee is
  the painful one and the mean of a CAM is exactly its contribution to the decision.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from mskquant.errors import ModelError

PAPER_WIDTHS = (64, 128, 256, 256, 512, 512)
DEMO_WIDTHS = (16, 32, 64, 64, 128, 128)
ARCHITECTURE_NAME = "siamese-pain-cam"


def branch_layers(widths: Sequence[int]) -> nn.Sequential:
    """The paper's 6-convolution branch (Conv-BN-ReLU; pooling after layers 1 and 3)."""
    if len(widths) != 6:
        raise ModelError(f"The Siamese branch has 6 convolution layers; {len(widths)} widths were given.")
    c = [1] + [int(w) for w in widths]
    layers = [nn.Conv2d(c[0], c[1], 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(c[1]), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, stride=2, padding=1)]
    for n in range(1, 6):
        layers += [nn.Conv2d(c[n], c[n + 1], 3, padding=1, bias=False), nn.BatchNorm2d(c[n + 1]), nn.ReLU(inplace=True)]
        if n == 2:
            layers.append(nn.MaxPool2d(2, stride=2))
    return nn.Sequential(*layers)


class SiamesePainNet(nn.Module):
    """Input ``(B, 2, L, H, W)``: knees (0 left, 1 right), L = 23 slice locations, 224 x 224."""

    def __init__(self, widths: Sequence[int] = DEMO_WIDTHS, n_locations: int = 23, branch_per_location: bool = False,
                 input_size: int = 224) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.n_locations = int(n_locations)
        self.branch_per_location = bool(branch_per_location)
        self.input_size = int(input_size)
        n_branches = self.n_locations if self.branch_per_location else 1
        self.branches = nn.ModuleList([branch_layers(self.widths) for _ in range(n_branches)])
        channels = self.widths[-1]
        self.location_weight = nn.Parameter(torch.randn(self.n_locations, channels) * (1.0 / channels ** 0.5))
        self.location_bias = nn.Parameter(torch.zeros(self.n_locations))
        self.fusion = nn.Linear(self.n_locations, 2)
        # the alignment template travels with the weights it was trained with
        self.register_buffer("template", torch.zeros(self.n_locations, input_size, input_size))

    @property
    def feature_size(self) -> int:
        return self.input_size // 8

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature maps ``(B, 2, L, C, h, w)`` of every slice of both knees."""
        b, k, n, h, w = x.shape
        if k != 2 or n != self.n_locations:
            raise ModelError(f"The network expects (batch, 2 knees, {self.n_locations} slices, H, W); got {tuple(x.shape)}.")
        if not self.branch_per_location:
            f = self.branches[0](x.reshape(b * k * n, 1, h, w))
            return f.reshape(b, k, n, *f.shape[1:])
        outs = [self.branches[i](x[:, :, i].reshape(b * k, 1, h, w)) for i in range(n)]
        f = torch.stack(outs, dim=1)  # (B*2, L, C, h, w)
        return f.reshape(b, k, n, *f.shape[2:])

    def evidence(self, features: torch.Tensor) -> torch.Tensor:
        """Per-knee, per-location pain evidence ``e_n(knee)`` ``(B, 2, L)``."""
        pooled = features.mean(dim=(-1, -2))  # global average pooling (B, 2, L, C)
        return (pooled * self.location_weight).sum(-1) + self.location_bias

    def fuse(self, evidence: torch.Tensor) -> torch.Tensor:
        d = evidence[:, 1] - evidence[:, 0]  # right minus left, per location
        return self.fusion(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.evidence(self.features(x)))

    def cam_weights(self) -> torch.Tensor:
        """``(L, C)``: the per-channel weights that turn feature maps into "this knee hurts" CAMs."""
        a = self.fusion.weight[1] - self.fusion.weight[0]  # (L,)
        return a[:, None] * self.location_weight

    def forward_with_cam(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, 2)`` and CAMs ``(B, 2, L, h, w)`` (positive: evidence that knee hurts)."""
        f = self.features(x)
        logits = self.fuse(self.evidence(f))
        cams = torch.einsum("bklchw,lc->bklhw", f, self.cam_weights())
        sign = torch.tensor([-1.0, 1.0], device=cams.device, dtype=cams.dtype).view(1, 2, 1, 1, 1)
        return logits, cams * sign

    def architecture(self) -> Dict:
        return {"name": ARCHITECTURE_NAME, "params": {"widths": list(self.widths), "n_locations": self.n_locations,
                                                      "branch_per_location": self.branch_per_location,
                                                      "input_size": self.input_size}}


def build_network(params: Dict) -> SiamesePainNet:
    allowed = {"widths", "n_locations", "branch_per_location", "input_size"}
    unknown = set(params) - allowed
    if unknown:
        raise ModelError(f"Unknown Siamese network parameter(s) {sorted(unknown)} in the model registry: fix Models.json.")
    return SiamesePainNet(**params)


def probability_right(logits: torch.Tensor) -> torch.Tensor:
    """P(right knee painful) from the two-class logits."""
    return F.softmax(logits, dim=-1)[..., 1]
