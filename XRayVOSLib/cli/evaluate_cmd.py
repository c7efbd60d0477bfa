"""`xrayvos evaluate --data DAVIS_ROOT`: run methods on a data set, score them, write results and plots."""

from __future__ import annotations

import argparse
from typing import Any

from XRayVOSLib.cli.eval_cmd import format_table, parse_spacing
from XRayVOSLib.cli.settings_options import add_settings_options, settings_from_args
from XRayVOSLib.errors import InputError
from XRayVOSLib.settings import METHODS


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (`--videos 0` would run nothing, `--videos=-1` drop a video)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def method_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, {**r["dataset"], "fps": r["fps"]}) for name, r in results["methods"].items()]


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.evaluation.runner import evaluate_methods, stderr_log

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise InputError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    results = evaluate_methods(
        args.data, methods, supports=args.supports, out_dir=args.out, videos=args.videos,
        categories=args.categories, spacing=parse_spacing(args.spacing), save_masks=args.save_masks,
        log=stderr_log, settings=settings_from_args(args, method=methods[0]), model=args.model,
    )
    print(f"{len(results['videos'])} videos, supports: {results['supports']}")
    with_mm = any("hd95_mm" in r["dataset"] for r in results["methods"].values())
    print(format_table("method", method_rows(results), ("hd95_mm", "fps") if with_mm else ("fps",)))
    if args.out:
        print(f"results in {args.out}/results.json, results.csv")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="run propagation methods on a DAVIS-layout data set and score them",
        description=(
            "For each video of DATA/JPEGImages (with ground truth in DATA/Annotations), give every method "
            "the same support masks (taken from the ground truth), score the other annotated frames, and "
            "write OUT/results.json, OUT/results.csv and plots."
        ),
    )
    parser.add_argument("--data", required=True, metavar="DAVIS_ROOT", help="folder with JPEGImages/ and Annotations/")
    parser.add_argument(
        "--supports", default="first", metavar="first|first+middle|FILE.json",
        help="support frames: first annotated frame, that and the middle one, or a JSON {video: [t, ...]}",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--out", metavar="DIR", help="write results.json, results.csv and PNG plots here")
    add_settings_options(parser, method=False, fusion=True)
    parser.add_argument("--videos", type=positive_int, metavar="N", help="only the first N videos (sorted by name)")
    parser.add_argument("--categories", metavar="FILE.json", help='{"video": {"object id": "seen"|"unseen"}}')
    parser.add_argument("--spacing", metavar="MM", help="pixel spacing for HD95 in mm: 'S' or 'ROW,COL'")
    parser.add_argument("--save-masks", action="store_true", help="also write OUT/masks/<method>/<video>/%%05d.png")
    parser.set_defaults(func=run)
