"""`xrayvos demo`: the first thing to run. Makes a synthetic cine with ground truth and a preview, then
propagates frame 0's ground truth with the shipped model and scores it (next to the optical-flow baseline).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from XRayVOSLib.errors import InputError

PREVIEW_FRAMES = 8
PREVIEW_TILE = 256  # preview tiles are at most this many pixels wide


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="generate a synthetic cine with ground truth and a preview image",
                              description="Generate a synthetic X-ray angiography cine, its ground truth and an "
                                          "overlay preview, and print where they are.")
    p.add_argument("--out", type=Path, default=Path("xrayvos_demo"), help="output folder (default ./xrayvos_demo)")
    p.add_argument("--frames", type=int, default=40, help="number of frames (default 40)")
    p.add_argument("--size", type=int, default=512, help="frame size in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run)


def propagate_and_score(cine, out_dir: Path) -> dict[str, Path]:
    """Propagate frame 0's ground truth with the shipped model (and the flow baseline), write the masks,
    an overlay preview and the scores. Says plainly when the weights are untrained."""
    import time

    from XRayVOSLib.inference.propagator import Propagator
    from XRayVOSLib.io.masks import write_mask_sequence
    from XRayVOSLib.metrics.aggregate import score_video, summarize
    from XRayVOSLib.methods import make_method
    from XRayVOSLib.settings import RunSettings

    gt = {t: cine.labels[t] for t in range(len(cine.labels))}
    supports = {0: cine.labels[0]}
    propagator = Propagator.load(None)
    if not propagator.trained:
        print("WARNING: no trained model was found; the propagation below uses UNTRAINED weights.")
    elif propagator.info.get("note"):
        print(f"NOTE on the model: {propagator.info['note']}")
    results: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    for name, method in (("local", propagator), ("flow", make_method(RunSettings(method="flow")))):
        start = time.perf_counter()
        labels = method.propagate(cine.frames, supports)
        seconds = time.perf_counter() - start
        summary = summarize(score_video("demo", labels, gt, support_frames=[0], spacing=cine.spacing))
        results[name] = {**summary["dataset"], "seconds": round(seconds, 2),
                         "fps": round((len(labels) - 1) / seconds, 2)}
        if name == "local":
            paths["prediction"] = out_dir / "prediction"
            write_mask_sequence(paths["prediction"], labels)
            paths["prediction_preview"] = _preview(cine, out_dir / "prediction_preview.png", labels)
    model = {"source": propagator.info.get("source"), "trained": propagator.trained, "device": str(propagator.device)}
    paths["scores"] = out_dir / "scores.json"
    paths["scores"].write_text(json.dumps({"model": model, "support_frames": [0], "methods": results}, indent=1,
                                          default=lambda v: None))
    for name, r in results.items():
        print(f"{name:>6}: J&F {r.get('J&F', float('nan')):.3f}  J {r.get('J', float('nan')):.3f}  "
              f"F {r.get('F', float('nan')):.3f}  {r['fps']:.1f} frames/s")
    return paths


def _preview(cine, path: Path, labels: np.ndarray | None = None) -> Path:
    """Overlay strip of a few frames: ground truth, or `labels` (a prediction) when given."""
    from XRayVOSLib.viz import frame_strip, overlay

    labels = cine.labels if labels is None else labels

    t_count = cine.frames.shape[0]
    picks = np.unique(np.linspace(0, t_count - 1, min(PREVIEW_FRAMES, t_count)).round().astype(int))
    tiles = []
    for t in picks:
        tile = overlay(cine.frames[t], labels[t], alpha=0.5)
        if tile.shape[1] > PREVIEW_TILE:
            tile = cv2.resize(tile, (PREVIEW_TILE, PREVIEW_TILE), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, f"t={t}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    strip = frame_strip(tiles, columns=4)
    if not cv2.imwrite(str(path), strip[:, :, ::-1]):
        raise OSError(f"could not write {path}")
    return path


def run_demo(out_dir: str | Path, frames: int = 40, size: int = 512, seed: int = 0) -> dict[str, Path]:
    """Write cine.npy, frames/, ground_truth/, meta.json and preview.png under out_dir; return the paths."""
    from XRayVOSLib.io.masks import write_mask_sequence
    from XRayVOSLib.synth import generate_cine
    from XRayVOSLib.synth.dataset import write_frames

    if frames < 2:
        raise InputError(f"--frames must be >= 2, got {frames}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cine = generate_cine(seed, num_frames=frames, size=size)
    paths = {"out_dir": out, "cine": out / "cine.npy", "frames": out / "frames",
             "ground_truth": out / "ground_truth", "meta": out / "meta.json", "preview": out / "preview.png"}
    np.save(paths["cine"], cine.frames)
    write_frames(paths["frames"], cine.frames)
    write_mask_sequence(paths["ground_truth"], cine.labels)
    paths["meta"].write_text(json.dumps(cine.meta(), indent=1))
    _preview(cine, paths["preview"])
    paths.update(propagate_and_score(cine, out))  # model propagation + scores plug in here
    return paths


def run(args: argparse.Namespace) -> int:
    paths = run_demo(args.out, frames=args.frames, size=args.size, seed=args.seed)
    meta = json.loads(paths["meta"].read_text())
    names = ", ".join(f"{k}={v}" for k, v in meta["object_names"].items())
    print(f"synthetic cine: {args.frames} frames, {args.size}x{args.size}, objects {names}")
    width = max(len(k) for k in paths)
    for key, path in paths.items():
        print(f"  {key.ljust(width)}  {path}")
    print("Open preview.png to see the ground truth over the frames.")
    return 0
