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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "info": json.dumps(info or {}),
    }
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors writes 0600; a model in a shared models folder must be readable by all
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise ModelError(f"model file {path} is not a readable safetensors checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ModelError(f"model file {path} has no XRayVOS config in its metadata (format={meta.get('format')!r})")
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]), source=str(path))
        info = json.loads(meta.get("info", "{}"))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelError(f"model file {path}: config metadata is not valid JSON ({exc})") from exc
    return config, info


def load_checkpoint(path: str | Path) -> tuple[LocalMatchingNetwork, dict[str, Any]]:
    """Build the network its config describes and load the weights; any mismatch is a ModelError."""
    config, info = read_metadata(path)
    model = LocalMatchingNetwork(config)
    own = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ModelError(
            f"model file {path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {sorted(wrong)[:5]}"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval(), info


def rewrite_info(source: str | Path, target: str | Path, info: dict[str, Any]) -> Path:
    """Copy a checkpoint's tensors exactly as stored (fp16 stays fp16) under new info metadata.

    Used to record a calibration in a model without touching its weights; target may equal source (the
    new file is written beside it and renamed over it).
    """
    read_metadata(source)  # names a missing or foreign file
    source, target = Path(source), Path(target)
    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["info"] = json.dumps(info)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.chmod(0o644)
    tmp.replace(target)
    return target
