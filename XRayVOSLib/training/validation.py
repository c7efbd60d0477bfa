"""Validation J&F on held-out annotated frames of a DAVIS-layout folder.

A fine-tune keeps some annotated frames out of training (a `Validation/<video>/%05d.png` folder beside
`Annotations/`, or any folder of that layout). Both the starting and the fine-tuned model propagate from
the training annotations; the held-out frames are scored with the DAVIS J&F, so a site sees whether
fine-tuning helped on its own data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from XRayVOSLib.errors import InputError


def held_out_videos(val_root: Path) -> dict[str, dict[int, np.ndarray]]:
    """{video: {frame: labels}} for every video folder under val_root with at least one non-empty mask."""
    from XRayVOSLib.io import read_mask_folder

    if not val_root.is_dir():
        raise InputError(f"{val_root}: validation folder not found")
    out: dict[str, dict[int, np.ndarray]] = {}
    for folder in sorted(p for p in val_root.iterdir() if p.is_dir()):
        masks = {t: m for t, m in read_mask_folder(folder).items() if np.any(m)}
        if masks:
            out[folder.name] = masks
    return out


def validation_jf(model_path: str | Path, data_root: str | Path, val_root: str | Path, device: str = "auto",
                  window: int | None = None, memory_every: int | None = None) -> dict[str, Any]:
    """Mean J&F over the held-out frames (all objects of the supports), the number of frames scored and the
    model's carried settings it ran with (decision rule, threshold, fusion weights).

    Supports are the training annotations (data_root/Annotations/<video>); J&F None when nothing is held out.
    """
    from XRayVOSLib.inference.propagator import Propagator
    from XRayVOSLib.io import read_cine
    from XRayVOSLib.metrics import mean_finite, score_video
    from XRayVOSLib.settings import RunSettings
    from XRayVOSLib.training.finetune import annotated_frames

    data_root, val_root = Path(data_root), Path(val_root)
    held_out = held_out_videos(val_root)
    if not held_out:
        return {"j_and_f": None, "frames": 0, "videos": 0}
    settings = RunSettings.from_model(model_path, device=device, window=window, memory_every=memory_every)
    propagator = Propagator.load(model_path, settings)
    scores: list[float] = []
    frames_scored = 0
    for video, gt in held_out.items():
        frames = np.asarray(read_cine(data_root / "JPEGImages" / video).frames)
        supports = annotated_frames(data_root, video)
        overlap = sorted(set(gt) & set(supports))
        if overlap:
            raise InputError(f"{val_root / video}: frame(s) {overlap} are both training labels and held out")
        labels = propagator.propagate(frames, supports)
        objects = score_video(video, labels, gt, support_frames=sorted(supports))
        scores += [value for obj in objects for value in obj.JF.tolist()]
        frames_scored += len(gt)
    mean = mean_finite(scores)
    return {"j_and_f": round(mean, 4) if np.isfinite(mean) else None, "frames": frames_scored,
            "videos": len(held_out), "settings": settings.carried()}


__all__ = ["held_out_videos", "validation_jf"]
