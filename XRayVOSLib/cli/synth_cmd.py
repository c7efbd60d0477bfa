"""`xrayvos synth --out DIR --videos N --frames T --size S [--generator v2]`: write a synthetic DAVIS-style dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from XRayVOSLib.errors import InputError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth", help="write synthetic angiography cines with exact ground truth (DAVIS layout)",
        description="Generate synthetic X-ray angiography cines (vessel trees, catheters, guidewires, devices) "
                    "and write OUT/JPEGImages/<video>/%%05d.png, OUT/Annotations/<video>/%%05d.png and OUT/meta.json.")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created; existing videos are replaced)")
    p.add_argument("--videos", type=_positive, default=10, help="number of videos (default 10)")
    p.add_argument("--frames", type=_positive, default=30, help="frames per video (default 30)")
    p.add_argument("--size", type=_positive, default=512, help="frame size in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; video i depends only on (seed, i)")
    p.add_argument("--generator", choices=("v1", "v2"), default="v1",
                   help="v1: 2D polyline scenes (default); v2: 3D coronary anatomy through a C-arm, contrast filling, "
                        "large cardiac motion (docs/synth_v2.md); v2 also writes the protocol's supports_*.json")
    p.add_argument("--preset", choices=("easy", "default", "hard"), default="default",
                   help="difficulty of motion, noise, contrast and clutter (default: default)")
    p.add_argument("--max-objects", type=_positive, default=None,
                   help="at most this many objects per video (default: the preset's, 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from XRayVOSLib.synth import config_for, write_davis_dataset
    from XRayVOSLib.synth.protocol import write_protocol_supports

    if not 64 <= args.size <= 4096:
        raise InputError(f"--size must be between 64 and 4096, got {args.size}")
    config = config_for(args.generator, args.preset)
    if args.max_objects is not None:
        config = replace(config, max_objects=args.max_objects, min_objects=min(config.min_objects, args.max_objects))
    start = time.perf_counter()
    names = write_davis_dataset(args.out, args.videos, args.frames, args.size, seed=args.seed, config=config,
                                progress=True)
    took = time.perf_counter() - start
    supports = write_protocol_supports(args.out) if args.generator == "v2" else []
    print(f"wrote {len(names)} videos x {args.frames} frames ({args.size}x{args.size}) to {args.out} in {took:.1f} s")
    print(f"  frames:       {args.out / 'JPEGImages'}/<video>/%05d.png")
    print(f"  ground truth: {args.out / 'Annotations'}/<video>/%05d.png")
    print(f"  metadata:     {args.out / 'meta.json'}")
    for path in supports:
        print(f"  supports:     {path}  (xrayvos evaluate --supports {path})")
    return 0
