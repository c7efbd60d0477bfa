"""The resumable training state, without pickle: one safetensors file whose header carries the JSON part.

Tensors: the network ("model.<name>") and the optimiser's per-parameter state ("optimizer.<index>.<key>").
JSON (the header's "state" metadata): step, the optimiser's param groups and plain per-parameter values,
the AMP scaler (plain numbers), the RNG states as lists of ints, the config, the info and the run's
fingerprint. One file, so one atomic rename: the tensors and the step they belong to never come apart.
A `state.pt` of older versions is a pickle (torch.save), which can run code when loaded: never read.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.model.checkpoint import check_finite, write_atomically
from XRayVOSLib.model.digest import file_sha256
from XRayVOSLib.training.config import TrainConfig

STATE_NAME = "state.safetensors"
LEGACY_STATE_NAME = "state.pt"
STATE_FORMAT = "xrayvos-train-state"
STATE_VERSION = 1
# Settings a run may change when it resumes: where and how fast it runs, how long, how often it saves.
RESUMABLE_FIELDS = ("steps", "out_dir", "device", "num_workers", "save_every", "log_every")
# The inputs are fingerprinted by their content, not their path: data / pseudo_root listings, the init's bytes.
_INPUT_FIELDS = ("data", "pseudo_root", "init")
_DIGEST_NAMES = {"config": "training config", "data": "training data (file names, sizes or dates)",
                 "init": "initial model", "pseudo_root": "pseudo-labels"}


class StateMismatchError(InputError):
    """The saved state is another run's: `differs` names what (keys of _DIGEST_NAMES)."""

    def __init__(self, path: Path, differs: list[str]) -> None:
        self.path, self.differs = path, differs
        what = ", ".join(_DIGEST_NAMES.get(k, k) for k in differs)
        super().__init__(f"{path} is the saved state of another run (its {what} differ from this run's); "
                         "it is not resumed")


@dataclass
class TrainState:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    step: int
    rng: dict[str, Any]
    info: dict[str, Any]
    fingerprint: dict[str, str]


# -- fingerprint -------------------------------------------------------------------------------------
def listing_digest(root: str | Path, parts: tuple[str, ...] = ()) -> str:
    """sha256 over every file's relative path, size and mtime under root (or under root/part for each part).

    Dates, not contents: a DAVIS folder can hold many thousands of frames, and an edited file gets a new
    mtime. Copying a folder with its dates (cp -a) keeps the digest.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for base in [root / part for part in parts] or [root]:
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def run_fingerprint(config: TrainConfig, inputs: dict[str, str] | None = None) -> dict[str, str]:
    """What a saved state must match to be resumed: the config (less RESUMABLE_FIELDS), the data, the init.

    `inputs` replaces the digest of a named input: fine-tuning names its pseudo-labels by the weights of the
    teacher that wrote them, since they are written anew (new dates) each time the teacher stage ends.
    """
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS + _INPUT_FIELDS}
    parts = {"config": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
             "data": "synthetic" if config.data == "synthetic"
             else listing_digest(config.data, ("JPEGImages", "Annotations")),
             "init": file_sha256(config.init) if config.init else "random"}
    if config.pseudo_root:
        parts["pseudo_root"] = listing_digest(config.pseudo_root)
    parts.update(inputs or {})
    return parts


def check_fingerprint(path: Path, saved: dict[str, str], current: dict[str, str]) -> None:
    differs = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differs:
        raise StateMismatchError(path, differs)


# -- RNG -----------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Every RNG the loop draws from, as plain lists of ints (JSON)."""
    np_name, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state().tolist(),
            "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
            "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_gauss), float(np_cached)],
            "python": [py_version, list(py_state), py_gauss]}


def restore_rng(rng: dict[str, Any], source: Path) -> None:
    try:
        torch.set_rng_state(_bytes_tensor(rng["torch"]))
        cuda = rng.get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in cuda])
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
        version, state, gauss = rng["python"]
        random.setstate((int(version), tuple(int(v) for v in state), gauss))
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise InputError(f"{source}: its RNG state is not readable ({exc})") from None


def _bytes_tensor(values: Any) -> torch.Tensor:
    if not isinstance(values, list) or not all(isinstance(v, int) and 0 <= v < 256 for v in values):
        raise ValueError("an RNG state must be a list of bytes")
    return torch.tensor(values, dtype=torch.uint8)


# -- the file ------------------------------------------------------------------------------------------
def write_state(path: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, step: int,
                config: TrainConfig, info: dict[str, Any], fingerprint: dict[str, str]) -> Path:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    saved = optimizer.state_dict()
    plain: dict[str, dict[str, Any]] = {}
    for index, entry in saved["state"].items():
        plain[str(index)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[str(index)][key] = value
    header = {"version": STATE_VERSION, "step": int(step), "param_groups": saved["param_groups"],
              "param_state": plain, "scaler": scaler.state_dict(), "rng": capture_rng(), "config": config.to_dict(),
              "info": info, "fingerprint": fingerprint}
    return write_atomically(path, save(tensors, metadata={"format": STATE_FORMAT, "state": json.dumps(header)}))


def read_state(path: Path) -> TrainState:
    """The state at path; InputError (one line naming the file) for anything but a state this code wrote."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a foreign or corrupt file
        raise InputError(f"{path} is not a readable training state ({exc})") from None
    if meta.get("format") != STATE_FORMAT or "state" not in meta:
        raise InputError(f"{path} is not an XRayVOS training state (format={meta.get('format')!r})")
    try:
        return _parse(path, json.loads(meta["state"]), tensors)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a header this code did not write
        raise InputError(f"{path}: its state header is not readable ({type(exc).__name__}: {exc})") from None


def _parse(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TrainState:
    if header["version"] != STATE_VERSION:
        raise InputError(f"{path}: training state version {header['version']!r}; this code reads {STATE_VERSION}")
    step = header["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"{path}: step must be a non-negative integer, got {step!r}")
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    param_state = {int(index): dict(values) for index, values in header["param_state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            param_state.setdefault(int(index), {})[name] = value
        elif not key.startswith("model."):
            raise InputError(f"{path}: unexpected tensor {key!r} in a training state")
    try:
        check_finite(model, str(path))
    except ModelError as exc:
        raise InputError(str(exc)) from None
    groups = header["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise InputError(f"{path}: param_groups must be a list of objects")
    return TrainState(model=model, optimizer={"state": param_state, "param_groups": groups},
                      scaler=dict(header["scaler"]), step=step, rng=dict(header["rng"]), info=dict(header["info"]),
                      fingerprint={str(k): str(v) for k, v in dict(header["fingerprint"]).items()})


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any], path: Path) -> None:
    """Load after checking each per-parameter tensor against its parameter (torch checks only the counts)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entry in saved["state"].items():
        if not 0 <= index < len(params):
            raise InputError(f"{path}: optimiser state for parameter {index}, but the network has {len(params)}")
        wrong = [k for k, v in entry.items() if torch.is_tensor(v) and v.dim() > 0 and v.shape != params[index].shape]
        if wrong:
            raise InputError(f"{path}: optimiser state {wrong[0]!r} of parameter {index} has the wrong shape")
    try:
        optimizer.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: its optimiser state does not fit this run ({exc})") from None
