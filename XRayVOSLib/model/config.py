"""Architecture config stored inside every checkpoint, so a checkpoint describes itself.

There is one config version: a file written for another version (or with fields this code does not know)
is refused with a ModelError that names the file, rather than loaded with guessed defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from XRayVOSLib.errors import ModelError

ARCHITECTURE = "xrayvos-lmn-mbv2"
CONFIG_VERSION = 6
STRIDE = 16  # matching stride: keys, values and the readout live on the 1/16 grid


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = ARCHITECTURE
    version: int = CONFIG_VERSION
    key_dim: int = 64  # STCN's key size
    value_dim: int = 128  # smaller than STCN's 512: the readout cost on CPU scales with it
    mask_encoder_channels: tuple[int, ...] = (16, 32, 64, 128)  # value-encoder widths at strides 2, 4, 8, 16
    decoder_channels: tuple[int, ...] = (64, 48, 16)  # at strides 16, 8, 4: kept small for CPU
    projection_dim: int = 64  # contrastive projection head
    # Grey X-ray intensity in [0, 1] is normalised with the mean/std of ImageNet's three channels.
    norm_mean: float = 0.449
    norm_std: float = 0.226

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise ModelError(f"architecture {self.architecture!r} is not {ARCHITECTURE!r} supported by this code")
        if self.version != CONFIG_VERSION or isinstance(self.version, bool):
            raise ModelError(f"model config version {self.version!r}: this code reads version {CONFIG_VERSION} only")
        if len(self.mask_encoder_channels) != 4 or len(self.decoder_channels) != 3:
            raise ModelError(f"mask_encoder_channels needs 4 widths and decoder_channels 3, got "
                             f"{list(self.mask_encoder_channels)} and {list(self.decoder_channels)}")

    @property
    def stride(self) -> int:
        return STRIDE

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mask_encoder_channels"] = list(self.mask_encoder_channels)
        data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        """The config of a checkpoint's metadata; anything but this version's fields is a one-line ModelError."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: the model config must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != CONFIG_VERSION or isinstance(version, bool):
            raise ModelError(f"{source}: model config version {version!r} is not supported; this code reads "
                             f"version {CONFIG_VERSION} only (retrain or convert the model)")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelError(f"{source}: unknown model config fields {sorted(unknown)}; this code reads "
                             f"version {CONFIG_VERSION} without them")
        values = dict(data)
        for name in ("mask_encoder_channels", "decoder_channels"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        try:
            return cls(**values)
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
