"""`xrayvos train --config CFG.json`: pretraining (resumable; works under torchrun for several GPUs/machines)."""

from __future__ import annotations

import argparse
import json
import sys

from XRayVOSLib.events import EXIT_INPUT, EXIT_OK
from XRayVOSLib.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train (pretrain) a model from a JSON config",
                              description="Train a model. Resumes from OUT_DIR/state.safetensors when it is "
                                          "this run's (same config, data and init; another run's state is "
                                          "refused). Run under `torchrun --nproc_per_node N` for DDP.")
    p.add_argument("--config", help="JSON training config (keys of XRayVOSLib.training.config.TrainConfig)")
    p.add_argument("--steps", type=int, help="override config steps")
    p.add_argument("--out-dir", help="override config out_dir")
    p.add_argument("--device", help="override config device (auto, cpu, cuda)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a state exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.training.loop import run_training

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    for name in ("steps", "device"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.out_dir:
        config.out_dir = args.out_dir
    config.validate(args.config or "training config")
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return EXIT_OK
    try:
        path = run_training(config, resume=not args.no_resume, show_progress=not args.quiet)
    except OSError as exc:  # unwritable out_dir, full disk: one line, as for bad input
        print(f"xrayvos train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(f"model written to {path}")
    return EXIT_OK
