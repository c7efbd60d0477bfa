"""Self-describing checkpoints: safetensors weights + the JSON model config (and a card) in its metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from XRayVOSLib.errors import ModelError
from XRayVOSLib.model.config import ModelConfig
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.model_files import CHECKPOINT_FORMAT as FORMAT


def save_checkpoint(
    path: str | Path, model: LocalMatchingNetwork, info: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Write weights (fp16 on disk when half=True) with config and free-form info in the metadata.

    Written to a temporary name and renamed, so an interrupted save never leaves a half-written model.
    """
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), "info": json.dumps(info or {})}
    return _write_atomically(Path(path), tensors, metadata)


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors writes 0600; a model in a shared models folder must be readable by all
    tmp.replace(path)
    return path


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
    return config, info


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
    if config is not None:
        _check_fits(source, LocalMatchingNetwork(config), tensors)
        meta["config"] = json.dumps(config.to_dict())
    meta["info"] = json.dumps(info)
    return _write_atomically(target, tensors, meta)
