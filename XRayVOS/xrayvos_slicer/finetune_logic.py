"""FinetuneLogic: fine-tune a model on the scene's reviewed cases (or a DAVIS folder) in the background.

    logic = FinetuneLogic(scene)
    run = logic.start(FinetuneSettings(name="Site A"), cases=[supportSegmentation, ...])
    while logic.poll(run) == "running": ...        # run.step / run.total / run.loss / run.eta_s / run.stage
    run.model_path                                   # installed in logic.models_dir, with its model card
    logic.cancel(run)                                # kills the process tree; no model is written
    logic.available_models()                         # the bundled model first, then fine-tuned ones

Every check that can fail (no annotations, segment names, disk space, CUDA, the name) runs before
anything starts: logic.plan(...) raises ValueError with the message for the user. The background process
is `python -m XRayVOSLib finetune --progress-json` (the JSON event lines and exit codes of XRayVOSLib.events:
"progress" with done / total / loss / eta_s, "stage", "done", "cancelled", "error"); its model goes to a
temporary folder and is copied
into the models folder only after it finished, so a cancel or crash never leaves a half-written model,
and the bundled model is never a target.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import slicer

from XRayVOSLib.events import EXIT_CANCELLED, EXIT_OK
from XRayVOSLib.model_files import carried_settings, default_model_path, read_model_header

from . import models, training_cases
from .sequences import browsers
from .training_cases import TrainingCase
from .worker_process import WorkerProcess, worker_environment

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
TWO_SHOT_CHOICES = ("auto", "on", "off")
REQUEST_NAME, MODEL_NAME, DATA_NAME = "finetune.json", "model.safetensors", "data"


@dataclass
class FinetuneSettings:
    """name: the new model's name. base_model None = the bundled model. two_shot "auto": on when a case
    has at most two training frames (the two-shot method's setting)."""

    name: str
    base_model: str | None = None
    steps: int = 200
    device: str = "auto"
    two_shot: str = "auto"
    size: int = 320
    batch_size: int = 4
    holdout: bool = True


@dataclass
class FinetunePlan:
    """What a run will do, after every check passed."""

    settings: FinetuneSettings
    base_model: Path
    target: Path
    two_shot: bool
    cases: list[TrainingCase] = field(default_factory=list)
    segment_names: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None  # a user's DAVIS folder instead of scene cases


@dataclass
class FinetuneRun:
    plan: FinetunePlan
    work_dir: Path
    worker: WorkerProcess
    case_summaries: list[dict]
    total: int
    step: int = 0
    loss: float | None = None
    eta_s: float | None = None
    stage: str = "starting"
    state: str = RUNNING
    error: str = ""
    report: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)  # the installed model's card (set when done)
    model_path: Path | None = None
    started: float = field(default_factory=time.monotonic)


class FinetuneLogic:
    # Room kept free beyond the estimate (checkpoints, optimiser state, pseudo-labels, the new model).
    disk_margin_bytes = 300 * 1024**2
    POLL_SECONDS = 0.1

    def __init__(self, scene: "slicer.vtkMRMLScene | None" = None, models_dir: str | Path | None = None) -> None:
        self._scene = scene
        self.models_dir = Path(models_dir) if models_dir is not None else models.user_models_dir()
        self.python: str | None = None  # as XRayVOSLogic.python
        self.worker_env: dict[str, str] = {}
        self.temp_root: Path | None = None  # where the export and checkpoints go (default: the system temp)

    @property
    def scene(self) -> "slicer.vtkMRMLScene":
        return self._scene if self._scene is not None else slicer.mrmlScene

    def worker_base_environment(self) -> Mapping[str, str] | None:
        return None  # the Slicer module overrides it as for propagation

    def ensure_dependencies(self) -> None:
        """Install what training needs; the Slicer module overrides it (see dependencies.ensure_for_training)."""

    # -- models and cases ------------------------------------------------------------------------------------
    def available_models(self) -> list[models.ModelEntry]:
        return models.available_models(self.models_dir)

    def candidate_cases(self) -> list[Any]:
        """Support segmentation sequences in the scene with painted or reviewed frames (for the case list).

        A cheap look that changes nothing; plan() does the full collection and checks."""
        from .results import find_result_sequence
        from .supports import support_frames

        return [sequence for browser, sequence in training_cases.support_sequences(self.scene)
                if training_cases.reviewed_frames(find_result_sequence(browser, sequence))
                or support_frames(browser, sequence)]

    def _browser_and_support(self, node) -> tuple[Any, Any]:
        """A support segmentation (the proxy) or its sequence -> (browser, support sequence)."""
        for browser in browsers(self.scene):
            if node.IsA("vtkMRMLSequenceNode") and browser.IsSynchronizedSequenceNodeID(node.GetID(), False):
                return browser, node
            if browser.IsProxyNodeID(node.GetID()):
                sequence = browser.GetSequenceNode(node)
                if sequence is not None and sequence.GetAttribute("XRayVOS.Role") == "support":
                    return browser, sequence
        raise ValueError(f"{node.GetName()!r} is not an XRayVOS support segmentation of any cine")

    def mark_reviewed(self, support, frames: Sequence[int] | None = None, reviewed: bool = True) -> list[int]:
        """Mark result frames (default: all) of this support's latest result as reviewed labels."""
        from .results import find_result_sequence

        browser, sequence = self._browser_and_support(support)
        result = find_result_sequence(browser, sequence)
        if result is None:
            raise ValueError(f"{support.GetName()!r} has no result to review: propagate first")
        frames = range(result.GetNumberOfDataNodes()) if frames is None else frames
        return training_cases.set_reviewed(result, list(frames), reviewed)

    # -- checks ----------------------------------------------------------------------------------------------
    def plan(self, settings: FinetuneSettings, cases: Sequence[Any] = (), data_dir: str | Path | None = None,
             name_mapping: Mapping[str, str] | None = None, allow_missing_segments: bool = False) -> FinetunePlan:
        """Check everything before a run; raises ValueError with a message naming the problem."""
        if bool(cases) == (data_dir is not None):
            raise ValueError("choose the training cases in the scene, or a DAVIS folder (one of the two)")
        if int(settings.steps) < 1:
            raise ValueError(f"steps must be at least 1, got {settings.steps}")
        if settings.two_shot not in TWO_SHOT_CHOICES:
            raise ValueError(f"two-shot must be one of {', '.join(TWO_SHOT_CHOICES)}, got {settings.two_shot!r}")
        target = self.models_dir / models.model_file_name(settings.name)
        bundled = default_model_path()
        if bundled is not None and target.resolve() == bundled.resolve():
            raise ValueError(f"{target} is the bundled model; it is never overwritten: choose another name")
        if target.exists():
            raise ValueError(f"a model named {settings.name!r} already exists in {self.models_dir}")
        base = Path(settings.base_model) if settings.base_model else bundled
        if base is None or not base.is_file():
            raise ValueError(f"base model {base} not found: choose a model file")
        if read_model_header(base) is None:
            raise ValueError(f"base model {base} is not an XRayVOS checkpoint")
        check_device(settings.device)
        plan = FinetunePlan(settings, base, target, two_shot=False, mapping=dict(name_mapping or {}))
        if data_dir is not None:
            plan.data_dir = Path(data_dir)
            counts = davis_label_counts(plan.data_dir)
            needed = sum(p.stat().st_size for p in (plan.data_dir / training_cases.IMAGES).rglob("*") if p.is_file())
        else:
            plan.cases = [training_cases.collect_case(*self._browser_and_support(node)) for node in cases]
            plan.segment_names = training_cases.unify_segment_names(plan.cases, plan.mapping, allow_missing_segments)
            counts = {}
            for k, case in enumerate(plan.cases):
                labelled = [t for t, m in training_cases.relabel(case, plan.segment_names, plan.mapping).items()
                            if m.any()]
                if not labelled:
                    raise ValueError(f"case {case.name!r} has no annotations left after the segment name mapping")
                counts[f"{k}:{case.name}"] = len(labelled)
            needed = training_cases.export_bytes(plan.cases)
        # "auto": the two-shot setting is a case with at most two annotated frames.
        plan.two_shot = {"on": True, "off": False}.get(settings.two_shot, min(counts.values()) <= 2)
        if plan.two_shot:
            needed *= 2  # pseudo-labels for every frame, and a teacher's checkpoints
        self.check_disk_space(needed)
        return plan

    def check_disk_space(self, needed: int) -> None:
        needed += self.disk_margin_bytes
        for folder in (self._temp_root(), self.models_dir):
            existing = folder
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            free = shutil.disk_usage(existing).free
            if free < needed:
                raise ValueError(f"not enough free disk space in {existing}: {free / 2**20:.0f} MB free, "
                                 f"about {needed / 2**20:.0f} MB needed for the fine-tune")

    def _temp_root(self) -> Path:
        return Path(self.temp_root) if self.temp_root is not None else Path(tempfile.gettempdir())

    # -- running ---------------------------------------------------------------------------------------------
    def start(self, settings: FinetuneSettings, cases: Sequence[Any] = (), data_dir: str | Path | None = None,
              name_mapping: Mapping[str, str] | None = None, allow_missing_segments: bool = False) -> FinetuneRun:
        self.ensure_dependencies()
        plan = self.plan(settings, cases, data_dir, name_mapping, allow_missing_segments)
        self._temp_root().mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="xrayvos-finetune-", dir=self._temp_root()))
        try:
            data = plan.data_dir or work_dir / DATA_NAME
            summaries = (training_cases.export_cases(plan.cases, data, plan.segment_names, plan.mapping,
                                                     settings.holdout) if plan.data_dir is None else [])
            request = {"settings": asdict(settings), "base_model": str(plan.base_model), "two_shot": plan.two_shot,
                       "segments": plan.segment_names, "cases": summaries, "data": str(data)}
            (work_dir / REQUEST_NAME).write_text(json.dumps(request, indent=1), encoding="utf-8")
            worker = WorkerProcess(work_dir / REQUEST_NAME, python=self.python,
                                   env=worker_environment(self.worker_base_environment(), self.worker_env),
                                   module_args=finetune_arguments(plan, data, work_dir))
            worker.start()
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        return FinetuneRun(plan, work_dir, worker, summaries, total=int(settings.steps))

    def poll(self, run: FinetuneRun) -> str:
        """Take in the process's reports; when it finished, install the model. Returns run.state."""
        if run.state != RUNNING:
            return run.state
        finished, events = run.worker.drain()
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                run.step, run.total = int(event.get("done", run.step)), int(event.get("total", run.total))
                run.loss, run.eta_s = event.get("loss"), event.get("eta_s")
            elif kind == "stage":
                run.stage = str(event.get("stage", ""))
            elif kind == "error":
                run.error = str(event.get("message", ""))
            elif kind == "done":
                run.report = event
        if not finished:
            return run.state
        code = run.worker.returncode
        if run.worker.cancel_requested or code == EXIT_CANCELLED:  # by us, or a signal from outside
            run.state = CANCELLED
        elif code == EXIT_OK and run.report:
            try:
                run.card = self.model_card(run)
                run.model_path = models.install_model(run.work_dir / MODEL_NAME, self.models_dir,
                                                      run.plan.settings.name, run.card)
                run.state, run.stage = DONE, "done"
            except (OSError, ValueError) as exc:
                run.state, run.error = FAILED, f"installing the model failed: {exc}"
        else:
            run.state = FAILED
            stderr = run.worker.error_text()
            head = run.error or f"the fine-tune process stopped with exit status {code}"
            run.error = f"{head}\n{stderr}".strip() if stderr and stderr not in head else head
        shutil.rmtree(run.work_dir, ignore_errors=True)
        return run.state

    def cancel(self, run: FinetuneRun) -> None:
        """Stop the process tree; nothing is installed, temporary files are removed."""
        if run.state == RUNNING:
            run.worker.cancel()
            run.state = CANCELLED
        shutil.rmtree(run.work_dir, ignore_errors=True)

    def finetune(self, settings: FinetuneSettings, cases: Sequence[Any] = (), data_dir: str | Path | None = None,
                 name_mapping: Mapping[str, str] | None = None, allow_missing_segments: bool = False,
                 progress: Callable[[FinetuneRun], None] | None = None, timeout: float | None = None) -> Path:
        """Blocking run for scripts; returns the installed model's path or raises with the process's error."""
        run = self.start(settings, cases, data_dir, name_mapping, allow_missing_segments)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while self.poll(run) == RUNNING:
                if progress is not None:
                    progress(run)
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel(run)
                    raise TimeoutError(f"XRayVOS fine-tune did not finish within {timeout} s (cancelled)")
                time.sleep(self.POLL_SECONDS)
        except BaseException:
            self.cancel(run)
            raise
        if run.state != DONE:
            raise RuntimeError(run.error or f"XRayVOS fine-tune {run.state}")
        return run.model_path

    def model_card(self, run: FinetuneRun) -> dict[str, Any]:
        plan, report = run.plan, run.report
        validation = report.get("validation") or {}
        base_header = read_model_header(plan.base_model)
        return {
            "name": plan.settings.name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "base_model": str(plan.base_model),
            "base_model_steps": base_header[1].get("steps") if base_header else None,
            "steps": plan.settings.steps, "two_shot": plan.two_shot, "device": plan.settings.device,
            "seconds": report.get("seconds"), "segments": plan.segment_names, "segment_mapping": plan.mapping,
            "cases": run.case_summaries, "data_dir": str(plan.data_dir) if plan.data_dir else None,
            "validation": {"initial": (validation.get("initial") or {}).get("j_and_f"),
                           "finetuned": (validation.get("finetuned") or {}).get("j_and_f"),
                           "frames": (validation.get("finetuned") or {}).get("frames", 0)},
            # What the new model file carries (decision, threshold, fusion weights: kept from the base model).
            "settings": carried_settings(run.work_dir / MODEL_NAME),
        }


def finetune_arguments(plan: FinetunePlan, data: Path, work_dir: Path) -> list[str]:
    """What follows `python -m` for the background fine-tune (checkpoints and the model inside work_dir)."""
    s = plan.settings
    args = ["XRayVOSLib", "finetune", "--data", str(data), "--init", str(plan.base_model),
            "--out", str(work_dir / MODEL_NAME), "--work-dir", str(work_dir / "train"),
            "--steps", str(int(s.steps)), "--device", s.device, "--size", str(int(s.size)),
            "--batch-size", str(int(s.batch_size)), "--progress-json"]
    if plan.two_shot:
        args.append("--two-shot")
    validation = data / training_cases.VALIDATION
    if s.holdout and validation.is_dir() and any(validation.iterdir()):
        args += ["--val-annotations", str(validation)]
    return args


def check_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda":
        try:
            import torch
        except ImportError:
            raise ValueError("CUDA was chosen but PyTorch is not installed; choose cpu or auto") from None
        if not torch.cuda.is_available():
            raise ValueError("CUDA was chosen but this computer has no usable CUDA GPU; choose cpu or auto")


def davis_label_counts(root: Path) -> dict[str, int]:
    """{video: number of annotated frames} of a DAVIS folder; ValueError for a video with none."""
    from XRayVOSLib.io import read_mask_folder

    images, annotations = root / training_cases.IMAGES, root / training_cases.ANNOTATIONS
    if not images.is_dir() or not annotations.is_dir():
        raise ValueError(f"{root} is not a DAVIS-layout folder (needs JPEGImages/ and Annotations/)")
    videos = sorted(p.name for p in images.iterdir() if p.is_dir())
    if not videos:
        raise ValueError(f"{images} holds no video folders")
    counts = {}
    for video in videos:
        folder = annotations / video
        labelled = [t for t, m in read_mask_folder(folder).items() if m.any()] if folder.is_dir() else []
        if not labelled:
            raise ValueError(f"case {video!r} has no annotations in {folder}")
        counts[video] = len(labelled)
    return counts


__all__ = ["FinetuneLogic", "FinetuneSettings", "FinetunePlan", "FinetuneRun", "RUNNING", "DONE", "FAILED",
           "CANCELLED"]
