"""Make docs/images/slicer_result.png, the extension's screenshot for the Extensions Index.

What it shows is what it is: a synthetic cine (XRayVOSLib.synth), its ground truth painted as the support
on frame 0, propagated by the module's own logic (xrayvos_slicer on a slicer-core MRML scene, the real
background worker, the shipped model, method "local"), and drawn with XRayVOSLib.viz.contour_overlay:
solid outlines = the result, white dots = the ground truth. It is not a screenshot of Slicer.

    python Testing/slicer/make_result_picture.py [--out docs/images/slicer_result.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SEED, FRAMES, SIZE, SHOWN = 11, 24, 256, (0, 8, 16, 23)


def make(out: Path) -> dict:
    import cv2

    sys.path[:0] = [str(REPO / "XRayVOS"), str(Path(__file__).parent)]
    from conftest import make_mrml  # a scene wired like Slicer's (the Slicer tests' own fixture)

    from XRayVOSLib.metrics.aggregate import score_video, summarize
    from XRayVOSLib.settings import RunSettings
    from XRayVOSLib.synth import generate_cine
    from XRayVOSLib.viz import contour_overlay, frame_strip
    from xrayvos_slicer.logic import XRayVOSLogic

    cine = generate_cine(seed=SEED, num_frames=FRAMES, size=SIZE)
    with tempfile.TemporaryDirectory() as cache:
        mrml = make_mrml(Path(cache))
        logic = XRayVOSLogic(mrml.scene)
        browser = logic.add_cine(cine.frames, np.arange(FRAMES) * cine.frame_time, cine.spacing, "synthetic cine")
        support = logic.set_support(browser, 0, cine.labels[0], names=dict(cine.object_names))
        result = logic.propagate(browser, support, RunSettings.from_model(None, method="local", device="cpu"),
                                 timeout=900)
        labels, names = logic.label_arrays(browser, result)
        mrml.scene.Clear(True)
    scores = summarize(score_video("synthetic", labels, dict(enumerate(cine.labels)), support_frames=[0],
                                   spacing=cine.spacing))["dataset"]
    tiles = []
    for t in SHOWN:
        tile = contour_overlay(cine.frames[t], labels[t], cine.labels[t] if t else None, thickness=2)
        caption = "frame 0: support" if t == 0 else f"frame {t}"
        cv2.putText(tile, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    strip = frame_strip(tiles, columns=len(tiles), gap=4)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial.png")
    if not cv2.imwrite(str(partial), strip[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {partial}")
    partial.replace(out)
    return {"objects": names, "J&F": round(float(scores["J&F"]), 3), "frames": FRAMES, "size": SIZE}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "slicer_result.png")
    args = parser.parse_args()
    print(make(args.out), "->", args.out)
