"""Synthetic X-ray angiography cines with exact multi-object ground truth.

Two generators share this API: v1 (the default: 2D polylines, described below) and v2 (3D coronary anatomy
projected through a C-arm, with contrast dynamics and large cardiac motion: pass `config=SynthV2Config()`;
see XRayVOSLib/synth/v2/__init__.py and docs/synth_v2.md).

    cine = generate_cine(seed=3, num_frames=30, size=512)
    cine.frames  # [T, H, W] uint8, dark structures on a brighter background (MONOCHROME2)
    cine.labels  # [T, H, W] uint8, 0 = background, ids 1..N stable over the cine

Objects are polylines moved by cardiac/respiratory/table motion and rasterised each frame, so labels
are exact geometry. Where objects overlap the label is the one on top: guidewire > balloon, stent,
marker spheres > catheter, electrode catheter > vessel tree (same layer: higher id). Nothing is
labelled under the collimator shutters. Vessel opacity follows a contrast bolus but never drops
below `contrast_floor` of its peak, so a labelled vessel is always (faintly) darker than around it.
"""

from XRayVOSLib.synth.dataset import write_davis_dataset
from XRayVOSLib.synth.generate import ALL_KINDS, SynthConfig, SyntheticCine
from XRayVOSLib.synth.select import GENERATORS, config_for, generate_cine
from XRayVOSLib.synth.v2 import SynthV2Config, SyntheticCineV2

__all__ = ["ALL_KINDS", "GENERATORS", "SynthConfig", "SynthV2Config", "SyntheticCine", "SyntheticCineV2", "config_for",
           "generate_cine", "write_davis_dataset"]
