"""RunSettings: every option of one propagation run, with its defaults in one place and one `validate()`.

Pure standard library (no numpy, no torch): the Slicer GUI process, the worker's cheap checks and the CLI
all build and check settings before any heavy package is imported.

    settings = RunSettings.from_model(path)           # the model's carried settings over the defaults
    settings = settings.replace(method="flow")        # a validated copy
    job = settings.to_dict(); RunSettings.from_dict(job, source="job.json")   # the worker job

The decision rule, probabilities -> labels, is stated explicitly (`decision`):
- "area-prior": each object, on each frame, gets the threshold at which its probability map covers the
  area it has in the support (propagation/decision.py); `threshold` is not used;
- "threshold": one fixed object threshold `threshold` (0.5 = the plain arg-max).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from XRayVOSLib.errors import InputError

NETWORK_METHODS = ("local", "global")
BASELINE_METHODS = ("flow", "flow-support", "copy")
METHODS = NETWORK_METHODS + BASELINE_METHODS
DECISIONS = ("area-prior", "threshold")
# What a model file may carry (its info metadata, key "settings"): how its probabilities become labels.
CARRIED_FIELDS = ("decision", "threshold", "temporal_blend", "support_warp")


@dataclass(frozen=True)
class RunSettings:
    """One run's options. The defaults are the shipped pipeline's, chosen on validation cines (docs/)."""

    method: str = "local"  # local / global (the network), flow / flow-support / copy (baselines, no torch)
    window: int = 15  # k: each query pixel attends to the k x k window around its reference point
    memory_every: int = 6  # r: a predicted frame joins the memory every r frames
    max_keyframes: int = 5  # keyframes kept besides the supports (oldest dropped first)
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    decision: str = "area-prior"  # see the module docstring
    threshold: float = 0.5  # the object threshold of decision "threshold"
    temporal_blend: float = 0.85  # output fusion: weight of the flow-warped previous result (0 = off)
    support_warp: float = 0.15  # output fusion: weight of the support mask warped onto the frame (0 = off)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "RunSettings":
        """Raise InputError naming the setting and the problem; return self."""
        if self.method not in METHODS:
            _fail("method", self.method, f"one of {', '.join(METHODS)}")
        _check_int("window", self.window, minimum=1)
        if self.window % 2 == 0:
            _fail("window", self.window, "a positive odd number (the window is centred on the reference point)")
        _check_int("memory_every", self.memory_every, minimum=1)
        _check_int("max_keyframes", self.max_keyframes, minimum=0)
        device = self.device
        if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda")
                                                or (device.startswith("cuda:") and device[5:].isdigit())):
            _fail("device", device, "auto, cpu, cuda or cuda:N")
        if self.decision not in DECISIONS:
            _fail("decision", self.decision, f"one of {', '.join(DECISIONS)}")
        _check_number("threshold", self.threshold, lambda v: 0.0 < v < 1.0, "strictly between 0 and 1")
        _check_number("temporal_blend", self.temporal_blend, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _check_number("support_warp", self.support_warp, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
        return self

    @property
    def uses_network(self) -> bool:
        return self.method in NETWORK_METHODS

    @property
    def fused(self) -> bool:
        """Whether the output fusion (propagation/fusion.py) runs at all."""
        return self.temporal_blend > 0 or self.support_warp > 0

    def replace(self, **changes: Any) -> "RunSettings":
        """A validated copy; a change of None keeps the current value (unset CLI flags)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def carried(self) -> dict[str, Any]:
        """The part a model file carries (written by training, fine-tuning and calibration)."""
        return {name: getattr(self, name) for name in CARRIED_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "settings",
                  base: "RunSettings | None" = None) -> "RunSettings":
        """Settings from a JSON object (a worker job, run.json); missing keys keep `base`'s (default) values."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        try:
            return dataclasses.replace(base or cls(), **dict(data))
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None

    @classmethod
    def from_model(cls, model: str | Path | None = None, **overrides: Any) -> "RunSettings":
        """The defaults, overlaid with what the model file carries (None: the shipped model), then `overrides`
        (None values ignored). A file that is not an XRayVOS model carries nothing; loading it names it."""
        from XRayVOSLib.model_files import carried_settings

        base = cls()
        carried = carried_settings(model)
        if carried:
            base = cls.from_dict(carried, source=f"model {model or 'shipped'}", base=base)
        return base.replace(**overrides)


def _fail(name: str, value: Any, wanted: str) -> None:
    raise InputError(f"setting {name} must be {wanted}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _check_number(name: str, value: Any, inside: Any, wanted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(float(value)):
        _fail(name, value, f"a number {wanted}")


__all__ = ["BASELINE_METHODS", "CARRIED_FIELDS", "DECISIONS", "METHODS", "NETWORK_METHODS", "RunSettings"]
