"""Small building blocks shared by the encoders and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters as buffers (STCN freezes BN: batches are tiny).

    Same state-dict names as nn.BatchNorm2d (weight, bias, running_mean, running_var), so torchvision
    weights load directly.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class ResBlock(nn.Module):
    """Two 3x3 convs with a residual connection (as STCN's decoder ResBlock), GroupNorm-free for speed."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(F.relu(x))))
        return self.skip(x) + y


class DepthwiseBlock(nn.Module):
    """Depthwise-separable conv block with a stride: cheap downsampling for the mask (value) encoder."""

    def __init__(self, cin: int, cout: int, stride: int = 2) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.refine = nn.Conv2d(cout, cout, 3, 1, 1, groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pw(self.dw(x)))
        return F.relu(x + self.refine(x))


class UpsampleBlock(nn.Module):
    """Upsample the coarse map x2 and fuse a skip connection (after STCN's UpsampleBlock).

    The skip is projected with a 1x1 conv and, at the finest level (`light`), one 3x3 conv replaces the
    ResBlock: at stride 4 these layers cost more than the whole encoder on a CPU.
    """

    def __init__(self, skip_channels: int, up_channels: int, out_channels: int, light: bool = False) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, up_channels, 1)
        self.out: nn.Module = (nn.Conv2d(up_channels, out_channels, 3, padding=1) if light
                               else ResBlock(up_channels, out_channels))

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(up, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(F.relu(self.skip_conv(skip) + up))
