"""Where an object's missed pixels go: to the background, or to another object.

Propagates each cine of a DAVIS-layout set from its first frame and, for every object (optionally only
those of one synthetic kind, e.g. "guidewire"), counts its ground-truth pixels in the predicted frames
that came out as background and as some other object. A high "other object" share means the failure is
identity where objects overlap (a wire running inside a catheter), not a lost thin structure.

    python tools/confusion.py --data runs/heldout320 --kind guidewire
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from card import synthetic_kinds  # tools/card.py: the script's own folder is first on sys.path
from XRayVOSLib.evaluation.runner import read_frames
from XRayVOSLib.io import read_mask_folder


def missed_pixels(data: Path, propagator, kind: str | None = None) -> dict[str, float]:
    """{"pixels", "as_background", "as_other_object", "objects"} over non-support frames (fractions of pixels)."""
    kinds = synthetic_kinds(data) or {}
    if kind is not None and not kinds:
        raise ValueError(f"{data} has no meta.json with object kinds; --kind needs a synthetic set")
    total = as_background = as_other = objects = 0
    for video in sorted(p.name for p in (data / "Annotations").iterdir() if p.is_dir()):
        truth = read_mask_folder(data / "Annotations" / video)
        first = min(truth)
        ids = [int(i) for i in np.unique(truth[first]) if i > 0]
        if kind is not None:
            ids = [i for i in ids if kinds.get(video, {}).get(i) == kind]
        if not ids:
            continue
        predicted = propagator.propagate(read_frames(data / "JPEGImages" / video), {first: truth[first]})
        objects += len(ids)
        for t, labels in truth.items():
            if t == first:
                continue
            for object_id in ids:
                mine = labels == object_id
                total += int(mine.sum())
                as_background += int((mine & (predicted[t] == 0)).sum())
                as_other += int((mine & (predicted[t] != 0) & (predicted[t] != object_id)).sum())
    share = (lambda n: n / total) if total else (lambda n: float("nan"))
    return {"pixels": total, "as_background": share(as_background), "as_other_object": share(as_other),
            "objects": objects}


def main(argv: list[str] | None = None) -> int:
    from XRayVOSLib.inference.propagator import Propagator
    from XRayVOSLib.settings import RunSettings

    parser = argparse.ArgumentParser(description="where an object's missed pixels go (background or another object)")
    parser.add_argument("--data", type=Path, required=True, help="DAVIS-layout folder")
    parser.add_argument("--kind", default=None, help="only objects of this synthetic kind (meta.json)")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped one)")
    parser.add_argument("--matching", default="local", choices=("local", "global"))
    args = parser.parse_args(argv)
    prop = Propagator.load(args.model, RunSettings.from_model(args.model, device="cpu", method=args.matching))
    r = missed_pixels(args.data, prop, args.kind)
    print(f"{r['objects']} objects, {r['pixels']} ground-truth pixels in predicted frames: "
          f"{r['as_background']:.3f} predicted as background, {r['as_other_object']:.3f} as another object")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
