"""Pixel refinement (model config v3): the decoder's logits corrected by the frame's own pixels.

The decoder's finest features are at stride 4, so it places a 3-pixel vessel's edges from features
that pooled each 4x4 cell; on the held-out cines most of the J lost is a one-pixel error along every
edge. This head works at stride 2: each 2x2 cell's four pixels (pixel_unshuffle, so no detail is
pooled away), MobileNetV2's stride-2 features and the object's current probabilities predict one logit
residual per pixel. The image part is computed once per frame and shared by every object.

With `refine_prior` (model config v4) it also reads the object's probabilities on the previous frame of
the pass (the support's mask on the first). A guidewire inside its catheter has no edge of its own: the
memory, matched at stride 16, cannot place it, but its position a frame ago nearly can.

With `refine_blocks` (model config v5) residual blocks of dilated 3x3 convs follow, their dilations
doubling (2, 4, 8, ...): the two plain layers see about 14 pixels, too little to follow a wire along its
length past a crossing or a faint stretch. Their last convs are zero-initialised, like the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REFINE_FACTOR = 2  # works on 2x2 cells: a quarter of the full-resolution cost
FINE_CHANNELS = 16  # MobileNetV2 features.1 (stride 2)


class DilatedBlock(nn.Module):
    """x + conv(relu(conv(x))) at one dilation; the second conv starts at zero (an identity block)."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class PixelRefiner(nn.Module):
    def __init__(self, width: int = 16, prior: bool = False, blocks: int = 0) -> None:
        super().__init__()
        cells = REFINE_FACTOR**2
        self.image_conv = nn.Conv2d(cells, width, 3, padding=1)
        self.fine_conv = nn.Conv2d(FINE_CHANNELS, width, 1)
        self.mask_conv = nn.Conv2d(cells, width, 3, padding=1)
        self.hidden = nn.Conv2d(width, width, 3, padding=1)
        self.prior_conv: nn.Conv2d | None = None
        if prior:
            self.prior_conv = nn.Conv2d(cells, width, 3, padding=1)
            nn.init.zeros_(self.prior_conv.weight)
            nn.init.zeros_(self.prior_conv.bias)
        self.blocks = nn.Sequential(*(DilatedBlock(width, 2 ** (i + 1)) for i in range(blocks)))
        # Zero-initialised: adding the head to a trained model leaves its output unchanged until trained.
        self.out = nn.Conv2d(width, cells, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, logits: torch.Tensor, image: torch.Tensor, fine: torch.Tensor,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        # logits: B*K, 1, H, W (object-major within each batch item);  image: B, 1, H, W;
        # fine: B, 16, H/2, W/2  ->  refined logits B*K, 1, H, W
        k = logits.shape[0] // image.shape[0]
        context = self.image_conv(F.pixel_unshuffle(image, REFINE_FACTOR)) + self.fine_conv(fine)  # B, w, H/2, W/2
        context = context.repeat_interleave(k, dim=0)  # B*K: the same order as the decoder's copies
        # Probabilities, not logits, as input: bounded, whatever the decoder's confidence.
        mask = F.pixel_unshuffle(torch.sigmoid(logits), REFINE_FACTOR)  # B*K, 4, H/2, W/2
        x = context + self.mask_conv(mask)
        if self.prior_conv is not None and prior is not None:  # prior: B*K, 1, H, W previous probabilities
            x = x + self.prior_conv(F.pixel_unshuffle(prior, REFINE_FACTOR))
        x = F.relu(x)
        x = self.blocks(F.relu(self.hidden(x)))  # B*K, w, H/2, W/2 (identity when there are no blocks)
        return logits + F.pixel_shuffle(self.out(x), REFINE_FACTOR)
