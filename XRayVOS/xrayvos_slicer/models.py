"""The models the module can use: the bundled checkpoint and the user's fine-tuned ones.

Fine-tuned models live in a per-user folder (Slicer's user settings folder / XRayVOS/models, or
$XRAYVOS_MODELS_DIR), one `<name>.safetensors` with a model card beside it: `<name>.json` for
programs and `<name>.md` for people. Listing reads safetensors headers only (no torch). A model is
moved into the folder only when complete, and never onto the bundled file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from XRayVOSLib.model_files import default_model_path, read_model_header

MODEL_SUFFIX = ".safetensors"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")


@dataclass
class ModelEntry:
    """One selectable model. path None = the bundled model when none is installed."""

    name: str
    path: Path
    bundled: bool
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} (bundled)" if self.bundled else self.name

    @property
    def note(self) -> str:
        return str(self.card.get("note", ""))


def user_models_dir() -> Path:
    """$XRAYVOS_MODELS_DIR, else ~/.xrayvos/models. In Slicer the module passes
    <user settings folder>/XRayVOS/models."""
    env = os.environ.get("XRAYVOS_MODELS_DIR")
    return Path(env) if env else Path.home() / ".xrayvos" / "models"


def model_file_name(name: str) -> str:
    """The file name for a model called `name`; raises ValueError naming the problem."""
    name = name.strip()
    if not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r} must be 1-64 letters, digits, spaces, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name.replace(" ", "_") + MODEL_SUFFIX


def bundled_model() -> ModelEntry | None:
    path = default_model_path()
    if path is None or not path.is_file():
        return None
    header = read_model_header(path)
    info = header[1] if header else {}
    return ModelEntry("XRayVOS default", path, True, {"note": info.get("note", ""), "steps": info.get("steps")})


def read_card(model_path: Path) -> dict[str, Any]:
    card_path = model_path.with_suffix(".json")
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def available_models(models_dir: Path) -> list[ModelEntry]:
    """The bundled model first, then the user's models (newest first). Files that are not XRayVOS
    checkpoints, and temporary files of an unfinished copy, are left out."""
    out: list[ModelEntry] = []
    bundled = bundled_model()
    if bundled is not None:
        out.append(bundled)
    if models_dir.is_dir():
        files = [p for p in models_dir.glob(f"*{MODEL_SUFFIX}") if p.is_file()]
        for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
            if bundled is not None and path.resolve() == bundled.path.resolve():
                continue
            if read_model_header(path) is None:
                continue
            card = read_card(path)
            out.append(ModelEntry(str(card.get("name") or path.stem), path, False, card))
    return out


def install_model(source: Path, models_dir: Path, name: str, card: Mapping[str, Any],
                  overwrite: bool = False) -> Path:
    """Copy a finished model into models_dir as `name`, with its card; atomic, never onto the bundled file."""
    target = models_dir / model_file_name(name)
    bundled = default_model_path()
    if bundled is not None and target.resolve() == bundled.resolve():
        raise ValueError(f"{target} is the bundled model; it is never overwritten")
    if target.exists() and not overwrite:
        raise ValueError(f"a model named {name!r} already exists ({target}); choose another name")
    if read_model_header(source) is None:
        raise ValueError(f"{source} is not an XRayVOS checkpoint")
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, partial)
        write_card(target, card)
        os.replace(partial, target)  # the model appears last, complete, with its card already beside it
    except BaseException:
        for leftover in (target.with_suffix(".json"), target.with_suffix(".md")):
            leftover.unlink(missing_ok=True)
        raise
    finally:
        partial.unlink(missing_ok=True)
    return target


def write_card(model_path: Path, card: Mapping[str, Any]) -> None:
    """<name>.json (the card as data) and <name>.md (the same for people)."""
    model_path.with_suffix(".json").write_text(json.dumps(dict(card), indent=1, default=str), encoding="utf-8")
    model_path.with_suffix(".md").write_text(card_markdown(card), encoding="utf-8")


def card_markdown(card: Mapping[str, Any]) -> str:
    validation = card.get("validation") or {}
    lines = [f"# {card.get('name', 'XRayVOS model')}", "",
             f"Fine-tuned with XRayVOS on {card.get('created', '?')} from `{card.get('base_model', '?')}`.", "",
             f"- Steps: {card.get('steps')}, two-shot: {card.get('two_shot')}, device: {card.get('device')}, "
             f"time: {card.get('seconds')} s",
             f"- Segments (label order): {', '.join(card.get('segments', [])) or '-'}",
             f"- Settings it carries: {settings_text(card.get('settings') or {})}", "",
             "## Source cases", "", "| case | frames | labelled (painted / reviewed) | held out |", "|---|---|---|---|"]
    for case in card.get("cases", []):
        lines.append(f"| {case.get('name')} | {case.get('frames')} | {len(case.get('train_frames', []))} "
                     f"({len(case.get('painted_frames', []))} / {len(case.get('reviewed_frames', []))}) "
                     f"| {len(case.get('validation_frames', []))} |")
    lines += ["", "## Validation (J&F on held-out annotated frames)", ""]
    if validation.get("frames"):
        lines.append(f"- Base model: {validation.get('initial')}; fine-tuned: {validation.get('finetuned')} "
                     f"({validation.get('frames')} frames, both with the base model's settings)")
    else:
        lines.append("- No held-out annotated frames (a case needs 3 or more labelled frames to hold one out).")
    return "\n".join(lines) + "\n"


def settings_text(settings: Mapping[str, Any]) -> str:
    """The carried settings in one line; none: the shipped defaults apply (XRayVOSLib.settings)."""
    return ", ".join(f"{key} {value}" for key, value in settings.items()) or "none (the defaults)"


__all__ = ["ModelEntry", "available_models", "bundled_model", "install_model", "model_file_name",
           "user_models_dir", "write_card", "read_card"]
