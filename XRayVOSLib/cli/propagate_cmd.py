"""`xrayvos propagate INPUT --support T:MASK ... --out OUT_DIR`: segment every frame of one cine.

Output
    OUT_DIR/%05d.png   one DAVIS palette label map per input frame (object ids as in the support masks, 1..255;
                       a larger id is refused before anything runs), written as frames finish (network
                       methods), so memory stays bounded on long cines.
    OUT_DIR/run.json   input, frames, height, width, objects, supports, settings (RunSettings.to_dict, device
                       resolved), model ("untrained", a path, or null for the baselines), model_trained,
                       seconds, fps (non-support frames / seconds), peak_memory_mb, xrayvos_version.

OUT_DIR is owned by the run (XRayVOSLib.outputs.OutputFolder): it must be new, empty, or an earlier result
of `propagate` (run.json and %05d.png only), which is replaced completely; anything else is refused, as is
an OUT_DIR holding the input or a support mask. A second run into OUT_DIR while one writes is refused (a
lock). Every output location is checked before the cine is read; the frames are written into a staging
folder beside OUT_DIR that takes its place only when the run has finished, so a failed or cancelled run
(full disk, Ctrl-C) leaves OUT_DIR exactly as it was and never a mix of two runs.

Cancelling: Ctrl-C (SIGINT) or SIGTERM stops within one frame and exits 130; nothing of the run is kept.

--progress-json (for scripts and the Slicer module): stdout carries only the JSON event lines of
XRayVOSLib/events.py ("started" with method, frames, supports, device; "progress"; then "done" with out,
run_json, frames, seconds, fps, or "cancelled", or "error"); no tqdm bar is drawn; warnings (e.g. an
untrained model) go to stderr. Exit codes: events.EXIT_CODES.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from XRayVOSLib import __version__
from XRayVOSLib.cli.settings_options import add_settings_options, settings_from_args
from XRayVOSLib.errors import CancelledError, InputError, XRayVOSError
from XRayVOSLib.events import EXIT_CANCELLED, emit
from XRayVOSLib.outputs import OutputFolder, ResultKind, check_file_target, describe_os_error, write_json_atomic
from XRayVOSLib.propagation.validate import check_cine, check_supports
from XRayVOSLib.runtime import cancel_on_signals, peak_memory_mb
from XRayVOSLib.settings import RunSettings

# An earlier result of `propagate`, which a new run into the same folder replaces (and nothing else).
PROPAGATE_RESULT = ResultKind("run.json", ("xrayvos_version", "frames", "supports", "settings"), (r"\d{5,}\.png",))


# read_cine's source kinds a DICOM SEG can reference (XRayVOSLib/seg/source.py)
DICOM_SOURCES = ("dicom-multiframe", "dicom-folder")


def parse_support(text: str) -> tuple[int, Path]:
    """'T:MASK' -> (T, Path). Split at the first colon only, so 'C:\\x.png'-style paths survive."""
    index, sep, mask = text.partition(":")
    if not sep or not mask:
        raise InputError(f"--support {text!r}: expected T:MASK, e.g. 0:frame0.png (T is the 0-based frame index)")
    try:
        t = int(index)
    except ValueError:
        raise InputError(f"--support {text!r}: frame index {index!r} is not an integer") from None
    return t, Path(mask).expanduser()


def load_supports(specs: list[str], num_frames: int, frame_shape: tuple[int, int]) -> tuple[dict, list[dict]]:
    """Read and check every --support (as every method will: propagation.validate); returns ({t: labels},
    run.json records)."""
    from XRayVOSLib.io import check_mask, read_mask

    supports: dict[int, np.ndarray] = {}
    records: list[dict] = []
    for spec in specs:
        t, path = parse_support(spec)
        if not 0 <= t < num_frames:
            raise InputError(f"--support {spec!r}: frame {t} is out of range; the cine has {num_frames} frames "
                             f"(0..{num_frames - 1})")
        if t in supports:
            raise InputError(f"--support {spec!r}: frame {t} is given twice")
        labels = check_mask(read_mask(path), frame_shape, path)
        try:
            check_supports({t: labels}, num_frames, frame_shape)
        except InputError as exc:
            raise InputError(f"--support {spec!r}: {exc}") from None
        supports[t] = labels
        ids = sorted(int(v) for v in np.unique(labels) if v != 0)
        records.append({"frame": t, "mask": str(path.resolve()), "objects": ids})
    return supports, sorted(records, key=lambda r: r["frame"])


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


def build_method(settings: RunSettings, model: str | None) -> tuple[Any, dict]:
    """The propagation method and its run.json fields (device, model, model_trained)."""
    from XRayVOSLib.methods import make_method

    if not settings.uses_network:
        return make_method(settings), {"device": "cpu", "model": None, "model_trained": False}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no trained XRayVOS model")  # we print our own line
        method = make_method(settings, model)
    source = method.info.get("source", "untrained")
    if not method.trained:
        what = "no trained model found (models/ is empty, no --model)" if source == "untrained" else f"model {source}"
        print(f"xrayvos propagate: warning: {what}: running with UNTRAINED weights, the masks will be meaningless",
              file=sys.stderr, flush=True)
    return method, {"device": str(method.device), "model": str(source), "model_trained": method.trained}


def propagate_to_folder(method: Any, frames: Any, supports: dict, out_dir: Path,
                        progress: Callable[[int, int], None], cancel: threading.Event) -> int:
    """Run the method, writing OUT_DIR/%05d.png as frames finish; returns the number of PNGs written."""
    from XRayVOSLib.io import write_mask_sequence

    written = 0
    for t, labels in method.iter_propagate(frames, supports, progress=progress, cancel=cancel):
        write_mask_sequence(out_dir, np.asarray(labels)[None], start=t)
        written += 1
    return written


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
    from XRayVOSLib.io import read_cine

    started = time.perf_counter()
    settings = settings_from_args(args)  # bad settings fail before the cine is read
    masks = [parse_support(spec)[1] for spec in args.support]
    if args.dicom_seg:
        check_file_target(args.dicom_seg, "--dicom-seg")
    # Claimed (checked and locked) before any input is read, so a second run into OUT is refused at once.
    with OutputFolder(args.out, PROPAGATE_RESULT, "--out", protect=[Path(args.input).expanduser(), *masks]) as out:
        cine = read_cine(args.input)
        check_cine(cine.frames, name=str(cine.path))
        if args.dicom_seg and cine.source_kind not in DICOM_SOURCES:
            raise InputError(f"--dicom-seg needs a DICOM input (a multi-frame file or a folder of instances); "
                             f"{args.input} is {cine.source_kind}")
        num_frames, height, width = (int(s) for s in cine.frames.shape)
        supports, support_records = load_supports(args.support, num_frames, (height, width))
        cancel = threading.Event()
        with cancel_on_signals(cancel) as caught:
            method, fields = build_method(settings, args.model)
            progress = _Progress(bar=not args.quiet and not args.progress_json, json_lines=args.progress_json)
            if args.progress_json:
                emit("started", method=settings.method, frames=num_frames, supports=sorted(supports),
                     device=fields["device"])
            try:
                seconds = _propagate(method, cine.frames, supports, out.stage(), progress, cancel, fields)
            except (CancelledError, KeyboardInterrupt):
                _report_cancel(args, progress, caught, out.path)
                return EXIT_CANCELLED
        record = {
            "input": str(Path(args.input).expanduser().resolve()),
            "frames": num_frames, "height": height, "width": width,
            "objects": sorted({i for r in support_records for i in r["objects"]}),
            "supports": support_records,
            **fields,
            "settings": {**settings.to_dict(), "device": fields["device"]},
            "seconds": round(seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),  # + reading the cine, loading the model
            "fps": round((num_frames - len(supports)) / seconds, 3) if seconds > 0 else None,
            "peak_memory_mb": _round(peak_memory_mb(fields["device"])),
            "xrayvos_version": __version__,
        }
        write_json_atomic(out.stage() / "run.json", record)  # last: a result folder always has a complete one
        if args.dicom_seg:  # before the commit: a run whose SEG failed leaves OUT as it was
            from XRayVOSLib.cli.export_seg_cmd import export_run

            export_run(out.stage(), args.dicom_seg, source=args.input)
        out.commit()
    if args.progress_json:
        emit("done", out=str(out.path), run_json=str(out.path / "run.json"), frames=num_frames,
             seconds=record["seconds"], fps=record["fps"])
    elif not args.quiet:
        print(f"wrote {num_frames} masks and run.json to {out.path} ({record['fps']} frames/s, {settings.method})")
    return 0


def _propagate(method: Any, frames: Any, supports: dict, staging: Path, progress: _Progress,
               cancel: threading.Event, fields: dict) -> float:
    """Seconds spent propagating into the staging folder. The bar is closed however this ends, so an error
    message never lands on it."""
    if fields["device"].startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        if cancel.is_set():
            raise CancelledError("cancelled before propagation started")
        written = propagate_to_folder(method, frames, supports, staging, progress, cancel)
    finally:
        progress.close()
    if written != len(frames):
        raise RuntimeError(f"wrote {written} of {len(frames)} frames")
    return time.perf_counter() - t0


def _report_cancel(args: argparse.Namespace, progress: _Progress, caught: list[int], out: Path) -> None:
    signum = caught[0] if caught else signal.SIGINT
    if args.progress_json:
        emit("cancelled", done=progress.done, total=progress.total)
    print(f"xrayvos propagate: cancelled ({signal.Signals(signum).name}) after {progress.done}/{progress.total} "
          f"frames; {out} is unchanged (nothing of this run was kept)", file=sys.stderr)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


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
    parser.add_argument("--dicom-seg", metavar="OUT.dcm",
                        help="also write the result as a DICOM Segmentation of the (DICOM) input")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    parser.add_argument("--progress-json", action="store_true",
                        help="print progress as JSON lines on stdout (for scripts and the Slicer module)")
    parser.set_defaults(func=run)
