"""MobileNetV2 trunk with torchvision's parameter names (features.N...).

Written here because torchvision from PyPI does not import beside the CPU torch build we use, and we
only need the trunk up to stride 16. Keeping torchvision's names lets us load its ImageNet weights as-is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from XRayVOSLib.errors import InputError
from XRayVOSLib.model.digest import file_sha256
from XRayVOSLib.model.layers import FrozenBatchNorm2d

# torchvision's published ImageNet MobileNetV2 weights (IMAGENET1K_V1, mobilenet_v2-b0353104.pth), the
# training recipe's start. A .pth is a pickle: only this known file is ever opened (see load_imagenet_weights).
IMAGENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

# (expand ratio t, channels c, repeats n, first stride s), as in the MobileNetV2 paper / torchvision.
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        FrozenBatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(cin, hidden, 1, 1))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            FrozenBatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Trunk(nn.Module):
    """features.0 .. features.13 of MobileNetV2 (width 1.0): outputs at strides 2, 4, 8 and 16.

    Blocks past stride 16 are dropped: matching never runs coarser than stride 16, and they would cost
    about a quarter of the encoder's time for nothing.
    """

    channels = {2: 16, 4: 24, 8: 32, 16: 96}

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu(in_channels, 32, 3, 2)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*features[:14])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: B, 1, H, W  ->  f2: B, 16, H/2, W/2;  f4: B, 24, H/4, W/4;  f8: B, 32, H/8, W/8;  f16: B, 96, H/16, W/16
        f2 = self.features[:2](x)
        f4 = self.features[2:4](f2)
        f8 = self.features[4:7](f4)
        f16 = self.features[7:14](f8)
        return f2, f4, f8, f16


def load_imagenet_weights(trunk: MobileNetV2Trunk, path: str | Path) -> list[str]:
    """Load torchvision's ImageNet MobileNetV2 weights; the RGB stem is summed to one grey channel.

    Returns the names of trunk parameters that were not in the file (should be empty). Any other file is
    refused by its sha256 before it is opened.
    """
    path = Path(path)
    if file_sha256(path) != IMAGENET_SHA256:
        raise InputError(f"init weights {path} are neither an XRayVOS model (.safetensors) nor torchvision's "
                         f"ImageNet MobileNetV2 file mobilenet_v2-b0353104.pth (sha256 {IMAGENET_SHA256[:8]}...)")
    # Torchvision publishes these weights only as a pickle. weights_only=True is torch's restricted
    # unpickler (tensors and plain containers, no code), and the hash above has already pinned the file.
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    loaded = {}
    for name, tensor in state.items():
        if name not in own:
            continue  # classifier and blocks past stride 16
        if name == "features.0.0.weight" and tensor.shape[1] == 3 and own[name].shape[1] == 1:
            tensor = tensor.sum(dim=1, keepdim=True)  # grey = equal R, G, B, so the responses add
        loaded[name] = tensor
    trunk.load_state_dict(loaded, strict=False)
    return sorted(set(own) - set(loaded))
