"""Write synthetic cines as a DAVIS-style dataset (what the training and evaluation code reads).

    root/JPEGImages/synth_0000/00000.png   grey 8-bit frames (PNG despite the DAVIS folder name)
    root/Annotations/synth_0000/00000.png  palette PNG label maps (palette index = object id)
    root/meta.json                         per video: seed, object names and kinds, spacing, frame time

Video i is generated from video_seed(seed, i) alone, so a dataset with more videos extends one with
fewer (same seed, frames, size and config) rather than reshuffling it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.io.masks import write_mask_sequence
from XRayVOSLib.synth.generate import SynthConfig
from XRayVOSLib.synth.select import generate_cine
from XRayVOSLib.synth.v2.generate import SynthV2Config

META_NAME = "meta.json"


def video_name(index: int) -> str:
    return f"synth_{index:04d}"


def video_seed(seed: int, index: int) -> int:
    """Independent, well-mixed seed of video `index` in a dataset built with `seed`."""
    return int(np.random.SeedSequence([int(seed) % (1 << 64), int(index)]).generate_state(1)[0])


def write_frames(out_dir: Path, frames: np.ndarray, start: int = 0) -> list[Path]:
    """Grey uint8 frames [T, H, W] as out_dir/%05d.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, frame in enumerate(frames):
        path = out_dir / f"{start + t:05d}.png"
        if not cv2.imwrite(str(path), frame):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def _clear_pngs(folder: Path) -> None:
    """Drop frames of an earlier, longer run of the same video so no stale frame is left behind."""
    if folder.is_dir():
        for p in folder.glob("*.png"):
            p.unlink()


def write_davis_dataset(root: str | Path, num_videos: int, num_frames: int, size: int, seed: int = 0,
                        config: SynthConfig | SynthV2Config | None = None, progress: bool = False) -> list[str]:
    """Generate `num_videos` cines and write them under `root`; returns the video names."""
    if int(num_videos) < 1:
        raise InputError(f"num_videos must be >= 1, got {num_videos}")
    cfg = config or SynthConfig()
    cfg.validate()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / META_NAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    videos = meta.get("videos", {}) if isinstance(meta.get("videos"), dict) else {}
    indices = range(int(num_videos))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth videos", unit="video")
    names = []
    for i in indices:
        name, vseed = video_name(i), video_seed(seed, i)
        cine = generate_cine(vseed, num_frames=num_frames, size=size, config=cfg)
        frames_dir, masks_dir = root / "JPEGImages" / name, root / "Annotations" / name
        _clear_pngs(frames_dir)
        _clear_pngs(masks_dir)
        write_frames(frames_dir, cine.frames)
        write_mask_sequence(masks_dir, cine.labels)
        videos[name] = {**cine.meta(), "index": i}
        names.append(name)
    generator = "XRayVOSLib.synth.v2" if isinstance(cfg, SynthV2Config) else "XRayVOSLib.synth"
    meta.update({"generator": generator, "seed": int(seed), "num_frames": int(num_frames),
                 "size": int(size), "config": asdict(cfg), "videos": dict(sorted(videos.items()))})
    tmp = meta_path.with_suffix(".json.tmp")  # atomic: a reader never sees half a meta.json
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return names
