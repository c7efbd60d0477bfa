"""`xrayvos finetune --data DAVIS_ROOT --init MODEL --out MODEL_OUT [--two-shot] [--steps N] [--device ...]`.

With --progress-json, stdout carries only the JSON event lines of XRayVOSLib.events:
  {"event": "stage", "stage": name}      as each stage starts (train | teacher, pseudo-label, student | validate)
  {"event": "progress", "done": s, "total": n, "loss": x, "eta_s": e}     after each training step
  {"event": "done", "model": path, "seconds": s, ...}                      the last line of a finished run
  {"event": "cancelled", "done": s, "total": n}  or  {"event": "error", "message": "..."}
and the exit codes are the same table (0 done, 1 failed, 2 bad input, 130 cancelled by SIGINT / SIGTERM).
Background callers (the Slicer module) parse these. With --val-annotations DIR (held-out masks,
DIR/<video>/%05d.png), the done line carries "validation": J&F on those frames for the initial and the
fine-tuned model. The output model appears only when training completes (written under a temporary name,
then renamed); a cancelled or failed run writes none. --work-dir keeps the stages' states: a rerun with the
same data, init and options resumes there; another run's state is refused unless --restart.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from XRayVOSLib.errors import CancelledError, InputError, XRayVOSError
from XRayVOSLib.events import EXIT_CANCELLED, EXIT_INPUT, EXIT_OK, emit
from XRayVOSLib.runtime import cancel_on_signals


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model on a DAVIS-layout folder (sparse labels OK)")
    p.add_argument("--data", required=True, help="DAVIS root: JPEGImages/<video>/ and Annotations/<video>/")
    p.add_argument("--init", help="starting model (.safetensors); default: the shipped model")
    p.add_argument("--out", required=True, help="output model path (.safetensors)")
    p.add_argument("--two-shot", action="store_true", help="teacher -> pseudo-labels -> student")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=320, help="training crop size")
    p.add_argument("--work-dir", help="keep intermediate checkpoints here (default: a temporary folder); a rerun "
                                      "with the same data, init and options resumes from them")
    p.add_argument("--restart", action="store_true", help="ignore the states in --work-dir and start over")
    p.add_argument("--val-annotations", help="held-out masks (<video>/%%05d.png) scored before and after")
    p.add_argument("--progress-json", action="store_true", help="JSON progress lines on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the fine-tune; with --progress-json every ending, good or bad, is also the last event line."""
    steps = {"done": 0, "total": int(args.steps)}
    try:
        return _finetune(args, steps)
    except (CancelledError, KeyboardInterrupt):
        if args.progress_json:
            emit("cancelled", **steps)
        print("xrayvos finetune: cancelled; no model was written", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as exc:  # unwritable folder, full disk: one line, as for bad input
        if args.progress_json:
            emit("error", message=f"{type(exc).__name__}: {exc}")
        print(f"xrayvos finetune: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # XRayVOSError: the CLI prints its line (exit 2); anything else: a traceback (exit 1)
        if args.progress_json:
            emit("error", message=str(exc) if isinstance(exc, XRayVOSError) else f"{type(exc).__name__}: {exc}")
        raise


def _finetune(args: argparse.Namespace, steps: dict[str, int]) -> int:
    from XRayVOSLib.model_files import default_model_path
    from XRayVOSLib.training.config import TrainConfig
    from XRayVOSLib.training.finetune import finetune

    _check_numbers(args)
    init = Path(args.init) if args.init else default_model_path()
    if init is None or not init.is_file():
        raise InputError(f"initial model {init} not found; pass --init MODEL.safetensors")
    if init.suffix != ".safetensors":
        raise InputError(f"--init {init}: not an XRayVOS model; fine-tuning starts from a .safetensors model")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"--out {out}: the model file must end in .safetensors")
    default = default_model_path()
    if default is not None and out.resolve() == default.resolve():
        raise InputError(f"--out {out} is the shipped model; choose another path (it is never overwritten)")
    val_root = Path(args.val_annotations) if args.val_annotations else None
    if val_root is not None and not val_root.is_dir():
        raise InputError(f"--val-annotations {val_root}: folder not found")
    started = time.time()

    def on_stage(name: str) -> None:
        if args.progress_json:
            emit("stage", stage=name)

    def on_step(step: int, total: int, losses: dict[str, float]) -> None:
        steps.update(done=int(step), total=int(total))
        if args.progress_json:
            eta = (time.time() - started) / max(step, 1) * (total - step)
            emit("progress", done=int(step), total=int(total), loss=round(losses.get("total", float("nan")), 5),
                 eta_s=round(eta, 1))

    base = TrainConfig(batch_size=args.batch_size, size=args.size)
    cancel = threading.Event()
    with cancel_on_signals(cancel):  # SIGTERM / Ctrl+C stop at the next step; no model is written
        path, report = finetune(args.data, init, out, steps=args.steps, two_shot=args.two_shot, device=args.device,
                                work_dir=args.work_dir, base=base, on_step=on_step, cancel=cancel,
                                show_progress=not (args.quiet or args.progress_json), on_stage=on_stage,
                                restart=args.restart)
    if val_root is not None:
        on_stage("validate")
        report.update(_validation(init, path, args, val_root))
    summary: dict[str, Any] = {"model": str(path), "seconds": round(time.time() - started, 1), **report}
    if args.progress_json:
        emit("done", **summary)
    else:
        print(f"model written to {path}", flush=True)
    return EXIT_OK


def _check_numbers(args: argparse.Namespace) -> None:
    """The numeric flags, before anything is read: one line naming the flag."""
    from XRayVOSLib.training.config import SIZE_MULTIPLE

    for flag, value, minimum in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                                 ("--size", args.size, 2 * SIZE_MULTIPLE)):
        if value < minimum:
            raise InputError(f"{flag} {value}: must be at least {minimum}")
    if args.size % SIZE_MULTIPLE:
        raise InputError(f"--size {args.size}: must be a multiple of {SIZE_MULTIPLE} (the network's stride)")


def _validation(init: Path, path: Path, args: argparse.Namespace, val_root: Path) -> dict[str, Any]:
    """J&F of the initial and the fine-tuned model on held-out masks; best effort: the model is written."""
    from XRayVOSLib.training.validation import validation_jf

    try:
        return {"validation": {"initial": validation_jf(init, args.data, val_root, device=args.device),
                               "finetuned": validation_jf(path, args.data, val_root, device=args.device)}}
    except Exception as exc:
        print(f"xrayvos finetune: validation failed ({exc}); the model was written", file=sys.stderr)
        return {"validation_error": f"{type(exc).__name__}: {exc}"}
