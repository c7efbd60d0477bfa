"""`xrayvos propagate INPUT --support T:MASK ... --out OUT_DIR`: segment every frame of one cine.

Output
    OUT_DIR/%05d.png   one DAVIS palette label map per input frame (object ids as in the support masks),
                       written as frames finish (network methods), so memory stays bounded on long cines.
    OUT_DIR/run.json   written last, atomically: input, frames, height, width, objects, supports, settings
                       (RunSettings.to_dict, device resolved), model ("untrained", a path, or null for the
                       baselines), model_trained, seconds, fps (non-support frames / seconds), peak_memory_mb,
                       xrayvos_version.
A stale OUT_DIR/run.json is deleted at the start, so run.json exists only after a complete run.

Cancelling: Ctrl-C (SIGINT) or SIGTERM stops within one frame and exits 130. PNGs finished so far
stay in OUT_DIR; run.json is not written, which is how a caller tells a partial run from a complete one.

--progress-json (for scripts and the Slicer module): stdout carries only the JSON event lines of
XRayVOSLib/events.py ("started" with method, frames, supports, device; "progress"; then "done" with out,
run_json, frames, seconds, fps, or "cancelled", or "error"); no tqdm bar is drawn; warnings (e.g. an
untrained model) go to stderr. Exit codes: events.EXIT_CODES.
"""

from __future__ import annotations

import argparse
import json
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
from XRayVOSLib.runtime import cancel_on_signals, peak_memory_mb
from XRayVOSLib.settings import RunSettings


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
    """Read and check every --support; returns ({t: labels}, run.json records)."""
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
    except XRayVOSError as exc:
        if args.progress_json and not isinstance(exc, CancelledError):
            emit("error", message=str(exc))
        raise


def _run(args: argparse.Namespace) -> int:
    from XRayVOSLib.io import read_cine

    started = time.perf_counter()
    out_dir = Path(args.out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder")
    settings = settings_from_args(args)  # bad settings fail before the cine is read
    cine = read_cine(args.input)
    num_frames, height, width = (int(s) for s in cine.frames.shape)
    supports, support_records = load_supports(args.support, num_frames, (height, width))
    cancel = threading.Event()
    with cancel_on_signals(cancel) as caught:
        method, fields = build_method(settings, args.model)
        if fields["device"].startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        out_dir.mkdir(parents=True, exist_ok=True)
        run_json = out_dir / "run.json"
        run_json.unlink(missing_ok=True)  # a stale run.json would make a partial run look complete
        progress = _Progress(bar=not args.quiet and not args.progress_json, json_lines=args.progress_json)
        if args.progress_json:
            emit("started", method=settings.method, frames=num_frames, supports=sorted(supports),
                 device=fields["device"])
        t0 = time.perf_counter()
        try:
            if cancel.is_set():
                raise CancelledError("cancelled before propagation started")
            written = propagate_to_folder(method, cine.frames, supports, out_dir, progress, cancel)
        except (CancelledError, KeyboardInterrupt):
            progress.close()
            signum = caught[0] if caught else signal.SIGINT
            if args.progress_json:
                emit("cancelled", done=progress.done, total=progress.total)
            print(f"xrayvos propagate: cancelled ({signal.Signals(signum).name}) after {progress.done}/"
                  f"{progress.total} frames; {out_dir} holds partial PNGs and no run.json", file=sys.stderr)
            return EXIT_CANCELLED
        seconds = time.perf_counter() - t0
        progress.close()
    predicted = num_frames - len(supports)
    record = {
        "input": str(Path(args.input).expanduser().resolve()),
        "frames": num_frames,
        "height": height,
        "width": width,
        "objects": sorted({i for r in support_records for i in r["objects"]}),
        "supports": support_records,
        **fields,
        "settings": {**settings.to_dict(), "device": fields["device"]},
        "seconds": round(seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),  # + reading the cine, loading the model
        "fps": round(predicted / seconds, 3) if seconds > 0 else None,
        "peak_memory_mb": _round(peak_memory_mb(fields["device"])),
        "xrayvos_version": __version__,
    }
    assert written == num_frames, f"wrote {written} of {num_frames} frames"
    tmp = run_json.with_name("run.json.partial")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(run_json)  # atomic: run.json is either absent or complete
    if args.progress_json:
        emit("done", out=str(out_dir), run_json=str(run_json), frames=num_frames, seconds=record["seconds"],
             fps=record["fps"])
    elif not args.quiet:
        print(f"wrote {num_frames} masks and run.json to {out_dir} ({record['fps']} frames/s, {settings.method})")
    return 0


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
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    parser.add_argument("--progress-json", action="store_true",
                        help="print progress as JSON lines on stdout (for scripts and the Slicer module)")
    parser.set_defaults(func=run)
