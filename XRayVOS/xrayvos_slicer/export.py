"""A compact job folder for the background worker: frames.npy, supports.npz, job.json.

One .npy for every frame and one .npz for every support label map (keys = frame indices), not one
file per frame per object; see XRayVOSLib/worker.py for the job format (version 2: the model and a
RunSettings object).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from XRayVOSLib.settings import RunSettings
from XRayVOSLib.worker import JOB_VERSION

FRAMES_NAME, SUPPORTS_NAME, JOB_NAME, OUTPUT_NAME = "frames.npy", "supports.npz", "job.json", "labels.npy"


def make_work_dir(prefix: str = "xrayvos-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def write_job(work_dir: Path, frames: np.ndarray, supports: Mapping[int, np.ndarray],
              settings: RunSettings, model: str | None = None) -> Path:
    """Write frames, supports and the job JSON into work_dir; return the job path. model None: the shipped one."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be [T, H, W], got shape {frames.shape}")
    if not supports:
        raise ValueError("no support frame: paint at least one frame of the support segmentation")
    for t, labels in supports.items():
        if not 0 <= int(t) < frames.shape[0]:
            raise ValueError(f"support frame {t} is outside the cine (0..{frames.shape[0] - 1})")
        if tuple(np.shape(labels)) != frames.shape[1:]:
            raise ValueError(f"support frame {t}: label map {np.shape(labels)} differs from the frames "
                             f"{frames.shape[1:]}")
        if np.size(labels) and int(np.max(labels)) > 255:  # the worker's label maps are uint8: never wrap
            raise ValueError(f"support frame {t}: segment label value {int(np.max(labels))} is above 255; "
                             "XRayVOS results hold at most 255 segments")
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(work_dir / FRAMES_NAME, np.ascontiguousarray(frames), allow_pickle=False)
    np.savez_compressed(work_dir / SUPPORTS_NAME, **{str(int(t)): np.asarray(m, np.uint8) for t, m in supports.items()})
    job = {"version": JOB_VERSION, "frames": FRAMES_NAME, "supports": SUPPORTS_NAME, "output": OUTPUT_NAME,
           "model": str(Path(model).expanduser().resolve()) if model else None,  # the worker runs in work_dir
           "settings": settings.to_dict()}
    path = work_dir / JOB_NAME
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def read_output(job_path: Path) -> np.ndarray:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    return np.load(Path(job_path).parent / job["output"], allow_pickle=False)


def remove_work_dir(work_dir: Path | None) -> None:
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
