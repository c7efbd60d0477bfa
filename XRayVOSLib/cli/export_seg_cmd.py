"""`xrayvos export-seg PRED_DIR --source CINE.dcm --out OUT.dcm`: a finished propagation as a DICOM SEG.

PRED_DIR is a `propagate` output: %05d.png label maps and run.json (written last, so its presence says the
run finished). run.json gives the support frames (recorded as painted by a person), the method, the model
(its file is hashed into the algorithm identification) and the settings. --source defaults to the run's
input. The SEG is written atomically (a temporary file beside OUT, then os.replace).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from XRayVOSLib.errors import InputError


def read_run(pred_dir: Path) -> dict[str, Any]:
    """PRED_DIR/run.json, checked for what a SEG needs (frames, height, width, supports, settings)."""
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: no such folder (expected a `xrayvos propagate` output)")
    path = pred_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{path}: missing; {pred_dir} is not a finished `xrayvos propagate` output")
    try:
        run = json.loads(path.read_text())
        frames, height, width = int(run["frames"]), int(run["height"]), int(run["width"])
        supports = [int(r["frame"]) for r in run["supports"]]
        method = str(run["settings"]["method"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a propagate run.json ({type(exc).__name__}: {exc})") from exc
    return {**run, "frames": frames, "height": height, "width": width, "support_frames": supports,
            "method": method}


def label_frames(pred_dir: Path, run: dict[str, Any]) -> Any:
    """The run's label maps, read one PNG at a time as the SEG writer asks for them."""
    from XRayVOSLib.io import LazyFrames, read_mask

    paths = [pred_dir / f"{t:05d}.png" for t in range(run["frames"])]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise InputError(f"{missing}: missing; run.json says the run has {run['frames']} frames")
    return LazyFrames(len(paths), (run["height"], run["width"]), np.uint16, lambda t: read_mask(paths[t]))


def export_run(pred_dir: str | Path, out: str | Path, *, source: str | Path | None = None,
               segments: dict[int, Any] | None = None, series_description: str = "XRayVOS segmentation") -> Path:
    """Write a finished propagate output folder as a DICOM SEG of `source` (default: the run's input).

    The one call `propagate --dicom-seg` and scripts need after a run; raises InputError on bad input.
    """
    from XRayVOSLib.seg import algorithm_for_run, write_dicom_seg

    pred_dir = Path(pred_dir).expanduser()
    info = read_run(pred_dir)
    if not (source or info.get("input")):
        raise InputError(f"{pred_dir / 'run.json'}: records no input; give the DICOM cine with --source")
    source = Path(source or info["input"]).expanduser()
    if info.get("input") and Path(info["input"]).resolve() != source.resolve():
        print(f"xrayvos export-seg: warning: {pred_dir} was computed on {info['input']}; the SEG references "
              f"{source}", file=sys.stderr)
    segments = dict(segments or {})
    unknown = sorted(set(segments) - {int(i) for i in info.get("objects", segments)})
    if unknown:
        raise InputError(f"--name {unknown[0]}=...: object {unknown[0]} is not in {pred_dir} "
                         f"(its objects: {info.get('objects')})")
    model = info.get("model")
    algorithm = algorithm_for_run(info["method"], model, info.get("settings"))
    if model not in (None, "untrained") and algorithm.model_sha256 is None:
        print(f"xrayvos export-seg: warning: model file {model} not found; its sha256 is recorded as unavailable",
              file=sys.stderr)
    try:
        return write_dicom_seg(label_frames(pred_dir, info), source, out,
                               segments=segments, supports=info["support_frames"], algorithm=algorithm,
                               series_description=series_description)
    except OSError as exc:  # a full disk or a read-only folder: one line, not a traceback
        raise InputError(f"{exc.filename or out}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.seg.terms import parse_segment

    segments = dict(parse_segment(text) for text in args.name or ())
    out = export_run(args.pred_dir, args.out, source=args.source, segments=segments,
                     series_description=args.series_description)
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-seg",
        help="write a propagate output folder as a DICOM Segmentation (SEG) of its DICOM cine",
        description=(
            "Write PRED_DIR (%05d.png + run.json from `xrayvos propagate`) as a DICOM SEG referencing the "
            "DICOM cine it was computed on (a multi-frame XA/RF file or a folder of single-frame DICOMs): one "
            "segment per object, one binary frame per cine frame and object with content, supports recorded "
            "as painted by a person. See docs/dicom_seg.md."
        ),
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="a propagate output folder")
    parser.add_argument("--source", metavar="CINE",
                        help="the DICOM cine the run segmented (default: the input recorded in run.json)")
    parser.add_argument("--out", required=True, metavar="OUT.dcm", help="the SEG file to write")
    parser.add_argument("--name", action="append", metavar="ID=NAME[:KIND]",
                        help="name an object (kept as its Segment Label); KIND (artery, catheter, guidewire, "
                             "balloon, stent, object) picks its SNOMED CT codes, else the name's words do")
    parser.add_argument("--series-description", default="XRayVOS segmentation", metavar="TEXT",
                        help="the SEG series' description (default: %(default)s)")
    parser.set_defaults(func=run)
