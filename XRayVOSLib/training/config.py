"""Training configuration: one dataclass, loadable from a JSON file (`xrayvos train --config CFG.json`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from XRayVOSLib.errors import InputError
from XRayVOSLib.settings import NETWORK_METHODS, RunSettings

AUGMENT_STRENGTHS = ("none", "weak", "strong")  # training/augment.py's STRENGTHS (that module imports MONAI)
SIZE_MULTIPLE = 16  # the network's matching stride: crops are whole 16-pixel cells


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

    def validate(self, source: str = "config") -> "LossConfig":
        for name in ("cross_entropy", "contrastive", "consistency"):
            _check_bool(source, f"losses.{name}", getattr(self, name))
        for name in ("contrastive_weight", "consistency_weight"):
            _check_number(source, f"losses.{name}", getattr(self, name), 0.0, "a number >= 0")
        _check_number(source, "losses.contrastive_temperature", self.contrastive_temperature, 0.0, "a number > 0",
                      strict=True)
        _check_number(source, "losses.bootstrap_top_p", self.bootstrap_top_p, 0.0, "a number in (0, 1]",
                      strict=True, maximum=1.0)
        _check_int(source, "losses.bootstrap_start", self.bootstrap_start, 0)
        _check_int(source, "losses.bootstrap_end", self.bootstrap_end, self.bootstrap_start)
        return self


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
    synth_generator: str = "v1"  # which generator draws them (XRayVOSLib.synth.GENERATORS)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # fp16 autocast on CUDA (ignored on CPU)
    augment: str = "weak"
    losses: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, source: str = "config") -> "TrainConfig":
        """InputError naming `source` and the key unless every value has its type and range; returns self."""
        for name in ("synthetic_length", "batch_size", "steps", "save_every", "log_every", "loader_refresh",
                     "max_objects", "max_skip"):
            _check_int(source, name, getattr(self, name), 1)
        _check_int(source, "size", self.size, 2 * SIZE_MULTIPLE)
        if self.size % SIZE_MULTIPLE:
            raise InputError(f"{source}: size must be a multiple of {SIZE_MULTIPLE}, got {self.size}")
        _check_int(source, "clip_length", self.clip_length, 2)  # a memory frame and at least one query
        _check_int(source, "synth_frames", self.synth_frames, self.clip_length)
        _check_int(source, "num_workers", self.num_workers, 0)
        _check_int(source, "seed", self.seed, 0)
        _check_number(source, "lr", self.lr, 0.0, "a number > 0", strict=True)
        _check_number(source, "grad_clip", self.grad_clip, 0.0, "a number > 0", strict=True)
        _check_number(source, "trunk_lr_scale", self.trunk_lr_scale, 0.0, "a number >= 0")
        _check_number(source, "weight_decay", self.weight_decay, 0.0, "a number >= 0")
        for name in ("freeze_trunk", "amp"):
            _check_bool(source, name, getattr(self, name))
        if self.synth_generator not in ("v1", "v2"):  # XRayVOSLib.synth.GENERATORS, not imported: it needs cv2
            raise InputError(f"{source}: synth_generator must be v1 or v2, got {self.synth_generator!r}")
        if self.matching not in NETWORK_METHODS:
            raise InputError(f"{source}: matching must be one of {', '.join(NETWORK_METHODS)}, got {self.matching!r}")
        if self.augment not in AUGMENT_STRENGTHS:
            raise InputError(f"{source}: augment must be one of {', '.join(AUGMENT_STRENGTHS)}, got {self.augment!r}")
        try:
            RunSettings(window=self.window)  # the one rule for the window (a positive odd integer)
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        for name in ("data", "out_dir", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InputError(f"{source}: {name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("init", "pseudo_root"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InputError(f"{source}: {name} must be a path or null, got {getattr(self, name)!r}")
        if not isinstance(self.losses, LossConfig):
            raise InputError(f"{source}: losses must be an object of loss settings")
        self.losses.validate(source)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{source}: unknown training config keys {sorted(unknown)}")
        values = dict(data)
        if "losses" in values:
            loss_known = {f.name for f in fields(LossConfig)}
            if not isinstance(values["losses"], dict):
                raise InputError(f"{source}: losses must be a JSON object, got {values['losses']!r}")
            bad = set(values["losses"]) - loss_known
            if bad:
                raise InputError(f"{source}: unknown loss keys {sorted(bad)}")
            values["losses"] = LossConfig(**values["losses"])
        return cls(**values).validate(source)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"training config {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"training config {path} is not valid JSON: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"training config {path} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"training config {path} must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))


def _check_int(source: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{source}: {name} must be an integer >= {minimum}, got {value!r}")


def _check_number(source: str, name: str, value: Any, minimum: float, wanted: str, strict: bool = False,
                  maximum: float = math.inf) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum) or value > maximum:
        raise InputError(f"{source}: {name} must be {wanted}, got {value!r}")


def _check_bool(source: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{source}: {name} must be true or false, got {value!r}")
