"""Run propagation methods on a DAVIS-layout data set and score them; score prediction folders against GT.

Data layout (DAVIS 2017): `ROOT/JPEGImages/<video>/00000.jpg|png ...` (frames, read as grey) and
`ROOT/Annotations/<video>/00000.png ...` (label maps, palette PNG; 255 = void). Frame files are named by
their 0-based index. Ground truth may annotate only some frames; only those are scored.

Support frames (given, so never scored):
- `first`: the first annotated frame of each video (frame 0 in DAVIS), the DAVIS semi-supervised protocol;
- `first+middle`: that frame and the annotated frame nearest T // 2 (ties -> the earlier);
- a JSON file `{"<video>": [t, ...]}` naming them per video (every video must be listed).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from XRayVOSLib import __version__
from XRayVOSLib.errors import InputError
from XRayVOSLib.metrics.aggregate import (
    VOID_LABEL,
    ObjectScores,
    jsonable,
    load_categories,
    per_frame,
    score_video,
    summarize,
)
from XRayVOSLib.metrics.distance import Spacing
from XRayVOSLib.outputs import OutputFolder, ResultKind, write_json_atomic, write_text_atomic
from XRayVOSLib.settings import RunSettings

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUPPORT_MODES = ("first", "first+middle")
LogFn = Callable[[str], None]


def list_videos(folder: str | Path) -> list[str]:
    """Sorted names of the sub-folders of `folder` (one per video)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    videos = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not videos:
        raise InputError(f"{folder}: has no video sub-folders")
    return videos


def read_frames(folder: str | Path) -> np.ndarray:
    """Frames [T, H, W] from a folder of images named 00000.*, 00001.*, ... (colour converted to grey).

    Read with PIL directly: a DAVIS frame folder is a plain image sequence, and 16-bit PNGs stay 16-bit.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: frame folder does not exist")
    files = {int(p.stem): p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.stem.isdigit()}
    if not files:
        raise InputError(f"{folder}: no frame images named by frame number (00000.png, ...)")
    gaps = sorted(set(range(max(files) + 1)) - set(files))
    if gaps:
        raise InputError(f"{folder}: frame number(s) {gaps[:20]} are missing; frames must be 0..T-1")
    images = []
    for t in range(len(files)):
        try:
            with Image.open(files[t]) as img:
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    images.append(np.asarray(img).astype(np.uint16))
                else:
                    images.append(np.asarray(img.convert("L")))
        except (OSError, SyntaxError) as exc:  # PIL: unreadable or truncated
            raise InputError(f"{files[t]}: not a readable frame image ({exc})") from None
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(f"{folder}: frames differ in size: {sorted(shapes)}")
    return np.stack(images)


def read_annotations(folder: str | Path) -> dict[int, np.ndarray]:
    """{frame: label map} of one video's annotation folder, through XRayVOSLib.io."""
    from XRayVOSLib.io import read_mask_folder

    masks = read_mask_folder(folder)
    if not masks:
        raise InputError(f"{folder}: no annotated frames")
    return {int(t): np.asarray(m) for t, m in masks.items()}


def load_support_frames(path: str | Path) -> dict[str, list[int]]:
    """Read `{"<video>": [t, ...]}`; InputError naming the file on a bad layout."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read supports JSON ({exc})") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, list) and v for v in raw.values()):
        raise InputError(f"{path}: expected {{video: [frame, ...]}} with at least one frame per video")
    try:
        return {str(k): sorted({int(t) for t in v}) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: frame numbers must be integers ({exc})") from exc


def choose_support_frames(
    video: str, annotated: Sequence[int], num_frames: int, supports: str | Mapping[str, list[int]]
) -> list[int]:
    """Support frames of one video for a mode ('first', 'first+middle') or a {video: [t, ...]} mapping."""
    annotated = sorted(annotated)
    if isinstance(supports, str):
        if supports not in SUPPORT_MODES:
            raise InputError(f"supports: {supports!r} is neither {' nor '.join(SUPPORT_MODES)} nor a JSON file")
        chosen = [annotated[0]]
        if supports == "first+middle":
            chosen.append(min(annotated, key=lambda t: (abs(t - num_frames // 2), t)))
        return sorted(set(chosen))
    if video not in supports:
        raise InputError(f"supports file lists no frames for video {video!r}")
    frames = list(supports[video])
    bad = [t for t in frames if not 0 <= t < num_frames]
    if bad:
        raise InputError(f"video {video}: support frame(s) {bad} outside 0..{num_frames - 1}")
    return frames


def dataset_spacing(data_root: str | Path) -> dict[str, tuple[float, float]]:
    """Per-video (row, column) mm/pixel from DATA/meta.json (as XRayVOSLib.synth writes it), if any."""
    path = Path(data_root) / "meta.json"
    try:
        videos = json.loads(path.read_text()).get("videos", {})
        return {str(v): (float(m["spacing"][0]), float(m["spacing"][1])) for v, m in videos.items() if m.get("spacing")}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}  # no meta.json, or not ours: HD95 in pixels only


def _resolve_supports(supports: str | Path | Mapping[str, list[int]]) -> str | Mapping[str, list[int]]:
    if isinstance(supports, Mapping):
        return supports
    if str(supports) in SUPPORT_MODES:
        return str(supports)
    return load_support_frames(supports)


# An earlier result of `evaluate --out`, which a new run into the same folder replaces (and nothing else).
EVALUATE_RESULT = ResultKind(
    "results.json", ("data_root", "methods", "videos", "settings"),
    (r"results\.csv", r"j_curve_.+\.png", r"worst_.+\.png", r"masks/[^/]+/[^/]+/\d{5,}\.png"),
)


def select_videos(names: list[str], videos: int | Sequence[str] | None, gt_root: Path) -> list[str]:
    """The videos to run: all, the first N (N >= 1), or those named."""
    if isinstance(videos, bool) or (isinstance(videos, int) and videos < 1):
        raise InputError(f"videos: {videos!r} is not a number of videos >= 1")
    if isinstance(videos, int):
        return names[:videos]
    if videos is None:
        return names
    unknown = sorted(set(videos) - set(names))
    if unknown:
        raise InputError(f"{gt_root}: no video(s) {', '.join(unknown)}")
    return [v for v in names if v in set(videos)]


def evaluate_methods(
    data_root: str | Path,
    methods: Sequence[str],
    supports: str | Path | Mapping[str, list[int]] = "first",
    out_dir: str | Path | None = None,
    *,
    videos: int | Sequence[str] | None = None,
    categories: str | Path | Mapping[str, Mapping[int, str]] | None = None,
    spacing: Spacing = None,
    save_masks: bool = False,
    plots: bool = True,
    log: LogFn | None = None,
    settings: RunSettings | None = None,
    model: str | Path | None = None,
) -> dict[str, Any]:
    """Run every method (through make_method) on every video with the same supports, score, and report.

    Returns the results dict that is also written to OUT/results.json. With out_dir: results.json,
    results.csv, j_curve_<video>.png, worst_<method>.png (when matplotlib is installed), and with
    save_masks the predictions as OUT/masks/<method>/<video>/%05d.png. out_dir is checked and locked before
    anything runs and replaced only when everything is written (XRayVOSLib.outputs.OutputFolder): it must
    be new, empty or an earlier evaluate result. Every method runs with `settings` (default:
    RunSettings.from_model(model)) but its own `method`. spacing (mm/pixel) adds HD95 in mm; without it, a
    DATA/meta.json with per-video spacing (synthetic data sets) is used when present.
    """
    data_root = Path(data_root)
    names = select_videos(list_videos(data_root / "Annotations"), videos, data_root / "Annotations")
    protect = [data_root] + [Path(x) for x in (supports, categories) if isinstance(x, (str, Path))]
    with contextlib.ExitStack() as stack:
        out = None if out_dir is None else stack.enter_context(OutputFolder(out_dir, EVALUATE_RESULT, "--out",
                                                                            protect))
        support_rule = _resolve_supports(supports)
        cats = load_categories(categories) if isinstance(categories, (str, Path)) else categories
        settings = settings or RunSettings.from_model(model)
        masks_dir = out.stage() / "masks" if out is not None and save_masks else None
        run = _run_methods(data_root, names, methods, support_rule, settings, model, masks_dir,
                           spacing, log or (lambda message: None))
        results: dict[str, Any] = {
            "data_root": str(data_root),
            "supports": str(supports) if isinstance(supports, (str, Path)) else "mapping",
            "support_frames": run.support_frames,
            "videos": names,
            "settings": settings.to_dict(),
            "model": None if model is None else str(model),
            "methods": {name: run.summary(name, cats) for name in methods},
            "xrayvos_version": __version__,
        }
        if out is not None:
            staging = out.stage()
            write_csv(staging / "results.csv", results)
            written = _write_plots(staging, results, run.worst, data_root, log or (lambda m: None)) if plots else []
            results["plots"] = [str(out.path / Path(p).name) for p in written]
            write_json_atomic(staging / "results.json", jsonable(results))
            out.commit()
    return results


@dataclass
class _MethodRuns:
    """What running every method on every video gathered, for the summary and the plots."""

    methods: Sequence[str]
    scores: dict[str, list[ObjectScores]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, int] = field(default_factory=dict)
    worst: dict[str, tuple[float, str, np.ndarray]] = field(default_factory=dict)  # method -> (J&F, video, pred)
    support_frames: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.methods:
            self.scores[name], self.seconds[name], self.predicted[name] = [], 0.0, 0

    def summary(self, name: str, cats: Any) -> dict[str, Any]:
        summary = summarize(self.scores[name], cats)
        summary["per_frame_J"] = per_frame(self.scores[name], "J")
        summary["seconds"] = self.seconds[name]
        summary["fps"] = self.predicted[name] / self.seconds[name] if self.seconds[name] > 0 else float("nan")
        summary["worst_video"] = self.worst[name][1] if name in self.worst else None
        return summary


def _run_methods(data_root: Path, names: list[str], methods: Sequence[str], support_rule: Any,
                 settings: RunSettings, model: str | Path | None, masks_dir: Path | None, spacing: Spacing,
                 log: LogFn) -> _MethodRuns:
    from XRayVOSLib.io import write_mask_sequence
    from XRayVOSLib.methods import make_method

    frames_root, gt_root = data_root / "JPEGImages", data_root / "Annotations"
    spacings = dataset_spacing(data_root) if spacing is None else {}
    runners = {name: make_method(settings.replace(method=name), model) for name in methods}
    run = _MethodRuns(methods)
    for video in names:
        frames = read_frames(frames_root / video)
        gt = read_annotations(gt_root / video)
        beyond = [t for t in gt if t >= len(frames)]
        if beyond:
            raise InputError(f"video {video}: annotation for frame(s) {beyond} but the video has {len(frames)} frames")
        chosen = choose_support_frames(video, list(gt), len(frames), support_rule)
        missing = [t for t in chosen if t not in gt]
        if missing:
            raise InputError(f"video {video}: support frame(s) {missing} have no annotation to start from")
        run.support_frames[video] = chosen
        given = {t: np.where(gt[t] == VOID_LABEL, 0, gt[t]) for t in chosen}  # ids > 255 rejected downstream
        for name, method in runners.items():
            start = time.perf_counter()
            pred = method.propagate(frames, given)
            run.seconds[name] += time.perf_counter() - start
            run.predicted[name] += len(frames)
            video_scores = score_video(video, pred, gt, chosen, spacing=spacings.get(video, spacing))
            run.scores[name].extend(video_scores)
            jf = float(np.nanmean([o.JF.mean() for o in video_scores if len(o.frames)] or [np.nan]))
            log(f"{name:>8s}  {video}: J&F {jf:.3f}")
            if name not in run.worst or (np.isfinite(jf) and not jf >= run.worst[name][0]):
                run.worst[name] = (jf, video, pred)
            if masks_dir is not None:
                write_mask_sequence(masks_dir / name / video, pred)
    return run


def _write_plots(
    out: Path, results: dict[str, Any], worst: dict[str, tuple[float, str, np.ndarray]], data_root: Path,
    log: LogFn,
) -> list[str]:
    from XRayVOSLib.evaluation import plots

    frames_root, gt_root = data_root / "JPEGImages", data_root / "Annotations"

    if not plots.available():
        log("plots skipped: matplotlib is not installed (pip install 'xrayvos[plots]')")
        return []
    written = []
    for video in results["videos"]:
        curves = {m: r["per_frame_J"].get(video, {}) for m, r in results["methods"].items()}
        path = out / f"j_curve_{video}.png"
        plots.plot_j_curves(curves, path, title=f"{video}: per-frame J", supports=results["support_frames"][video])
        written.append(str(path))
    for name, (jf, video, pred) in worst.items():
        per_frame_j = results["methods"][name]["per_frame_J"].get(video, {})
        path = out / f"worst_{name}.png"
        plots.plot_worst_strip(
            read_frames(frames_root / video), pred, read_annotations(gt_root / video), per_frame_j, path,
            title=f"{name}: worst video {video} (J&F {jf:.3f})",
        )
        written.append(str(path))
    return written


CSV_COLUMNS = ("method", "video", "object", "category", "frames", "J", "F", "J&F", "dice", "hd95", "hd95_inf_frames")


def write_csv(path: str | Path, results: dict[str, Any]) -> None:
    """One row per method x video x object; empty cells for undefined values (NaN)."""
    with_mm = any("hd95_mm" in o for r in results["methods"].values() for o in r["objects"])
    columns = CSV_COLUMNS + (("hd95_mm",) if with_mm else ())
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for name, summary in results["methods"].items():
        for row in summary["objects"]:
            values = jsonable({**row, "method": name})
            writer.writerow(["" if values.get(c) is None else values.get(c) for c in columns])
    write_text_atomic(path, text.getvalue(), durable=False)


def evaluate_folders(
    gt_root: str | Path,
    pred_root: str | Path,
    supports: str | Path | Mapping[str, list[int]] | None = None,
    categories: str | Path | Mapping[str, Mapping[int, str]] | None = None,
    spacing: Spacing = None,
) -> dict[str, Any]:
    """Score `pred_root/<video>/%05d.png` against `gt_root/<video>/%05d.png` (DAVIS Annotations layout).

    supports: frames to leave out per video, a {video: [t, ...]} mapping or JSON file; None = the first
    annotated frame of each video (the DAVIS convention). Every annotated GT frame, support frames
    included, needs a prediction (InputError naming video and frames). Returns summarize()'s dict plus
    "support_frames" and "per_frame_J".
    """
    from XRayVOSLib.io import read_mask_folder

    gt_root, pred_root = Path(gt_root), Path(pred_root)
    rule = "first" if supports is None else _resolve_supports(supports)
    cats = load_categories(categories) if isinstance(categories, (str, Path)) else categories
    objects: list[ObjectScores] = []
    support_frames: dict[str, list[int]] = {}
    for video in list_videos(gt_root):
        gt = read_annotations(gt_root / video)
        if not (pred_root / video).is_dir():
            raise InputError(f"video {video}: no prediction folder {pred_root / video}")
        pred = {int(t): np.asarray(m) for t, m in read_mask_folder(pred_root / video).items()}
        missing = [t for t in gt if t not in pred]  # support frames too: a prediction covers the whole cine
        if missing:
            raise InputError(
                f"video {video}: {pred_root / video} has no prediction for annotated frame(s) "
                f"{', '.join(map(str, missing[:20]))}{' ...' if len(missing) > 20 else ''}"
            )
        chosen = choose_support_frames(video, list(gt), max(list(gt) + list(pred)) + 1, rule)
        support_frames[video] = chosen
        objects.extend(score_video(video, pred, gt, chosen, spacing=spacing))
    summary = summarize(objects, cats)
    summary["support_frames"] = support_frames
    summary["per_frame_J"] = per_frame(objects, "J")
    return summary


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
