"""One frame of a v2 scene: move the 3D tubes, project them, rasterise them with the v1 tube rasteriser
(exact labels from the same geometry as the pixels), add the chest, and image it through the detector."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from XRayVOSLib.synth.anatomy import LAYER, VESSEL, SceneObject
from XRayVOSLib.synth.render import Collimator, tube_attenuation
from XRayVOSLib.synth.v2.anatomy import CoronaryTree, Heart, Tube
from XRayVOSLib.synth.v2.geometry import CArm, Motion

SHUTTER = 3.0  # log units a collimator blade adds (lead: almost nothing gets through)


@dataclass
class Scene:
    size: int
    heart: Heart
    tree: CoronaryTree
    carm: CArm
    objects: list[Tube]  # labelled, id = index + 1
    extras: list[Tube]  # drawn, never labelled
    motion: Motion | None = None
    collimator: Collimator | None = None
    bolus: object = None  # imaging.Bolus
    chest: object = None  # imaging.Chest
    detector: object = None  # imaging.Detector
    label_opacity: float = 0.2
    _a_ref: list = field(default_factory=list)

    def tree_points(self) -> np.ndarray:
        return np.concatenate([b.points for b in self.tree.branches])

    def tree_length(self) -> float:
        return float(max(b.arc[-1] for b in self.tree.branches))


def _subset_starts(starts: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Polyline starts after dropping points: a kept point starts a line where its predecessor was dropped."""
    prev = np.concatenate([[False], keep[:-1]])
    return (starts | ~prev)[keep]


def _project(scene: Scene, tube: Tube, frame: int, opacity: np.ndarray | None) -> tuple[SceneObject | None, np.ndarray]:
    """The tube at `frame` as a 2D SceneObject in pixels (only its opacified points), and all its pixels."""
    mo = scene.motion
    uv, ppm = scene.carm.project(mo.move(tube.points, tube.cardiac, tube.breathing, frame), mo.table(frame))
    mu = tube.mu if opacity is None else tube.mu * opacity
    keep = np.ones(len(uv), bool) if opacity is None else opacity >= scene.label_opacity
    if keep.sum() < 2:
        return None, uv
    obj = SceneObject(tube.kind, tube.name, uv[keep], (tube.radius * ppm)[keep], (mu / ppm)[keep],
                      (tube.arc * ppm)[keep], _subset_starts(tube.starts, keep), tube.group[keep],
                      hollow=tube.hollow, mesh=tube.mesh)
    return obj, uv


def render_frame(scene: Scene, rng: np.random.Generator, frame: int):
    """(grey uint8 [H, W], labels uint8 [H, W], [(track pixels [N, 2], drawn [N]) per object], opacification,
    {name: track pixels [N, 2]} of the unlabelled structures)."""
    size = scene.size
    exposed = scene.collimator.exposed
    att = scene.chest.attenuation(frame) + SHUTTER * (1 - exposed)
    if not scene._a_ref:  # the detector's reference: the median exposed background of frame 0
        scene._a_ref.append(float(np.median(att[exposed >= 0.5])))
        scene.detector.a_ref = scene._a_ref[0]
    labels = np.zeros((size, size), np.uint8)
    fill = scene.bolus.injecting(frame)
    tracks: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(scene.objects)
    opacification = 0.0
    unlabelled: dict[str, np.ndarray] = {}
    order = sorted(range(len(scene.objects)), key=lambda i: LAYER[scene.objects[i].kind])
    for i, tube in [(i, scene.objects[i]) for i in order] + [(-1, e) for e in scene.extras]:
        opacity = scene.bolus.opacity(frame, tube.arc) if tube.contrast else None
        obj, uv = _project(scene, tube, frame, opacity)
        if i < 0:
            unlabelled[tube.name] = uv.astype(np.float32)
        else:
            drawn = np.ones(len(uv), bool) if opacity is None else opacity >= scene.label_opacity
            tracks[i] = (uv.astype(np.float32), drawn)
            if tube.kind == VESSEL and opacity is not None:
                inside = ((uv >= 0) & (uv < size)).all(1)
                opacification += float((opacity * inside).sum())
        if obj is None:
            continue
        hit = tube_attenuation(obj, obj.points, size, fill, None, frame)
        if hit is None:
            continue
        box, a, m = hit
        att[box] += a
        if i >= 0:
            labels[box][m] = i + 1  # sorted by layer: the top object is written last
    if not any(t.kind == VESSEL for t in scene.objects):
        opacification = fill
    grey = scene.detector.display(scene.detector.log_image(rng, att))
    labels *= (exposed >= 0.5).astype(np.uint8)  # nothing is visible (so nothing is labelled) under the shutters
    return grey, labels, tracks, opacification, unlabelled
