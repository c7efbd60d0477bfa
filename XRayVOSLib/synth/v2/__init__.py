"""Synthetic angiography v2: 3D coronary trees on a heart, projected through a C-arm.

    cine = generate_cine(seed=3, num_frames=30, size=512, config=SynthV2Config())  # XRayVOSLib.synth

Left (LM -> LAD with diagonals, LCx with marginals) or right (RCA, PDA, acute marginals) trees lie on an
ellipsoidal heart (anatomy.py), devices and distractors are 3D tubes (devices.py), the heart contracts and
twists while the thorax breathes and the table pans (geometry.py), a bolus fills the tree from the ostium
and washes out, and frames are formed in the log domain with Poisson noise, detector blur, 8-12 bit
digitisation and XA processing (imaging.py). Labels come from the same projected geometry as the pixels
(scene.py); a lumen point is labelled only once opacified, so a vessel object can grow after frame 0.
Where objects overlap the top layer wins, as in v1 (guidewire > balloon, stent > catheter > vessel tree).
"""

from XRayVOSLib.synth.v2.generate import SynthV2Config, SyntheticCineV2, generate_cine_v2

__all__ = ["SynthV2Config", "SyntheticCineV2", "generate_cine_v2"]
