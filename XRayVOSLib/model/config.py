"""Architecture config stored inside every checkpoint, so a checkpoint describes itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from XRayVOSLib.errors import ModelError

ARCHITECTURE = "xrayvos-lmn-mbv2"
CONFIG_VERSION = 5  # 2 added `detail_head`, 3 `refine_head`, 4 `refine_prior`, 5 `refine_blocks` and
# `prior_warp`; older checkpoints load with them off


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = ARCHITECTURE
    version: int = CONFIG_VERSION
    stride: int = 16  # matching stride: 16, or 8 for thin vessels
    key_dim: int = 64  # STCN's key size
    value_dim: int = 128  # smaller than STCN's 512: the readout cost on CPU scales with it
    mask_encoder_channels: tuple[int, ...] = (16, 32, 64, 128)  # value-encoder widths at strides 2, 4, 8, 16
    decoder_channels: tuple[int, ...] = (64, 48, 16)  # at strides 16 (or 8), 8, 4: kept small for CPU
    projection_dim: int = 64  # contrastive projection head
    # Sub-pixel residual on the stride-4 logits (see network.Decoder): thin wires need detail finer than
    # a 4-pixel cell, which bilinear upsampling alone cannot draw.
    detail_head: bool = True
    # Stride-2 pixel refinement of the logits from the frame's own pixels (see model.refine).
    refine_head: bool = False
    # The refiner also reads the previous frame's final probabilities (see model.refine): thin devices
    # hidden inside another object (a guidewire in its catheter) have no edge of their own to refine.
    refine_prior: bool = False
    # Dilated residual blocks in the refiner (see model.refine): a wider view along thin devices.
    refine_blocks: int = 0
    # The prior is the previous frame's probabilities warped onto the current frame by optical flow
    # (see inference.warp); a model trained on aligned priors must be given aligned priors.
    prior_warp: bool = False
    # Grey X-ray intensity in [0, 1] is normalised with the mean/std of ImageNet's three channels.
    norm_mean: float = 0.449
    norm_std: float = 0.226

    def __post_init__(self) -> None:
        if self.stride not in (8, 16):
            raise ModelError(f"matching stride must be 8 or 16, got {self.stride}")
        if self.refine_prior and not self.refine_head:
            raise ModelError("refine_prior needs refine_head: the prior is read by the pixel refiner")
        if self.refine_blocks < 0 or (self.refine_blocks and not self.refine_head):
            raise ModelError(f"refine_blocks ({self.refine_blocks}) must be >= 0, and > 0 only with refine_head")
        if self.prior_warp and not self.refine_prior:
            raise ModelError("prior_warp needs refine_prior: it aligns the prior that the refiner reads")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mask_encoder_channels"] = list(self.mask_encoder_channels)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"{source}: unknown model config fields {sorted(unknown)}; newer XRayVOS needed?")
        if data.get("architecture", ARCHITECTURE) != ARCHITECTURE:
            raise ModelError(
                f"{source}: architecture {data.get('architecture')!r} is not {ARCHITECTURE!r} supported by this code"
            )
        if int(data.get("version", CONFIG_VERSION)) > CONFIG_VERSION:
            raise ModelError(f"{source}: config version {data['version']} is newer than this code ({CONFIG_VERSION})")
        values = dict(data)
        if int(values.get("version", CONFIG_VERSION)) < 2:
            values.setdefault("detail_head", False)  # version 1 predates the detail head
        if int(values.get("version", CONFIG_VERSION)) < 3:
            values.setdefault("refine_head", False)
        if int(values.get("version", CONFIG_VERSION)) < 4:
            values.setdefault("refine_prior", False)
        if int(values.get("version", CONFIG_VERSION)) < 5:
            values.setdefault("refine_blocks", 0)
            values.setdefault("prior_warp", False)
        for name in ("mask_encoder_channels", "decoder_channels"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        return cls(**values)
