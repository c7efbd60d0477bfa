"""Where models live, and what a model file says about itself, without importing torch.

The Slicer module lists models (the bundled one and a user's fine-tuned ones) from its GUI process,
where loading torch just to fill a drop-down would cost seconds; safetensors reads the header alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_MODEL_NAME = "xrayvos_default.safetensors"
PACKAGE_DIR = Path(__file__).resolve().parent
CHECKPOINT_FORMAT = "xrayvos-checkpoint"


def default_model_path() -> Path | None:
    """The shipped checkpoint: $XRAYVOS_MODEL, else models/ beside the package (repo, Slicer module)."""
    env = os.environ.get("XRAYVOS_MODEL")
    if env:
        return Path(env)
    for candidate in (PACKAGE_DIR.parent / "models" / DEFAULT_MODEL_NAME, PACKAGE_DIR / "models" / DEFAULT_MODEL_NAME):
        if candidate.is_file():
            return candidate
    return None


# The safetensors header is 8 bytes (little-endian length N) and N bytes of JSON whose "__metadata__" holds
# our strings. Read here with the standard library because the Slicer GUI fills its model list and its
# decision controls before safetensors is installed (first use); anything larger is not a header we wrote.
MAX_HEADER_BYTES = 16 * 2**20


def read_model_header(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(config, info) from an XRayVOS checkpoint's metadata; None when the file is not one."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= MAX_HEADER_BYTES:
                return None
            meta = json.loads(handle.read(size).decode("utf-8")).get("__metadata__") or {}
        if meta.get("format") != CHECKPOINT_FORMAT:
            return None
        config, info = json.loads(meta.get("config", "{}")), json.loads(meta.get("info", "{}"))
        return (config, info) if isinstance(config, dict) and isinstance(info, dict) else None
    except (OSError, ValueError, AttributeError):  # a missing, corrupt or foreign file is simply not listed
        return None


def carried_settings(model: str | Path | None = None) -> dict[str, Any]:
    """The run settings a model file carries (info key "settings", see settings.CARRIED_FIELDS); None: the
    shipped model. {} for an untrained run (no model anywhere) or a file that carries none."""
    path = Path(model).expanduser() if model is not None else default_model_path()
    if path is None:
        return {}
    if not path.is_file():
        from XRayVOSLib.errors import ModelError

        raise ModelError(f"model file {path} does not exist")
    header = read_model_header(path)
    carried = header[1].get("settings", {}) if header else {}
    return dict(carried) if isinstance(carried, dict) else {}


__all__ = ["DEFAULT_MODEL_NAME", "CHECKPOINT_FORMAT", "carried_settings", "default_model_path", "read_model_header"]
