"""The convolutional Siamese network of Chang et al. (Methods, *Neural network architecture*,
Figure 2 and its layer table), with class activation maps (numeric core, PyTorch).

Paper -> here:

* **Branch** (shared by the left and the right knee, "Siamese"): 6 convolutions, each with
  batch normalisation and ReLU; conv 1 is 7x7 with stride 2, max pooling (3x3, stride 2)
  after layer 1 and (2x2, stride 2) after layer 3; every other convolution 3x3, stride 1.
  A 224 x 224 slice gives C x 28 x 28 final feature maps. The paper used 64, 128, 256, 256,
  512, 512 filters (C = 512). MSKQuant keeps the layer structure and makes the widths a
  parameter: the bundled demo model uses an eighth of them (8 ... 64), which runs one
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
* **Pooling** of each location's map ``w_n . f`` over the 28 x 28 positions: the paper's
  global average pooling, or (``pooling="lse"``) log-sum-exp pooling
  ``log(mean(exp(r x))) / r``, a smooth maximum. Average pooling lets a lesion count only in
  proportion to its area: a 1 cm bone-marrow lesion covers ~0.5 % of the field and barely
  moves the mean, so the network learns large findings (effusion) and misses small ones — much
  as the paper's hot spots were effusion-synovitis in 89 % of cases and bone-marrow lesions in
  5 %. With LSE a small lesion can decide; the CAM itself (FC weights x feature maps) is
  unchanged. ``pooling="average"`` is the paper's and the demo model's.
* **Fusion**: the 23 per-location outputs are concatenated and a fully connected layer
  gives the two classes (0: left knee painful, 1: right knee painful), trained with
  cross-entropy as in the paper.
* **CAM** (Zhou et al. via the paper): FC weights x final feature maps. For knee K at
  location n, ``CAM = a_n sum_c w_n[c] f_K,n[c]`` with ``a_n`` the fusion weight of location n
  towards "right painful" minus towards "left painful". Because ``d_n`` is right minus left,
  the right knee's CAM adds to the "right painful" margin and the left knee's CAM to the "left
  painful" margin: positive values are evidence that *this* knee is the painful one, and
  ``sum(mean CAM right) - sum(mean CAM left)`` is exactly the decision's logit margin.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from mskquant.errors import ModelError

from .parameters import POOLINGS

PAPER_WIDTHS = (64, 128, 256, 256, 512, 512)
DEMO_WIDTHS = (8, 16, 32, 32, 64, 64)  # the bundled demo model
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


def feature_grid(branch: nn.Sequential) -> Tuple[float, float]:
    """Where the final feature maps sit on the input: ``(stride, centre)`` such that map cell m
    is centred on input pixel ``stride * m + centre`` (pixel centres at integers).

    Composed from the kernels, strides and paddings of the convolutions and poolings: for the
    paper's branch (conv 7x7/2 pad 3, max pool 3x3/2 pad 1, max pool 2x2/2) it is (8, 2), not
    the (8, 3.5) a plain up-sampling of the 28 x 28 map onto 224 x 224 assumes.
    """
    stride, centre = 1.0, 0.0
    for layer in branch:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v[0] if isinstance(v, tuple) else v for v in (layer.kernel_size, layer.stride, layer.padding))
            centre += stride * ((k - 1) / 2.0 - p)
            stride *= s
    return stride, centre


class SiamesePainNet(nn.Module):
    """Input ``(B, 2, L, H, W)``: knees (0 left, 1 right), L = 23 slice locations, 224 x 224."""

    def __init__(self, widths: Sequence[int] = DEMO_WIDTHS, n_locations: int = 23, branch_per_location: bool = False,
                 input_size: int = 224, pooling: str = "average", lse_sharpness: float = 5.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"Unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}.")
        self.widths = tuple(int(w) for w in widths)
        self.n_locations = int(n_locations)
        self.branch_per_location = bool(branch_per_location)
        self.input_size = int(input_size)
        self.pooling = pooling
        self.lse_sharpness = float(lse_sharpness)
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

    def feature_grid(self) -> Tuple[float, float]:
        """``(stride, centre)`` of the final feature maps on the input pixels (:func:`feature_grid`)."""
        return feature_grid(self.branches[0])

    def location_maps(self, features: torch.Tensor) -> torch.Tensor:
        """``w_n . f`` per pixel ``(B, 2, L, h, w)``: FC_n applied at every position."""
        return torch.einsum("bklchw,lc->bklhw", features, self.location_weight)

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """Average (paper) or log-sum-exp pooling over each 28 x 28 map."""
        flat = maps.flatten(-2)
        if self.pooling == "average":
            return flat.mean(-1)
        r = self.lse_sharpness
        return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r

    def fuse(self, evidence: torch.Tensor) -> torch.Tensor:
        d = evidence[:, 1] - evidence[:, 0]  # right minus left, per location
        return self.fusion(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.location_maps(self.features(x))
        return self.fuse(self.pool(maps) + self.location_bias)

    def location_gain(self) -> torch.Tensor:
        """``a_n``: how much location n's output moves "right painful" against "left painful"."""
        return self.fusion.weight[1] - self.fusion.weight[0]

    def forward_with_cam(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits ``(B, 2)``, CAMs ``(B, 2, L, h, w)`` and per-slice contributions ``(B, 2, L)``.

        CAM = a_n w_n . f: positive where a knee shows evidence that *it* is the painful one
        (d_n is right minus left, so the right knee's evidence raises "right painful" and the left
        knee's raises "left painful" alike). A slice's contribution a_n pool(w_n . f) is exactly
        what it adds to its knee's side of the decision: ``sum(right) - sum(left)`` plus the
        biases is the logit margin. With average pooling it is the slice's mean CAM (the paper's
        criterion for the most pain-relevant slice).
        """
        maps = self.location_maps(self.features(x))
        pooled = self.pool(maps)
        logits = self.fuse(pooled + self.location_bias)
        a = self.location_gain()
        return logits, maps * a[:, None, None], pooled * a

    def architecture(self) -> Dict:
        return {"name": ARCHITECTURE_NAME, "params": {"widths": list(self.widths), "n_locations": self.n_locations,
                                                      "branch_per_location": self.branch_per_location,
                                                      "input_size": self.input_size, "pooling": self.pooling,
                                                      "lse_sharpness": self.lse_sharpness}}


def build_network(params: Dict) -> SiamesePainNet:
    allowed = {"widths", "n_locations", "branch_per_location", "input_size", "pooling", "lse_sharpness"}
    unknown = set(params) - allowed
    if unknown:
        raise ModelError(f"Unknown Siamese network parameter(s) {sorted(unknown)} in the model registry: fix Models.json.")
    return SiamesePainNet(**params)


def probability_right(logits: torch.Tensor) -> torch.Tensor:
    """P(right knee painful) from the two-class logits."""
    return F.softmax(logits, dim=-1)[..., 1]
