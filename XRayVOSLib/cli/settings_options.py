"""The RunSettings flags, one definition for `propagate`, `evaluate`, `calibrate` and `bench`.

A flag left out keeps what the model file carries (RunSettings.from_model), else the default; nothing a
user gives is switched off by another flag: `--threshold` only applies to `--decision threshold`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from XRayVOSLib.errors import InputError
from XRayVOSLib.settings import DECISIONS, METHODS, RunSettings


def add_settings_options(parser: argparse.ArgumentParser, method: bool = True, fusion: bool = False) -> None:
    """method: add --method (evaluate has its own --methods); fusion: add the research-only fusion weights."""
    defaults = RunSettings()
    if method:
        parser.add_argument("--method", choices=METHODS, metavar="METHOD",
                            help=f"{' | '.join(METHODS)} (default {defaults.method}: the network; flow, "
                                 "flow-support and copy are baselines)")
    parser.add_argument("--model", metavar="PATH", help="checkpoint (default: the shipped model)")
    parser.add_argument("--device", help=f"auto (CUDA if available), cpu or cuda (default {defaults.device})")
    parser.add_argument("--window", type=int, metavar="K",
                        help=f"local matching window, odd (default {defaults.window})")
    parser.add_argument("--memory-every", type=int, metavar="R",
                        help=f"a predicted frame joins the memory every R frames (default {defaults.memory_every})")
    parser.add_argument("--decision", choices=DECISIONS,
                        help="how probabilities become labels: area-prior (each object keeps its painted area) "
                             "or threshold (one fixed object threshold, --threshold); default: the model's")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="object threshold in (0, 1) of --decision threshold (default: the model's)")
    if fusion:
        parser.add_argument("--temporal-blend", type=float, metavar="A",
                            help="output fusion: weight in [0, 1) of the flow-warped previous result "
                                 "(default: the model's; 0 with --support-warp 0 = the network alone)")
        parser.add_argument("--support-warp", type=float, metavar="D",
                            help="output fusion: weight in [0, 1] of the support mask warped onto each frame")


def settings_from_args(args: argparse.Namespace, method: str | None = None) -> RunSettings:
    """The run's settings: defaults, then what the model carries, then the flags given."""
    settings = RunSettings.from_model(
        Path(args.model).expanduser() if getattr(args, "model", None) else None,
        method=method or getattr(args, "method", None), device=args.device, window=args.window,
        memory_every=args.memory_every, decision=args.decision, threshold=args.threshold,
        temporal_blend=getattr(args, "temporal_blend", None), support_warp=getattr(args, "support_warp", None))
    if args.threshold is not None and settings.decision != "threshold":
        raise InputError(f"--threshold {args.threshold} applies to --decision threshold only; this run decides by "
                         f"{settings.decision} (add --decision threshold)")
    return settings


__all__ = ["add_settings_options", "settings_from_args"]
