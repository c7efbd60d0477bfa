"""`xrayvos eval GT_ROOT PRED_ROOT`: score prediction folders against ground-truth folders (DAVIS layout)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from XRayVOSLib.errors import InputError
from XRayVOSLib.outputs import check_file_target, write_json_atomic

COLUMNS = (("J", "J"), ("F", "F"), ("J&F", "J&F"), ("dice", "Dice"), ("hd95", "HD95"))


def parse_spacing(text: str | None) -> float | tuple[float, float] | None:
    """'0.3' (isotropic) or '0.3,0.25' (row, column) mm per pixel."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InputError(f"--spacing: {text!r} is not a number or 'row,column' pair") from exc
    if len(values) not in (1, 2) or not all(v > 0 and math.isfinite(v) for v in values):
        raise InputError(f"--spacing: expected one or two positive numbers, got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(first_header: str, rows: list[tuple[str, dict[str, Any]]], extra: tuple[str, ...] = ()) -> str:
    """Fixed-width table: one row per (label, means dict), columns J, F, J&F, Dice, HD95 (+ extra keys)."""
    keys = [k for k, _ in COLUMNS] + list(extra)
    heads = [h for _, h in COLUMNS] + list(extra)
    width = max([len(first_header)] + [len(label) for label, _ in rows]) + 2
    lines = [first_header.ljust(width) + "".join(h.rjust(9) for h in heads)]
    for label, values in rows:
        cells = [fmt(values.get(k), 2 if k.startswith("hd95") or k == "fps" else 3) for k in keys]
        lines.append(label.ljust(width) + "".join(c.rjust(9) for c in cells))
    return "\n".join(lines)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(video, means) for video, means in summary["videos"].items()]
    rows.append((f"all ({summary['dataset']['objects']} objects)", summary["dataset"]))
    for name, means in summary.get("categories", {}).items():
        rows.append((f"{name} ({means['objects']} objects)", means))
    return rows


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.evaluation.runner import evaluate_folders
    from XRayVOSLib.metrics.aggregate import jsonable

    if args.json:  # before scoring: an unwritable --json must not cost the whole evaluation
        check_file_target(args.json, "--json")
    summary = evaluate_folders(
        args.gt_root, args.pred_root, supports=args.supports, categories=args.categories,
        spacing=parse_spacing(args.spacing),
    )
    extra = ("hd95_mm",) if args.spacing else ()
    print(format_table("video", summary_rows(summary), extra))
    if args.json:
        write_json_atomic(Path(args.json).expanduser(), jsonable(summary))
        print(f"wrote {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score predicted mask folders against ground truth (J, F, J&F, Dice, HD95)",
        description=(
            "Compare PRED_ROOT/<video>/%%05d.png with GT_ROOT/<video>/%%05d.png (a DAVIS Annotations folder). "
            "Only annotated GT frames are scored; support frames are left out: by default the first "
            "annotated frame of each video (DAVIS semi-supervised convention), or those in --supports. "
            "Figures: per object over its frames, then the mean over objects (per video and overall)."
        ),
    )
    parser.add_argument("gt_root", metavar="GT_ROOT", help="ground truth: GT_ROOT/<video>/%%05d.png label maps")
    parser.add_argument("pred_root", metavar="PRED_ROOT", help="predictions in the same layout")
    parser.add_argument("--json", metavar="OUT", help="write the full results (per video, object, frame) here")
    parser.add_argument("--supports", metavar="FILE.json", help='frames to leave out, {"video": [t, ...]}')
    parser.add_argument(
        "--categories", metavar="FILE.json",
        help='object categories for split figures, {"video": {"object id": "seen"|"unseen"}}',
    )
    parser.add_argument("--spacing", metavar="MM", help="pixel spacing for HD95 in mm: 'S' or 'ROW,COL'")
    parser.set_defaults(func=run)
