"""`xrayvos demo`: the first thing to run. Makes a synthetic cine with ground truth and a preview.

run_demo() is the whole demo; propagate_and_score() is where propagating frame 0's ground truth
with the shipped model and scoring the result will plug in.
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
    """Hook: propagate frame 0's ground truth with the shipped model, write the masks and scores.

    Not built yet; returns no paths. It gets the SyntheticCine and the demo folder.
    """
    return {}


def _preview(cine, path: Path) -> Path:
    from XRayVOSLib.viz import frame_strip, overlay

    t_count = cine.frames.shape[0]
    picks = np.unique(np.linspace(0, t_count - 1, min(PREVIEW_FRAMES, t_count)).round().astype(int))
    tiles = []
    for t in picks:
        tile = overlay(cine.frames[t], cine.labels[t], alpha=0.5)
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
