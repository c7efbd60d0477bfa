"""One propagation run into one owned result folder: what `xrayvos propagate` and every run of `xrayvos batch`
do, so both write the same folder (OUT/%05d.png, OUT/run.json) the same way.

    record = run_to_folder(cine, ["0:m0.png"], out, settings, model, build=build_method)

Order (each step only after the one before succeeded): OUT claimed (checked and locked, outputs.OutputFolder),
the cine read and checked, every support read and checked, the run's fingerprint taken, the method built (the
model loaded; `build` lets the batch worker hand in the model it keeps), the frames written into the staging
folder, run.json written last, the DICOM SEG (if asked) written from the staging folder, OUT swapped in.

The fingerprint (run.json "fingerprint") is what a batch re-run compares to skip a run already complete:
the settings, the model file's sha256, the input's identity (resolved path, size, mtime; for a folder, those
of its entries) and each support's frame and sha256. Hashing the cine itself would cost as much as reading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from XRayVOSLib import __version__
from XRayVOSLib.errors import CancelledError, InputError
from XRayVOSLib.outputs import OutputFolder, ResultKind, check_file_target, write_json_atomic
from XRayVOSLib.propagation.result_files import RESULT_FILES, ResultFiles, resume_cache
from XRayVOSLib.propagation.validate import check_cine, check_supports
from XRayVOSLib.runtime import cancel_on_signals, peak_memory_mb
from XRayVOSLib.settings import RunSettings

# An earlier result of `propagate`, which a new run into the same folder replaces (and nothing else); the PNGs'
# pattern first (batch.runner counts frames with it), then confidence.csv and the pass cache (result_files.py).
PROPAGATE_RESULT = ResultKind("run.json", ("xrayvos_version", "frames", "supports", "settings"),
                              (r"\d{5,}\.png", *RESULT_FILES))

# read_cine's source kinds a DICOM SEG can reference (XRayVOSLib/seg/source.py)
DICOM_SOURCES = ("dicom-multiframe", "dicom-folder")

ProgressFn = Callable[[int, int], None]
BuildFn = Callable[[RunSettings], tuple[Any, dict]]


class RunCancelled(CancelledError):
    """The run stopped on a cancel (a signal or the caller's event); OUT is unchanged."""

    def __init__(self, signum: int | None, out: Path) -> None:
        super().__init__(f"cancelled; {out} is unchanged")
        self.signum, self.out = signum, out


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


def model_path(settings: RunSettings, model: str | Path | None) -> Path | None:
    """The checkpoint a run of `settings` reads: None for the baselines and for an untrained network."""
    if not settings.uses_network:
        return None
    if model is not None:
        return Path(model).expanduser()
    from XRayVOSLib.model_files import default_model_path

    return default_model_path()


def build_method(settings: RunSettings, model: str | Path | None, prog: str = "xrayvos propagate") -> tuple[Any, dict]:
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
        print(f"{prog}: warning: {what}: running with UNTRAINED weights, the masks will be meaningless",
              file=sys.stderr, flush=True)
    return method, {"device": str(method.device), "model": str(source), "model_trained": method.trained}


def _sha256(path: Path) -> str:
    # Not XRayVOSLib.model.digest: importing that package loads torch, which a flow run never needs.
    digest = hashlib.sha256()  # hashlib.file_digest is Python 3.11+; the package supports 3.10
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_digest(settings: RunSettings, model: str | Path | None) -> str | None:
    """sha256 of the checkpoint a run reads (None: a baseline or an untrained network); OSError if unreadable."""
    weights = model_path(settings, model)
    return None if weights is None else _sha256(weights)


def input_identity(path: Path) -> dict[str, Any]:
    """Resolved path, size and mtime of a cine file; for a folder (DICOM instances, images) those of its files."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        st = path.stat()
        return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path) if e.is_file())
    listing = hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()
    return {"path": str(path), "files": len(entries), "size": sum(e[1] for e in entries), "listing_sha256": listing}


def fingerprint(cine: str | Path, specs: list[str], settings: RunSettings, model: str | Path | None,
                model_sha256: str | None = None) -> dict[str, Any]:
    """run.json's "fingerprint": its parts and their digest. OSError when a file is missing or unreadable.
    `model_sha256`: the checkpoint's digest where the caller has it already (a batch hashes the model once)."""
    weights = model_path(settings, model)
    if weights is not None and model_sha256 is None:
        model_sha256 = model_digest(settings, model)
    supports = sorted((t, _sha256(mask)) for t, mask in map(parse_support, specs))
    parts = {
        "model_sha256": model_sha256 if weights is not None else None,
        "input": input_identity(Path(cine)),
        "supports": [{"frame": t, "sha256": sha} for t, sha in supports],
    }
    canonical = json.dumps({"settings": settings.to_dict(), **parts}, sort_keys=True)
    return {"digest": hashlib.sha256(canonical.encode("utf-8")).hexdigest(), **parts}


def run_to_folder(cine_path: str | Path, specs: list[str], out: str | Path, settings: RunSettings,
                  model: str | Path | None, *, build: BuildFn, progress: ProgressFn | None = None,
                  cancel: threading.Event | None = None, on_started: Callable[..., None] | None = None,
                  dicom_seg: str | Path | None = None, model_sha256: str | None = None,
                  resume_from: str | Path | None = None) -> tuple[Path, dict]:
    """Propagate `specs` (T:MASK) through the cine into the result folder `out`; returns the folder's absolute
    path and run.json's record.

    Raises InputError / OutputError (one line) on bad input, RunCancelled on a cancel (SIGINT, SIGTERM in the
    main thread, or `cancel` set); in every such case `out` is as it was. on_started(method=, frames=,
    supports=, device=) is called once the method is built. resume_from: an earlier result whose pass cache
    the run reads back (default: `out`'s own, when it is an earlier result with one; result_files.py)."""
    from XRayVOSLib.io import read_cine

    started = time.perf_counter()
    cine_path = Path(cine_path).expanduser()
    masks = [parse_support(spec)[1] for spec in specs]
    if dicom_seg:
        check_file_target(dicom_seg, "--dicom-seg")
    # Claimed (checked and locked) before any input is read, so a second run into OUT is refused at once.
    with OutputFolder(out, PROPAGATE_RESULT, "--out", protect=[cine_path, *masks]) as folder:
        resume = resume_cache(folder.path, resume_from)
        cine = read_cine(cine_path)
        check_cine(cine.frames, name=str(cine.path))
        if dicom_seg and cine.source_kind not in DICOM_SOURCES:
            raise InputError(f"--dicom-seg needs a DICOM input (a multi-frame file or a folder of instances); "
                             f"{cine_path} is {cine.source_kind}")
        num_frames, height, width = (int(s) for s in cine.frames.shape)
        supports, support_records = load_supports(specs, num_frames, (height, width))
        prints = fingerprint(cine_path, specs, settings, model, model_sha256)
        cancel = cancel or threading.Event()
        with cancel_on_signals(cancel) as caught:
            method, fields = build(settings)
            if on_started is not None:
                on_started(method=settings.method, frames=num_frames, supports=sorted(supports),
                           device=fields["device"])
            try:
                seconds, review = _propagate(method, cine.frames, supports, folder.stage(), progress, cancel, fields,
                                             resume)
            except (CancelledError, KeyboardInterrupt):
                raise RunCancelled(caught[0] if caught else None, folder.path) from None
        record = {
            "input": str(cine_path.resolve()),
            "frames": num_frames, "height": height, "width": width,
            "objects": sorted({i for r in support_records for i in r["objects"]}),
            "supports": support_records,
            **fields,
            "settings": {**settings.to_dict(), "device": fields["device"]},
            "seconds": round(seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),  # + reading the cine, loading the model
            "fps": round((num_frames - len(supports)) / seconds, 3) if seconds > 0 else None,
            "peak_memory_mb": _round(peak_memory_mb(fields["device"])),
            "fingerprint": prints,
            **review,  # "confidence" and "incremental" (result_files.ResultFiles.finish)
            "xrayvos_version": __version__,
        }
        write_json_atomic(folder.stage() / "run.json", record)  # last: a result folder always has a complete one
        if dicom_seg:  # before the commit: a run whose SEG failed leaves OUT as it was
            from XRayVOSLib.cli.export_seg_cmd import export_run

            export_run(folder.stage(), dicom_seg, source=cine_path)
        folder.commit()
    return folder.path, record


def propagate_to_folder(method: Any, frames: Any, supports: dict, out_dir: Path, progress: ProgressFn | None,
                        cancel: threading.Event, resume: Path | None = None) -> tuple[int, dict]:
    """Run the method, writing OUT_DIR/%05d.png as frames finish, then confidence.csv and the pass cache
    (passes read back from the cache folder `resume`); returns (PNGs written, run.json's review fields)."""
    from XRayVOSLib.io import write_mask_sequence

    files = ResultFiles(out_dir, resume)
    for r in method.iter_frames(frames, supports, progress=progress, cancel=cancel, store=files.store):
        write_mask_sequence(out_dir, np.asarray(r.labels)[None], start=r.t)
        files.add(r)
    return len(files.results), files.finish(method, supports)


def _propagate(method: Any, frames: Any, supports: dict, staging: Path, progress: ProgressFn | None,
               cancel: threading.Event, fields: dict, resume: Path | None) -> tuple[float, dict]:
    """Seconds spent propagating into the staging folder, and run.json's review fields."""
    if fields["device"].startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if cancel.is_set():
        raise CancelledError("cancelled before propagation started")
    written, review = propagate_to_folder(method, frames, supports, staging, progress, cancel, resume)
    if written != len(frames):
        raise RuntimeError(f"wrote {written} of {len(frames)} frames")
    return time.perf_counter() - t0, review


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum if signum is not None else signal.SIGINT).name


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


__all__ = ["DICOM_SOURCES", "PROPAGATE_RESULT", "RunCancelled", "build_method", "fingerprint", "input_identity",
           "load_supports", "model_digest", "model_path", "parse_support", "propagate_to_folder", "run_to_folder"]
