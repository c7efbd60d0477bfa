"""`xrayvos calibrate --data VAL_ROOT --model M --out M_OUT`: pick the decision rule on validation cines."""

from __future__ import annotations

import argparse
from pathlib import Path

from XRayVOSLib.cli.settings_options import settings_from_args
from XRayVOSLib.errors import InputError


def parse_thresholds(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"--thresholds {text!r}: give comma-separated numbers between 0 and 1") from exc


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.evaluation.calibrate import calibrate_threshold, calibrated_info, format_scores
    from XRayVOSLib.evaluation.runner import stderr_log
    from XRayVOSLib.model.checkpoint import read_metadata, rewrite_info
    from XRayVOSLib.model_files import default_model_path

    model = Path(args.model) if args.model else default_model_path()
    if model is None:
        raise InputError("no --model given and no shipped model found in models/")
    if args.out and Path(args.out).resolve() == model.resolve():
        raise InputError(f"--out {args.out} is the input model; write the calibrated copy to a new file")
    _, info = read_metadata(model)
    args.model, args.decision, args.threshold = str(model), None, None  # the decision is what is chosen
    result = calibrate_threshold(args.data, model, parse_thresholds(args.thresholds), args.supports,
                                 settings=settings_from_args(args), videos=args.videos, log=stderr_log)
    print(f"{result['videos']} videos, {result['objects']} objects, supports: {result['supports']}")
    print(format_scores(result))
    before = info.get("settings", {})
    if before:
        print(f"the model carried decision {before.get('decision')}, threshold {before.get('threshold')}")
    if args.out:
        rewrite_info(model, args.out, calibrated_info(info, result))
        print(f"wrote {args.out} (decision {result['decision']}, threshold {result['best']:g}; weights unchanged)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from XRayVOSLib.evaluation.calibrate import DEFAULT_THRESHOLDS

    p = subparsers.add_parser(
        "calibrate", help="pick a model's decision rule (area prior or a threshold) on validation cines",
        description="Propagate each validation video once from its support frames, score the annotated "
                    "frames at every threshold and with the area prior, and (with --out) write a copy of the "
                    "model that carries the winner (decision and threshold). Use cines you do not test on.")
    p.add_argument("--data", required=True, metavar="DAVIS_ROOT",
                   help="validation folder with JPEGImages/ and Annotations/")
    p.add_argument("--model", metavar="PATH", help="checkpoint to calibrate (default: the shipped model)")
    p.add_argument("--out", metavar="PATH", help="write the calibrated copy here (must differ from --model)")
    p.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
                   help="comma-separated candidates in (0, 1); 0.5 is the plain arg-max")
    p.add_argument("--supports", default="first", metavar="first|first+middle|FILE.json")
    p.add_argument("--device", help="auto, cpu, cuda (default auto)")
    p.add_argument("--window", type=int, metavar="K", help="local matching window k (default: the model's)")
    p.add_argument("--memory-every", type=int, metavar="R", help="keyframe interval r (default: the model's)")
    p.add_argument("--videos", type=int, metavar="N", help="only the first N videos (sorted by name)")
    p.set_defaults(func=run)
