"""Fine-tuning on a user's DAVIS-layout folder, plain or two-shot (Zeng, Ni, Huang: "Is two-shot all you need?").

Two-shot: (1) a teacher is fine-tuned on the labelled frames only; (2) it pseudo-labels every frame of
every video by propagating forward and backward from the labelled frames (merged as in inference, the
labelled frames kept exact); (3) a student, from the same initial weights, trains on labelled frames
with weak augmentation and pseudo-labelled frames with strong augmentation, plus the label-free
space-time consistency loss.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.model.checkpoint import check_model_destination, read_metadata, rewrite_info
from XRayVOSLib.model.digest import weights_sha256
from XRayVOSLib.model_files import carried_settings
from XRayVOSLib.settings import CARRIED_FIELDS, RunSettings
from XRayVOSLib.training.config import LossConfig, TrainConfig
from XRayVOSLib.training.loop import StepCallback, run_training
from XRayVOSLib.training.state import StateMismatchError


def inherited_settings(init: str | Path) -> dict[str, Any]:
    """The run settings the init model carries (decision rule, threshold, fusion weights), checked.

    A short fine-tune stays close to its start, so it keeps them: the site's model then behaves like the
    one it replaces, and the validation compares both under one decision rule. `xrayvos calibrate`
    re-chooses them on the site's data.
    """
    carried = {k: v for k, v in carried_settings(init).items() if k in CARRIED_FIELDS}
    RunSettings.from_dict(carried, source=f"model {init} settings")  # an invalid value fails here, not later
    return carried


def list_videos(data_root: Path) -> list[str]:
    images = data_root / "JPEGImages"
    annotations = data_root / "Annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise InputError(f"{data_root} is not a DAVIS-layout folder (needs JPEGImages/ and Annotations/)")
    videos = sorted(p.name for p in annotations.iterdir() if p.is_dir() and (images / p.name).is_dir())
    if not videos:
        raise InputError(f"{data_root}: no video has both JPEGImages/<video> and Annotations/<video>")
    return videos


def annotated_frames(data_root: Path, video: str) -> dict[int, np.ndarray]:
    from XRayVOSLib.io import read_mask_folder

    labels = {t: m for t, m in read_mask_folder(data_root / "Annotations" / video).items() if np.any(m)}
    if not labels:
        raise InputError(f"{data_root / 'Annotations' / video}: no annotated frame with an object")
    return labels


# The teacher labels with the network's plain arg-max, no output fusion: what the two-shot recipe was
# built and tested with (pseudo-labels through the fusion were never measured).
PSEUDO_LABEL_SETTINGS = {"decision": "threshold", "threshold": 0.5, "temporal_blend": 0.0, "support_warp": 0.0}


def pseudo_label(data_root: Path, model_path: Path, out_root: Path, device: str = "auto",
                 window: int | None = None, memory_every: int | None = None, cancel=None) -> list[str]:
    """Write out_root/<video>/%05d.png for every frame, propagated from the labelled frames (kept exact)."""
    from XRayVOSLib.inference.propagator import Propagator
    from XRayVOSLib.io import read_cine, write_mask_sequence

    settings = RunSettings.from_model(model_path, method="local", device=device, window=window,
                                      memory_every=memory_every, **PSEUDO_LABEL_SETTINGS)
    propagator = Propagator.load(model_path, settings)
    videos = list_videos(data_root)
    for video in videos:
        frames = np.asarray(read_cine(data_root / "JPEGImages" / video).frames)
        supports = annotated_frames(data_root, video)
        labels = propagator.propagate(frames, supports, cancel=cancel)
        write_mask_sequence(out_root / video, labels)
    return videos


def finetune(
    data_root: str | Path,
    init: str | Path,
    out_path: str | Path,
    steps: int = 200,
    two_shot: bool = False,
    device: str = "auto",
    work_dir: str | Path | None = None,
    base: TrainConfig | None = None,
    on_step: StepCallback | None = None,
    cancel=None,
    show_progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
    restart: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune `init` on `data_root`; the model is written to out_path only when training completes.

    on_stage(name) is called as each stage starts: "train", or "teacher", "pseudo-label", "student".
    A work_dir left by an earlier run is resumed when it holds this run's state (same data, config and
    init); another run's state is refused, unless `restart` (then every stage starts over).
    """
    data_root, out_path = Path(data_root), Path(out_path)
    base = base or TrainConfig()
    common = dict(data=str(data_root), init=str(init), device=device, num_workers=0, max_skip=min(base.max_skip, 5))
    dataclasses.replace(base, **common, steps=steps).validate("fine-tune")  # bad numbers: before any work
    check_model_destination(out_path)
    videos = list_videos(data_root)
    for video in videos:
        annotated_frames(data_root, video)  # fail early on a case with no annotations
    read_metadata(init)  # an XRayVOS model, with a valid config and info
    carried = inherited_settings(init)  # and on settings the result could not carry
    own_work = work_dir is None
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="xrayvos-finetune-"))
    report: dict[str, Any] = {"videos": videos, "two_shot": two_shot, "steps": steps, "init": str(init)}
    stages = _Stages(work, base, common, on_step, cancel, show_progress, on_stage or (lambda _name: None), restart)
    try:
        if not two_shot:
            model = stages.train("train", "model", steps)
        else:
            teacher_steps = max(1, steps // 2)
            student_steps = max(1, steps - teacher_steps)
            teacher = stages.train("teacher", "teacher", teacher_steps, total=teacher_steps + student_steps)
            stages.stage("pseudo-label")
            # The teacher carries no settings of its own: it labels as the init model would.
            pseudo_label(data_root, teacher, work / "pseudo", device=device, cancel=cancel)
            losses = dataclasses.replace(base.losses, consistency=True)
            # The pseudo-labels are named by the weights that wrote them: rewritten on every run, their dates change.
            model = stages.train("student", "student", student_steps, offset=teacher_steps,
                                 pseudo_root=str(work / "pseudo"), losses=losses,
                                 inputs={"pseudo_root": weights_sha256(teacher)})
            report.update(teacher_steps=teacher_steps, student_steps=student_steps)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        info = {**read_metadata(model)[1], "settings": carried, "settings_from": str(init)}
        report["settings"] = carried
        return rewrite_info(model, out_path, info), report  # written beside out_path, then renamed over it
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


@dataclasses.dataclass
class _Stages:
    """Runs one training stage in work/<folder>, its steps counted over the whole fine-tune."""

    work: Path
    base: TrainConfig
    common: dict[str, Any]
    on_step: StepCallback | None
    cancel: Any
    show_progress: bool
    stage: Callable[[str], None]
    restart: bool

    def train(self, name: str, folder: str, steps: int, offset: int = 0, total: int | None = None,
              inputs: dict[str, str] | None = None, **changes: Any) -> Path:
        cfg = dataclasses.replace(self.base, **self.common, **changes, steps=steps, save_every=max(25, steps // 4),
                                  out_dir=str(self.work / folder))
        total = total or offset + steps

        def step(done: int, _total: int, values: dict[str, float]) -> None:
            if self.on_step is not None:
                self.on_step(offset + done, total, values)

        self.stage(name)
        try:
            return run_training(cfg, resume=not self.restart, on_step=step, cancel=self.cancel,
                                show_progress=self.show_progress, inputs=inputs)
        except StateMismatchError as exc:
            raise InputError(f"work dir {self.work}: {exc} (stage {name}); use another work dir, or start over "
                             "(finetune --restart)") from None


__all__ = ["finetune", "inherited_settings", "pseudo_label", "list_videos", "annotated_frames", "LossConfig"]
