"""A compact job folder for the background worker: frames.npy, supports.npz, job.json.

One .npy for every frame and one .npz for every support label map (keys = frame indices), not one
file per frame per object; see XRayVOSLib/worker.py for the job format.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

FRAMES_NAME, SUPPORTS_NAME, JOB_NAME, OUTPUT_NAME = "frames.npy", "supports.npz", "job.json", "labels.npy"
METHOD_CHOICES = ("local", "global", "flow", "flow-support", "copy")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass
class PropagationSettings:
    """What to run. model None = the checkpoint shipped with the module (XRayVOSLib/models)."""

    method: str = "local"
    model: str | None = None
    device: str = "auto"
    window: int = 15
    memory_every: int = 6
    threshold: float | None = None  # object threshold; None = the model's calibrated one
    flip_average: bool = False  # also propagate the mirrored cine and average (twice the time)

    def validate(self) -> "PropagationSettings":
        if self.method not in METHOD_CHOICES:
            raise ValueError(f"method must be one of {', '.join(METHOD_CHOICES)}, got {self.method!r}")
        if self.device not in DEVICE_CHOICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if int(self.window) < 1 or int(self.window) % 2 == 0:
            raise ValueError(f"window k must be a positive odd number, got {self.window}")
        if int(self.memory_every) < 1:
            raise ValueError(f"keyframe interval r must be >= 1, got {self.memory_every}")
        if self.threshold is not None and not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"object threshold must lie strictly between 0 and 1, got {self.threshold}")
        if self.model and not Path(self.model).is_file():
            raise ValueError(f"model file {self.model} does not exist")
        return self

    @property
    def needs_torch(self) -> bool:
        return self.method in ("local", "global")


def make_work_dir(prefix: str = "xrayvos-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def write_job(work_dir: Path, frames: np.ndarray, supports: Mapping[int, np.ndarray],
              settings: PropagationSettings) -> Path:
    """Write frames, supports and the job JSON into work_dir; return the job path."""
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
    work_dir.mkdir(parents=True, exist_ok=True)
    np.save(work_dir / FRAMES_NAME, np.ascontiguousarray(frames), allow_pickle=False)
    np.savez_compressed(work_dir / SUPPORTS_NAME, **{str(int(t)): np.asarray(m, np.uint8) for t, m in supports.items()})
    job = {"version": 1, "frames": FRAMES_NAME, "supports": SUPPORTS_NAME, "output": OUTPUT_NAME, **asdict(settings)}
    path = work_dir / JOB_NAME
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def read_output(job_path: Path) -> np.ndarray:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    return np.load(Path(job_path).parent / job["output"], allow_pickle=False)


def remove_work_dir(work_dir: Path | None) -> None:
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
