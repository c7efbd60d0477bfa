"""`xrayvos bench`: fps and peak memory of local vs global matching on synthetic cines.

    xrayvos bench                         # 512x512; 1 and 5 objects; T = 100 and 300; stride 16
    xrayvos bench --stride 16,8           # also stride 8 (untrained stride-8 net if the checkpoint is 16)
    xrayvos bench --quick                 # T = 20, 1 object, local only, 128x128: a smoke test

Every run is a fresh subprocess (see XRayVOSLib.inference.bench for what each figure means).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    from XRayVOSLib.inference.bench import BenchCase, format_table, run_benchmark
    from XRayVOSLib.inference.propagator import resolve_device

    device = str(resolve_device(args.device))  # fail fast on --device cuda without a GPU
    strides = int_list(args.stride, "--stride", allowed=(8, 16))
    if args.quick:
        objects, lengths, matchings = [1], [20], ("local",)
        size = args.size or 128
    else:
        objects = int_list(args.objects, "--objects")
        lengths = int_list(args.frames, "--frames", low=2)
        matchings = ("local", "global")
        size = args.size or 512
    if not 64 <= size <= 4096:
        raise InputError(f"--size {size}: must be between 64 and 4096")
    if args.window < 1 or args.memory_every < 1:
        raise InputError(f"--window {args.window} / --memory-every {args.memory_every}: both must be >= 1")
    if args.model and not Path(args.model).is_file():
        raise InputError(f"--model {args.model}: no such file")
    base = BenchCase(size=size, window=args.window, memory_every=args.memory_every, device=device,
                     model=args.model, accelerate=not args.no_jit, temporal_blend=args.temporal_blend,
                     support_warp=args.support_warp, area_prior=args.area_prior)
    results = run_benchmark(base, objects, lengths, strides[:1] if args.quick else strides, matchings)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure fps and peak memory of local vs global matching",
        description=(
            "Propagate the ground truth of frame 0 through synthetic cines with local and with global "
            "matching, one fresh process per run, and print fps, fps after warm-up, and peak memory, "
            "with local/global ratios."
        ),
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--size", type=int, help="frame size in pixels (default 512; 128 with --quick)")
    parser.add_argument("--frames", default="100,300", metavar="T,T", help="cine lengths (default 100,300)")
    parser.add_argument("--objects", default="1,5", metavar="K,K", help="object counts (default 1,5)")
    parser.add_argument("--stride", default="16", metavar="S[,S]",
                        help="matching stride(s), 16 and/or 8; a checkpoint of another stride is replaced "
                             "by an untrained network of the wanted stride (speed only)")
    parser.add_argument("--window", type=int, default=15, help="local window k (default 15)")
    parser.add_argument("--memory-every", type=int, default=6, metavar="R", help="memory interval (default 6)")
    parser.add_argument("--model", metavar="PATH", help="checkpoint (default: the shipped one, else untrained)")
    parser.add_argument("--no-jit", action="store_true", help="eager PyTorch instead of TorchScript tracing")
    parser.add_argument("--temporal-blend", type=float, metavar="A",
                        help="temporal fusion weight (default: the model's; 0 measures the network alone)")
    parser.add_argument("--support-warp", type=float, metavar="D",
                        help="support anchor weight (default: the model's; 0 turns it off)")
    parser.add_argument("--area-prior", action=argparse.BooleanOptionalAction, default=None,
                        help="per-object area thresholds (default: the model's setting)")
    parser.add_argument("--quick", action="store_true", help="one short run (T=20, 1 object, local) as a smoke test")
    parser.add_argument("--json", metavar="OUT", help="also write every run's figures as JSON")
    parser.set_defaults(func=run)
