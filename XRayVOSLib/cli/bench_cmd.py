"""`xrayvos bench`: fps and peak memory of the shipped pipeline, the network alone and the flow baseline.

    xrayvos bench                         # 512x512; 1 and 5 objects; T = 100 and 300
    xrayvos bench --compare shipped,global  # other variants (inference/bench.py VARIANTS)
    xrayvos bench --quick                 # T = 20, 1 object, shipped only, 128x128: a smoke test

Every run is a fresh subprocess (see XRayVOSLib.inference.bench for what each figure means).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from XRayVOSLib.cli.settings_options import add_settings_options, settings_from_args
from XRayVOSLib.errors import InputError


def int_list(text: str, name: str, allowed: tuple[int, ...] | None = None, low: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name} {text!r}: expected comma-separated integers, e.g. 100,300") from None
    if not values or min(values) < low:
        raise InputError(f"{name} {text!r}: values must be integers >= {low}")
    if allowed and set(values) - set(allowed):
        raise InputError(f"{name} {text!r}: allowed values are {', '.join(map(str, allowed))}")
    return values


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.inference.bench import VARIANTS, BenchCase, format_table, run_benchmark
    from XRayVOSLib.runtime import resolve_device

    settings = settings_from_args(args)
    settings = settings.replace(device=str(resolve_device(settings.device)))  # fail fast without a GPU
    variants = tuple(v.strip() for v in args.compare.split(",") if v.strip())
    unknown = sorted(set(variants) - set(VARIANTS))
    if not variants or unknown:
        raise InputError(f"--compare {args.compare!r}: choose from {', '.join(VARIANTS)}")
    if args.quick:
        objects, lengths, variants = [1], [20], ("shipped",)
        size = args.size or 128
    else:
        objects = int_list(args.objects, "--objects")
        lengths = int_list(args.frames, "--frames", low=2)
        size = args.size or 512
    if not 64 <= size <= 4096:
        raise InputError(f"--size {size}: must be between 64 and 4096")
    if args.model and not Path(args.model).is_file():
        raise InputError(f"--model {args.model}: no such file")
    base = BenchCase(settings=settings.to_dict(), size=size, model=args.model, accelerate=not args.no_jit)
    results = run_benchmark(base, objects, lengths, variants)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure fps and peak memory of the shipped pipeline and what it is compared with",
        description=(
            "Propagate the ground truth of frame 0 through synthetic cines with the shipped pipeline and the "
            "--compare variants (the network alone, the flow baseline, ...), one fresh process per run, and "
            "print fps, fps after warm-up, peak memory and the speed relative to the shipped pipeline."
        ),
    )
    parser.add_argument("--size", type=int, help="frame size in pixels (default 512; 128 with --quick)")
    parser.add_argument("--frames", default="100,300", metavar="T,T", help="cine lengths (default 100,300)")
    parser.add_argument("--objects", default="1,5", metavar="K,K", help="object counts (default 1,5)")
    parser.add_argument("--compare", default="shipped,network,flow", metavar="V,V",
                        help="variants: shipped, network (alone), global, flow, flow-support, copy")
    add_settings_options(parser, method=False, fusion=True)
    parser.add_argument("--no-jit", action="store_true", help="eager PyTorch instead of TorchScript tracing")
    parser.add_argument("--quick", action="store_true", help="one short run (T=20, 1 object, local) as a smoke test")
    parser.add_argument("--json", metavar="OUT", help="also write every run's figures as JSON")
    parser.set_defaults(func=run)
