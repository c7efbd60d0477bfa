"""`xrayvos propagate INPUT --support T:MASK ... --out OUT_DIR`: segment every frame of one cine.

Output
    OUT_DIR/%05d.png   one DAVIS palette label map per input frame (object ids as in the support masks, 1..255;
                       a larger id is refused before anything runs), written as frames finish (network
                       methods), so memory stays bounded on long cines.
    OUT_DIR/run.json   input, frames, height, width, objects, supports, settings (RunSettings.to_dict, device
                       resolved), model ("untrained", a path, or null for the baselines), model_trained,
                       seconds, fps (non-support frames / seconds), peak_memory_mb, fingerprint (what
                       `xrayvos batch` compares to skip a complete run: XRayVOSLib/run_one.py), xrayvos_version.
    OUT_DIR/confidence.csv, run.json "confidence" / "incremental", OUT_DIR/.pass-cache/: the estimated J
                       of every frame and object, the review order, and the pass cache that the next run
                       into OUT_DIR (or one given --resume-from OUT_DIR) reads back, recomputing only the
                       passes a changed support touches (XRayVOSLib/propagation/result_files.py, cache.py).
The run itself is XRayVOSLib.run_one.run_to_folder, which every run of `xrayvos batch` calls too.

OUT_DIR is owned by the run (XRayVOSLib.outputs.OutputFolder): it must be new, empty, or an earlier result of
`propagate` (run.json, %05d.png, confidence.csv, .pass-cache/ only), which is replaced completely; anything
else is refused, as is an OUT_DIR holding the input or a support mask. A second run into OUT_DIR while one
writes is refused (a lock). Every output location is checked before the cine is read; the frames are written
into a staging folder beside OUT_DIR that takes its place only when the run has finished, so a failed or
cancelled run (full disk, Ctrl-C) leaves OUT_DIR exactly as it was and never a mix of two runs.

Cancelling: Ctrl-C (SIGINT) or SIGTERM stops within one frame and exits 130; nothing of the run is kept.

--progress-json (for scripts and the Slicer module): stdout carries only the JSON event lines of
XRayVOSLib/events.py ("started" with method, frames, supports, device; "progress"; then "done" with out,
run_json, frames, seconds, fps, or "cancelled", or "error"); no tqdm bar is drawn; warnings (e.g. an
untrained model) go to stderr. Exit codes: events.EXIT_CODES.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from XRayVOSLib.cli.settings_options import add_settings_options, settings_from_args
from XRayVOSLib.errors import CancelledError, XRayVOSError
from XRayVOSLib.events import EXIT_CANCELLED, emit
from XRayVOSLib.outputs import describe_os_error
from XRayVOSLib.run_one import (  # noqa: F401 - PROPAGATE_RESULT and parse_support are this command's API
    PROPAGATE_RESULT,
    RunCancelled,
    build_method,
    parse_support,
    run_to_folder,
    signal_name,
)


class _Progress:
    """Fans the method's progress(done, total) out to a tqdm bar and/or JSON lines on stdout."""

    def __init__(self, bar: bool, json_lines: bool) -> None:
        self.bar_wanted, self.json_lines = bar, json_lines
        self.bar: Any = None
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.bar_wanted:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="frame", desc="propagate", file=sys.stderr)
            self.bar.update(done - self.bar.n)
        if self.json_lines:
            emit("progress", done=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except OSError as exc:  # one not raised as an OutputError by the writers: still one line, never a traceback
        error = XRayVOSError(describe_os_error(exc))
        if args.progress_json:
            emit("error", message=str(error))
        raise error from None
    except XRayVOSError as exc:
        if args.progress_json and not isinstance(exc, CancelledError):
            emit("error", message=str(exc))
        raise


def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)  # bad settings fail before the cine is read
    progress = _Progress(bar=not args.quiet and not args.progress_json, json_lines=args.progress_json)
    started = (lambda **fields: emit("started", **fields)) if args.progress_json else None
    try:  # the bar is closed however this ends, so an error message never lands on it
        out, record = run_to_folder(args.input, args.support, args.out, settings, args.model, progress=progress,
                               build=lambda s: build_method(s, args.model), on_started=started,
                               dicom_seg=args.dicom_seg, resume_from=args.resume_from)
    except RunCancelled as cancelled:
        progress.close()
        if args.progress_json:
            emit("cancelled", done=progress.done, total=progress.total)
        print(f"xrayvos propagate: cancelled ({signal_name(cancelled.signum)}) after {progress.done}/"
              f"{progress.total} frames; {cancelled.out} is unchanged (nothing of this run was kept)", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        progress.close()
    if args.progress_json:
        emit("done", out=str(out), run_json=str(out / "run.json"), frames=record["frames"], seconds=record["seconds"],
             fps=record["fps"])
    elif not args.quiet:
        print(f"wrote {record['frames']} masks and run.json to {out} ({record['fps']} frames/s, {settings.method})")
    return 0


def add_review_options(parser: argparse.ArgumentParser) -> None:
    """Incremental re-propagation (issue 22): which earlier result's pass cache the run reads back."""
    parser.add_argument("--resume-from", metavar="DIR",
                        help="an earlier result of propagate on this cine: its passes that no support change "
                             "touches are read back instead of computed (default: OUT_DIR itself when it is one)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "propagate",
        help="segment every frame of a cine from one or more painted support frames",
        description=(
            "Propagate the label maps given for some frames (--support T:MASK, T 0-based) to every frame of "
            "INPUT (DICOM, folder of DICOMs or images, video, NRRD/NIfTI, .npy). Writes OUT_DIR/%05d.png "
            "(DAVIS palette) as frames finish and OUT_DIR/run.json at the very end; Ctrl-C/SIGTERM stops "
            "cleanly without run.json. --progress-json prints the JSON events of XRayVOSLib/events.py."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="the cine")
    parser.add_argument("--support", action="append", required=True, metavar="T:MASK",
                        help="frame index and label-map mask (PNG, NRRD, NPY); repeat for several frames")
    parser.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for %%05d.png masks and run.json")
    add_settings_options(parser)
    add_review_options(parser)
    parser.add_argument("--dicom-seg", metavar="OUT.dcm",
                        help="also write the result as a DICOM Segmentation of the (DICOM) input")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    parser.add_argument("--progress-json", action="store_true",
                        help="print progress as JSON lines on stdout (for scripts and the Slicer module)")
    parser.set_defaults(func=run)
