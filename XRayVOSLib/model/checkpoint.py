"""Self-describing checkpoints: safetensors weights + the JSON model config (and a card) in its metadata."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from XRayVOSLib.errors import InputError, ModelError
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import CHECKPOINT_FORMAT as FORMAT
from XRayVOSLib.settings import CARRIED_FIELDS, RunSettings


def save_checkpoint(
    path: str | Path, model: LocalMatchingNetwork, info: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Write weights (fp16 on disk when half=True) with config and free-form info in the metadata.

    Written to a temporary name and renamed, so an interrupted save never leaves a half-written model.
    """
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in model.state_dict().items()}
    check_finite(tensors, f"model for {path}")  # a diverged training (or fp16 overflow) writes no model
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), "info": json.dumps(info or {})}
    return _write_atomically(Path(path), tensors, metadata)


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    return write_atomically(path, save(tensors, metadata=metadata))


def write_atomically(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to a new file beside `path`, then rename it over `path`: never a half-written file.

    The temporary file is created exclusively (O_EXCL: a link planted under its name is not followed) in
    the same folder (so the rename is atomic), and the rename replaces a symlink at `path` instead of
    writing through it. mode 0644: a model in a shared models folder must be readable by all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def check_model_destination(path: str | Path, flag: str = "output model") -> Path:
    """InputError unless a model can be written at `path`: checked before a long run, not after it.

    Its folder must be a folder (or creatable: the nearest existing parent is a writable folder) and `path`
    must not be a folder. Where the folder exists, a probe file is created there and removed, which also
    catches read-only mounts and ACLs that the mode bits do not show.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name ending in .safetensors")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise InputError(f"{flag} {path}: {existing} is a file, not a folder")
    if existing != parent:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {path}: cannot create folders in {existing} (not writable)")
        return path
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot write in {parent} ({exc.strerror or exc})") from None
    return path


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """ModelError naming the tensors that hold NaN or infinite values (a corrupt or diverged model)."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelError(f"{source}: {len(bad)} weight tensor(s) hold NaN or infinite values, e.g. {bad[:3]}; "
                         "the model is corrupt or its training diverged")


def _raw_metadata(path: Path) -> dict[str, str]:
    """The metadata of an XRayVOS checkpoint, its config not yet parsed."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise ModelError(f"model file {path} is not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelError(f"model file {path} has no XRayVOS config in its metadata (format={meta.get('format')!r})")
    return dict(meta)


def read_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    path = Path(path)
    meta = _raw_metadata(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]), source=f"model file {path}")
        info = json.loads(meta.get("info", "{}"))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelError(f"model file {path}: config metadata is not valid JSON ({exc})") from exc
    _check_info(path, info)
    return config, info


def _check_info(path: Path, info: Any) -> None:
    """The info must be a JSON object, and the settings it carries ones a run accepts."""
    if not isinstance(info, dict):
        raise ModelError(f"model file {path}: its info metadata must be a JSON object, got {type(info).__name__}")
    carried = info.get("settings", {})
    if not isinstance(carried, dict):
        raise ModelError(f"model file {path}: carried settings must be a JSON object, got {type(carried).__name__}")
    foreign = sorted(set(carried) - set(CARRIED_FIELDS))
    if foreign:
        raise ModelError(f"model file {path}: carries settings {foreign} a model may not carry (only "
                         f"{', '.join(CARRIED_FIELDS)})")
    try:
        RunSettings.from_dict(carried, source=f"model file {path} settings")
    except InputError as exc:
        raise ModelError(str(exc)) from None


def _check_fits(path: Path, model: LocalMatchingNetwork, state: dict[str, torch.Tensor]) -> None:
    """ModelError unless `state` holds exactly `model`'s tensor names and shapes."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ModelError(
            f"model file {path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {sorted(wrong)[:5]}"
        )


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def load_checkpoint(path: str | Path) -> tuple[LocalMatchingNetwork, dict[str, Any]]:
    """Build the network its config describes and load the weights; any mismatch is a ModelError."""
    path = Path(path)
    config, info = read_metadata(path)
    model = LocalMatchingNetwork(config)
    state = _tensors(path)
    _check_fits(path, model, state)
    check_finite(state, f"model file {path}")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval(), info


def rewrite_info(source: str | Path, target: str | Path, info: dict[str, Any],
                 config: ModelConfig | None = None) -> Path:
    """Copy a checkpoint's tensors exactly as stored (fp16 stays fp16) under new info metadata.

    Records a calibration or a fine-tune's carried settings without touching the weights. With `config`,
    the config metadata is replaced too (converting a model written for another config version): the
    source's own config is then not parsed, and the tensors must fit `config`. Target may equal source
    (the new file is written beside it and renamed over it).
    """
    source, target = Path(source), Path(target)
    meta = _raw_metadata(source)
    if config is None:
        read_metadata(source)  # the source's config must be one this code reads
    tensors = _tensors(source)
    check_finite(tensors, f"model file {source}")
    if config is not None:
        _check_fits(source, LocalMatchingNetwork(config), tensors)
        meta["config"] = json.dumps(config.to_dict())
    meta["info"] = json.dumps(info)
    return _write_atomically(target, tensors, meta)
