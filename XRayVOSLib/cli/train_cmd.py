"""`xrayvos train --config CFG.json`: pretraining (resumable; works under torchrun for several GPUs/machines)."""

from __future__ import annotations

import argparse
import json

from XRayVOSLib.training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train (pretrain) a model from a JSON config",
                              description="Train a model. Resumes from OUT_DIR/state.pt when present. "
                                          "Run under `torchrun --nproc_per_node N` for DDP.")
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
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    path = run_training(config, resume=not args.no_resume, show_progress=not args.quiet)
    print(f"model written to {path}")
    return 0
