"""Training configuration: one dataclass, loadable from a JSON file (`xrayvos train --config CFG.json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from XRayVOSLib.errors import InputError
from XRayVOSLib.settings import RunSettings


@dataclass
class LossConfig:
    cross_entropy: bool = True  # bootstrapped CE (STCN)
    contrastive: bool = True  # object-aware supervised contrastive loss (the method)
    contrastive_weight: float = 0.01
    contrastive_temperature: float = 0.1
    consistency: bool = False  # label-free space-time consistency (two-shot student)
    consistency_weight: float = 0.1
    bootstrap_start: int = 1000
    bootstrap_end: int = 4000
    bootstrap_top_p: float = 0.15


@dataclass
class TrainConfig:
    data: str = "synthetic"  # "synthetic" (generated on the fly) or a DAVIS-layout folder
    pseudo_root: str | None = None  # pseudo-labels for the two-shot student
    synthetic_length: int = 100_000  # items per synthetic "epoch"
    size: int = 320  # training crop (square)
    clip_length: int = 3
    max_objects: int = 3
    max_skip: int = 10
    batch_size: int = 4
    steps: int = 10_000
    lr: float = 2e-4
    trunk_lr_scale: float = 0.25  # the ImageNet trunk moves slower than the new heads
    # Keep the ImageNet MobileNetV2 trunk fixed: on CPU its depthwise-conv backward costs ~10x the rest of
    # the step. Turn off on a GPU to fine-tune the trunk too.
    freeze_trunk: bool = True
    weight_decay: float = 1e-4
    grad_clip: float = 3.0
    matching: str = RunSettings.method
    window: int = RunSettings.window
    init: str | None = None  # ImageNet MobileNetV2 .pth, or an XRayVOS checkpoint to fine-tune
    out_dir: str = "runs/train"
    save_every: int = 250
    log_every: int = 10
    num_workers: int = 1
    loader_refresh: int = 200  # steps per DataLoader pass (the skip curriculum updates between passes)
    synth_frames: int = 16  # frames per on-the-fly synthetic cine (bounds the usable skip)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # fp16 autocast on CUDA (ignored on CPU)
    augment: str = "weak"
    losses: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{source}: unknown training config keys {sorted(unknown)}")
        values = dict(data)
        if "losses" in values:
            loss_known = {f.name for f in fields(LossConfig)}
            bad = set(values["losses"]) - loss_known
            if bad:
                raise InputError(f"{source}: unknown loss keys {sorted(bad)}")
            values["losses"] = LossConfig(**values["losses"])
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"training config {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"training config {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))
