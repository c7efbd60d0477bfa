"""The local-matching memory network: query/key encoder, value encoder, decoder, soft aggregation.

The memory (which frames, how many) lives in XRayVOSLib.inference.memory; this module only turns frames
into keys/values and a readout into masks, as STCN separates network and memory manager.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from XRayVOSLib.model.config import STRIDE, ModelConfig
from XRayVOSLib.model.layers import DepthwiseBlock, ResBlock, UpsampleBlock
from XRayVOSLib.model.matching import memory_readout
from XRayVOSLib.model.mobilenet import MobileNetV2Trunk
from XRayVOSLib.model.normalize import normalize
from XRayVOSLib.settings import RunSettings


@dataclass
class QueryFeatures:
    """Everything a frame's encoding yields. key/feature at the matching stride 16; skips finest last."""

    key: torch.Tensor  # B, Ck, H/16, W/16
    feature: torch.Tensor  # B, Cm, H/16, W/16  (fed to the value encoder and decoder)
    skips: list[torch.Tensor]  # [f8, f4]: the decoder's skip connections
    image: torch.Tensor  # B, 1, H, W normalised (the value encoder needs it)


class KeyEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.trunk = MobileNetV2Trunk(in_channels=1)
        self.match_channels = MobileNetV2Trunk.channels[16]
        self.key_proj = nn.Conv2d(self.match_channels, config.key_dim, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        _f2, f4, f8, f16 = self.trunk(image)
        return self.key_proj(f16), f16, [f8, f4]


class ValueEncoder(nn.Module):
    """Image + this object's mask + the other objects' mask -> value features at the matching stride."""

    def __init__(self, config: ModelConfig, feature_channels: int) -> None:
        super().__init__()
        blocks, cin = [], 3
        for width in config.mask_encoder_channels:  # four stride-2 blocks: down to the matching stride 16
            blocks.append(DepthwiseBlock(cin, width, stride=2))
            cin = width
        self.down = nn.Sequential(*blocks)
        self.fuse = nn.Conv2d(cin + feature_channels, config.value_dim, 3, padding=1)
        self.refine = ResBlock(config.value_dim, config.value_dim)

    def forward(self, image: torch.Tensor, feature: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # image: B, 1, H, W;  feature: B, Cm, h, w;  masks: B, K, H, W  ->  values B, K, Cv, h, w
        b, k = masks.shape[:2]
        others = (masks.sum(dim=1, keepdim=True) - masks).clamp(0, 1)
        x = torch.stack([image.expand(-1, k, -1, -1), masks, others], dim=2).flatten(0, 1)  # B*K, 3, H, W
        x = self.down(x)
        feat = feature.unsqueeze(1).expand(-1, k, -1, -1, -1).flatten(0, 1)
        v = self.refine(self.fuse(torch.cat([x, feat], dim=1)))
        return v.view(b, k, *v.shape[1:])


DETAIL_FACTOR = 4  # the decoder's finest map is at stride 4


class Decoder(nn.Module):
    """Readout + query feature -> one logit map per object at full resolution (STCN-style skips)."""

    def __init__(self, config: ModelConfig, feature_channels: int) -> None:
        super().__init__()
        c0, c1, c2 = config.decoder_channels
        ch = MobileNetV2Trunk.channels
        self.compress = ResBlock(config.value_dim + feature_channels, c0)
        self.up8 = UpsampleBlock(ch[8], c0, c1)
        self.up4 = UpsampleBlock(ch[4], c1, c2, light=True)
        self.pred = nn.Conv2d(c2, 1, 3, padding=1)
        # Sub-pixel detail: one logit residual per pixel of each 4x4 cell, laid out by pixel_shuffle. Thin
        # wires need detail finer than a 4-pixel cell, which bilinear upsampling alone cannot draw.
        # Zero-initialised: a fresh head starts as plain bilinear upsampling of the stride-4 logits.
        self.detail = nn.Conv2d(c2, DETAIL_FACTOR**2, 3, padding=1)
        nn.init.zeros_(self.detail.weight)
        nn.init.zeros_(self.detail.bias)

    def forward(self, readout: torch.Tensor, q: QueryFeatures, size: tuple[int, int]) -> torch.Tensor:
        """readout: B, K, Cv, h, w  ->  object logits B, K, H, W (H, W: 4x the stride-4 map)."""
        b, k = readout.shape[:2]
        rep = lambda t: t.unsqueeze(1).expand(-1, k, *t.shape[1:]).flatten(0, 1)  # noqa: E731 (B*K copies)
        x = self.compress(torch.cat([readout.flatten(0, 1), rep(q.feature)], dim=1))
        x = self.up8(rep(q.skips[0]), x)
        x = F.relu(self.up4(rep(q.skips[1]), x))  # B*K, c2, H/4, W/4
        logits = F.interpolate(self.pred(x), size=size, mode="bilinear", align_corners=False)
        logits = logits + F.pixel_shuffle(self.detail(x), DETAIL_FACTOR)
        return logits.view(b, k, *size)


def _object_and_background_probabilities(object_logits: torch.Tensor) -> torch.Tensor:
    """B, K, H, W logits -> B, K+1, H, W independent probabilities (background = no object), clamped."""
    p = torch.sigmoid(object_logits.float())
    background = torch.prod(1 - p, dim=1, keepdim=True)
    return torch.cat([background, p], dim=1).clamp_(1e-7, 1 - 1e-7)


def soft_aggregate(object_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """STCN's soft aggregation. object_logits: B, K, H, W -> (logits, probs) B, K+1, H, W (background first)."""
    all_p = _object_and_background_probabilities(object_logits)
    logits = torch.log(all_p / (1 - all_p))
    return logits, torch.softmax(logits, dim=1)


def aggregate_probabilities(object_logits: torch.Tensor) -> torch.Tensor:
    """soft_aggregate's probabilities only, for inference: softmax(log odds) is odds / sum(odds).

    Skipping the log and exp takes 1.6 ms instead of 8.4 ms for one 512x512 object on the 2-core CPU
    (one-off micro-benchmark); the results agree to float rounding (Testing/propagation/test_propagator.py).
    """
    odds = _object_and_background_probabilities(object_logits)
    odds = odds.div_(1 - odds)
    return odds.div_(odds.sum(dim=1, keepdim=True))


class LocalMatchingNetwork(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.key_encoder = KeyEncoder(self.config)
        fc = self.key_encoder.match_channels
        self.value_encoder = ValueEncoder(self.config, fc)
        self.decoder = Decoder(self.config, fc)
        # Projection head for the object-aware contrastive loss (training only).
        key_dim = self.config.key_dim
        self.projection = nn.Sequential(
            nn.Conv2d(key_dim, key_dim, 1), nn.ReLU(), nn.Conv2d(key_dim, self.config.projection_dim, 1)
        )

    @property
    def stride(self) -> int:
        return STRIDE

    def encode_query(self, image01: torch.Tensor) -> QueryFeatures:
        """image01: B, 1, H, W in [0, 1], H and W multiples of 16."""
        image = normalize(image01, self.config.norm_mean, self.config.norm_std)
        key, feature, skips = self.key_encoder(image)
        return QueryFeatures(key=key, feature=feature, skips=skips, image=image)

    def encode_value(self, q: QueryFeatures, masks: torch.Tensor) -> torch.Tensor:
        """masks: B, K, H, W object probabilities -> values B, K, Cv, h, w."""
        return self.value_encoder(q.image, q.feature, masks)

    def segment(
        self,
        q: QueryFeatures,
        mem_keys: torch.Tensor,
        mem_values: torch.Tensor,
        matching: str = RunSettings.method,
        window: int = RunSettings.window,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read memory and decode. mem_keys: B, N, Ck, h, w; mem_values: B, N, K, Cv, h, w.

        Returns (logits, probs), both B, K+1, H, W with background first.
        """
        readout = memory_readout(q.key, mem_keys, mem_values, matching, window)
        object_logits = self.decoder(readout, q, tuple(q.image.shape[-2:]))
        return soft_aggregate(object_logits)

    def project(self, key: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding: B, Ck, h, w -> L2-normalised B, D, h, w."""
        return F.normalize(self.projection(key), dim=1)
