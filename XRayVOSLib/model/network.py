"""The local-matching memory network: query/key encoder, value encoder, decoder, soft aggregation.

The memory (which frames, how many) lives in XRayVOSLib.inference.memory; this module only turns frames
into keys/values and a readout into masks, as STCN separates network and memory manager.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.layers import DepthwiseBlock, ResBlock, UpsampleBlock
from XRayVOSLib.model.matching import memory_readout
from XRayVOSLib.model.mobilenet import MobileNetV2Trunk
from XRayVOSLib.model.refine import PixelRefiner
from XRayVOSLib.model.normalize import normalize


@dataclass
class QueryFeatures:
    """Everything a frame's encoding yields. key/feature at the matching stride s; skips finest last."""

    key: torch.Tensor  # B, Ck, H/s, W/s
    feature: torch.Tensor  # B, Cm, H/s, W/s  (fed to the value encoder and decoder)
    skips: list[torch.Tensor]  # [f8 (stride 16 only), f4, f2]
    image: torch.Tensor  # B, 1, H, W normalised (the value encoder needs it)


class KeyEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.stride = config.stride
        self.trunk = MobileNetV2Trunk(in_channels=1)
        ch = MobileNetV2Trunk.channels
        if self.stride == 8:
            # Thin vessels: match at stride 8, with stride-16 context brought up.
            self.fuse16 = nn.Conv2d(ch[16], ch[8] * 2, 1)
            self.fuse8 = nn.Conv2d(ch[8], ch[8] * 2, 3, padding=1)
            self.match_channels = ch[8] * 2
        else:
            self.match_channels = ch[16]
        self.key_proj = nn.Conv2d(self.match_channels, config.key_dim, 3, padding=1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        f2, f4, f8, f16 = self.trunk(image)
        if self.stride == 8:
            up = F.interpolate(self.fuse16(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False)
            feature, skips = F.relu(self.fuse8(f8) + up), [f4, f2]
        else:
            feature, skips = f16, [f8, f4, f2]
        return self.key_proj(feature), feature, skips


class ValueEncoder(nn.Module):
    """Image + this object's mask + the other objects' mask -> value features at the matching stride."""

    def __init__(self, config: ModelConfig, feature_channels: int) -> None:
        super().__init__()
        widths = list(config.mask_encoder_channels)
        levels = 4 if config.stride == 16 else 3
        blocks, cin = [], 3
        for width in widths[:levels]:
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
        self.up8 = UpsampleBlock(ch[8], c0, c1) if config.stride == 16 else None
        self.up4 = UpsampleBlock(ch[4], c1 if config.stride == 16 else c0, c2, light=True)
        self.pred = nn.Conv2d(c2, 1, 3, padding=1)
        self.detail: nn.Conv2d | None = None
        if config.detail_head:
            # One logit residual per pixel of each 4x4 cell, laid out by pixel_shuffle. Zero-initialised, so
            # adding the head to a trained model leaves its output unchanged until training moves it.
            self.detail = nn.Conv2d(c2, DETAIL_FACTOR**2, 3, padding=1)
            nn.init.zeros_(self.detail.weight)
            nn.init.zeros_(self.detail.bias)
        self.refine = (PixelRefiner(prior=config.refine_prior, blocks=config.refine_blocks)
                       if config.refine_head else None)

    def forward(self, readout: torch.Tensor, q: QueryFeatures, size: tuple[int, int],
                prior: torch.Tensor | None = None) -> torch.Tensor:
        # readout: B, K, Cv, h, w;  prior: B, K, H, W or None  ->  logits B, K, H, W
        logits = self.coarse(readout, q, size)
        if self.refine is not None:
            logits = self.refine(logits, q.image, q.skips[-1], None if prior is None else prior.flatten(0, 1)[:, None])
        return logits.view(readout.shape[0], readout.shape[1], *size)

    def coarse(self, readout: torch.Tensor, q: QueryFeatures, size: tuple[int, int]) -> torch.Tensor:
        """The logits before pixel refinement: B*K, 1, H, W (object-major within each batch item)."""
        k = readout.shape[1]
        rep = lambda t: t.unsqueeze(1).expand(-1, k, *t.shape[1:]).flatten(0, 1)  # noqa: E731 (B*K copies)
        x = self.compress(torch.cat([readout.flatten(0, 1), rep(q.feature)], dim=1))
        if self.up8 is not None:
            x = self.up8(rep(q.skips[0]), x)
        x = F.relu(self.up4(rep(q.skips[-2]), x))  # B*K, c2, H/4, W/4
        logits = F.interpolate(self.pred(x), size=size, mode="bilinear", align_corners=False)
        if self.detail is not None:
            logits = logits + F.pixel_shuffle(self.detail(x), DETAIL_FACTOR)  # H, W are 4x the stride-4 map
        return logits


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
    (one-off micro-benchmark); the results agree to float rounding (Testing/test_propagator.py).
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
        self.projection = nn.Sequential(
            nn.Conv2d(self.config.key_dim, self.config.key_dim, 1), nn.ReLU(), nn.Conv2d(self.config.key_dim, self.config.projection_dim, 1)
        )

    @property
    def stride(self) -> int:
        return self.config.stride

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
        matching: str = "local",
        window: int = 15,
        top_k: int | None = None,
        prior: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read memory and decode. mem_keys: B, N, Ck, h, w; mem_values: B, N, K, Cv, h, w.

        Returns (logits, probs), both B, K+1, H, W with background first.
        """
        readout = memory_readout(q.key, mem_keys, mem_values, matching, window, top_k)
        object_logits = self.decoder(readout, q, tuple(q.image.shape[-2:]), prior)
        return soft_aggregate(object_logits)

    def project(self, key: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding: B, Ck, h, w -> L2-normalised B, D, h, w."""
        return F.normalize(self.projection(key), dim=1)
