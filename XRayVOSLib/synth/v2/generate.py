"""The v2 cine generator: a 3D coronary scene, moved, projected by a C-arm and imaged frame by frame.

`generate_cine(seed, frames, size, config=SynthV2Config())` in `XRayVOSLib.synth` dispatches here, so every
caller of the v1 API (the DAVIS writer, the training loader) draws v2 cines by passing the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.synth import anatomy as A
from XRayVOSLib.synth.generate import SyntheticCine
from XRayVOSLib.synth.render import random_collimator
from XRayVOSLib.synth.v2 import devices as D
from XRayVOSLib.synth.v2.anatomy import MU_CONTRAST, left_tree, random_heart, right_tree, tree_tube, wire_route
from XRayVOSLib.synth.v2.geometry import calibrate, random_carm, random_motion
from XRayVOSLib.synth.v2.imaging import Chest, random_bolus, random_detector
from XRayVOSLib.synth.v2.scene import Scene, render_frame

KINDS: tuple[str, ...] = (A.VESSEL, A.CATHETER, A.GUIDEWIRE, A.BALLOON, A.STENT)
Range = tuple[float, float]


@dataclass
class SynthV2Config:
    """Knobs of the v2 generator; ranges are (low, high), drawn uniformly per cine. Pixel figures are at 512."""

    generator: str = "v2"
    min_objects: int = 1
    max_objects: int = 5
    kinds: tuple[str, ...] = KINDS
    probability: dict[str, float] = field(default_factory=lambda: {
        A.VESSEL: 0.9, A.CATHETER: 0.6, A.GUIDEWIRE: 0.5, A.BALLOON: 0.2, A.STENT: 0.2})
    right_probability: float = 0.3  # the injected tree is the RCA
    spacing_mm: Range = (0.2, 0.4)  # pixel spacing at the isocentre, at 512 pixels (the C-arm's zoom)
    # Motion
    heart_rate_bpm: Range = (50.0, 120.0)
    frame_rates: tuple[float, ...] = (7.5, 15.0, 15.0, 30.0)
    peak_px: Range = (30.0, 60.0)  # displacement from frame 0's pose, most-moving labelled point
    max_step_px: float = 20.0  # inter-frame step cap (systole)
    respiratory_probability: float = 0.35  # else breath-hold
    respiratory_mm: Range = (3.0, 10.0)
    pan_probability: float = 0.3
    pan_mm: Range = (5.0, 25.0)  # over the cine
    # Contrast
    washin_probability: float = 0.6  # the cine starts while the tree fills
    washin_front: Range = (0.08, 0.5)  # share of the tree filled at frame 0
    fill_seconds: Range = (0.3, 0.9)  # ostium to the most distal branch
    washout_at: Range = (0.7, 1.6)  # cine lengths
    contrast_floor: Range = (0.3, 0.5)  # residual opacity after wash-out
    label_opacity: float = 0.2  # a lumen point is labelled (and drawn) from this relative opacity on
    # Distractors (never labelled)
    wire_probability: float = 0.3  # an unlabelled wire when no wire device is an object
    other_tree_probability: float = 0.3
    pacing_probability: float = 0.15
    sternal_probability: float = 0.15
    ecg_probability: float = 0.5
    diaphragm_probability: float = 0.6
    # Detector and display
    quanta: Range = (40.0, 900.0)  # per 512-pixel at the reference attenuation (log-uniform)
    blur: Range = (0.4, 0.8)
    bits: tuple[int, ...] = (8, 10, 12)
    sharpen: Range = (0.2, 1.2)
    gamma: Range = (0.75, 1.3)
    level: Range = (95.0, 150.0)
    contrast: Range = (60.0, 110.0)
    collimator_probability: float = 0.6

    @classmethod
    def preset(cls, name: str) -> SynthV2Config:
        """'easy' (slow, filled, clean), 'default', 'hard' (more devices, wash-in, clutter, low dose)."""
        if name == "default":
            return cls()
        if name == "easy":
            return cls(peak_px=(8.0, 15.0), frame_rates=(15.0, 30.0), washin_probability=0.0, quanta=(300.0, 1000.0),
                       other_tree_probability=0.0, pacing_probability=0.0, sternal_probability=0.0)
        if name == "hard":
            return cls(min_objects=2, washin_probability=0.8, quanta=(15.0, 250.0), other_tree_probability=0.5,
                       pacing_probability=0.3, sternal_probability=0.3, ecg_probability=0.8,
                       probability={A.VESSEL: 0.95, A.CATHETER: 0.7, A.GUIDEWIRE: 0.7, A.BALLOON: 0.3, A.STENT: 0.3})
        raise InputError(f"unknown synth preset {name!r}; use 'easy', 'default' or 'hard'")

    def validate(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= len(KINDS):
            raise InputError(f"v2 needs 1 <= min_objects <= max_objects <= {len(KINDS)}, "
                             f"got {self.min_objects}..{self.max_objects}")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or len(set(self.kinds)) < self.min_objects:
            raise InputError(f"v2 object kinds {list(self.kinds)}: need {self.min_objects}+ of {list(KINDS)}")
        if not self.frame_rates or min(self.frame_rates) <= 0:
            raise InputError(f"frame_rates must be positive, got {self.frame_rates}")
        if not set(self.bits) <= {8, 9, 10, 11, 12}:
            raise InputError(f"bits must be 8 to 12, got {self.bits}")
        for name, value in asdict(self).items():
            if isinstance(value, tuple) and len(value) == 2 and name not in ("kinds", "frame_rates", "bits"):
                if value[0] > value[1]:
                    raise InputError(f"SynthV2Config.{name} must be (low, high), got {value}")


@dataclass
class SyntheticCineV2(SyntheticCine):
    tracks: dict[int, np.ndarray] = field(default_factory=dict)  # id -> [T, N, 2] projected centreline pixels
    drawn: dict[int, np.ndarray] = field(default_factory=dict)  # id -> [T, N] point opacified (drawn, labelled)
    unlabelled: dict[str, np.ndarray] = field(default_factory=dict)  # distractor name -> [T, N, 2] pixels
    max_opacification_frame: int = 0
    motion: dict = field(default_factory=dict)  # peak/step pixels, heart rate, fps, view

    def meta(self) -> dict:
        return {**super().meta(), "generator": "v2", "max_opacification_frame": int(self.max_opacification_frame),
                "motion": self.motion}


def _choose_kinds(rng, cfg: SynthV2Config) -> list[str]:
    chosen = [k for k in KINDS if k in cfg.kinds and rng.random() < cfg.probability.get(k, 0.0)]
    rest = [k for k in KINDS if k in cfg.kinds and k not in chosen]
    rng.shuffle(rest)
    chosen += rest[:max(0, cfg.min_objects - len(chosen))]
    if len(chosen) > cfg.max_objects:
        keep = set(rng.choice(chosen, cfg.max_objects, replace=False).tolist())
        chosen = [k for k in chosen if k in keep]
    return [k for k in KINDS if k in chosen]  # vessel first, devices after (object ids in a stable order)


def _build_scene(rng, cfg: SynthV2Config, size: int, num_frames: int) -> Scene:
    heart = random_heart(rng)
    right = rng.random() < cfg.right_probability
    tree = (right_tree if right else left_tree)(rng, heart)
    mu = rng.uniform(*MU_CONTRAST)
    carm = random_carm(rng, size, heart.center, cfg.spacing_mm)
    kinds = _choose_kinds(rng, cfg)
    cath = D.catheter(rng, heart, tree)
    route, route_r = wire_route(rng, tree)
    wire = D.guidewire(rng, cath, route, route_r)
    objects, extras, taken = [], [cath, wire], []
    for kind in kinds:
        obj = {A.VESSEL: lambda: tree_tube(tree, mu, A.VESSEL), A.CATHETER: lambda: cath, A.GUIDEWIRE: lambda: wire,
               A.BALLOON: lambda: D.balloon(rng, route, route_r, taken),
               A.STENT: lambda: D.stent(rng, route, route_r, taken)}[kind]()
        if obj is not None:
            objects.append(obj)
    extras = [e for e in extras if all(e is not o for o in objects)]
    needs_wire = any(o.kind in (A.BALLOON, A.STENT) for o in objects)
    if wire in extras and not needs_wire and rng.random() >= cfg.wire_probability:
        extras.remove(wire)
    if rng.random() < cfg.other_tree_probability:
        other = tree_tube((left_tree if right else right_tree)(rng, heart), mu * rng.uniform(0.15, 0.4), "other tree")
        other.contrast = False  # residual opacity only: this tree was not injected
        extras.append(other)
    if rng.random() < cfg.pacing_probability:
        extras.append(D.pacing_lead(rng, heart))
    if rng.random() < cfg.sternal_probability:
        extras.append(D.sternal_wires(rng, heart))
    return Scene(size=size, heart=heart, tree=tree, carm=carm, objects=objects, extras=extras)


def _setup(rng, cfg: SynthV2Config, scene: Scene, num_frames: int) -> tuple[float, tuple[float, float]]:
    """Frame the tree, then draw frame rate and heart rate until the displacement targets fit."""
    s = scene.size / 512
    pts = np.concatenate([o.points[:: max(1, len(o.points) // 300)] for o in scene.objects])
    card = np.concatenate([o.cardiac[:: max(1, len(o.points) // 300)] for o in scene.objects])
    brth = np.concatenate([o.breathing[:: max(1, len(o.points) // 300)] for o in scene.objects])
    tree_uv = scene.carm.project(scene.tree_points())[0]
    center = (tree_uv.min(0) + tree_uv.max(0)) / 2
    scene.carm.offset = scene.size / 2 - center + rng.uniform(-0.08, 0.08, 2) * scene.size
    uv = scene.carm.project(pts)[0]
    inside = ((uv >= 0) & (uv < scene.size)).all(1)
    pts, card, brth = (pts[inside], card[inside], brth[inside]) if inside.sum() >= 3 else (pts, card, brth)
    target = rng.uniform(*cfg.peak_px) * s
    for attempt in range(8):
        rate = float(rng.choice(cfg.frame_rates)) if attempt < 6 else max(cfg.frame_rates)
        motion = random_motion(rng, cfg, scene.heart, 1.0 / rate, num_frames)
        if attempt >= 6:  # slow heart: the target fits under the step cap
            motion.heart_rate_hz = cfg.heart_rate_bpm[0] / 60
        got = calibrate(scene.carm, motion, pts, card, brth, num_frames, target, cfg.max_step_px * s)
        if got[0] >= min(target, cfg.peak_px[0] * s) - 0.5 * s or num_frames < 3:
            break
    scene.motion = motion
    return 1.0 / rate, got


def generate_cine_v2(seed: int, num_frames: int = 30, size: int = 512,
                     config: SynthV2Config | None = None) -> SyntheticCineV2:
    """One v2 cine; the same (seed, num_frames, size, config) gives byte-identical output."""
    cfg = config or SynthV2Config()
    cfg.validate()
    if int(num_frames) < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if not 64 <= int(size) <= 4096:
        raise InputError(f"size must be between 64 and 4096 pixels, got {size}")
    num_frames, size = int(num_frames), int(size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 64), 0x5EED, 2]))
    min_pixels = max(6, size * size // 20000)
    for _attempt in range(10):
        scene = _build_scene(rng, cfg, size, num_frames)
        if len(scene.objects) < cfg.min_objects:
            continue
        frame_time, (peak, step) = _setup(rng, cfg, scene, num_frames)
        scene.collimator = random_collimator(rng, cfg, size)
        scene.bolus = random_bolus(rng, cfg, num_frames, frame_time, scene.tree_length())
        scene.chest = Chest(rng, cfg, size, scene.carm, scene.heart, scene.motion)
        scene.detector = random_detector(rng, cfg, size)
        scene.label_opacity = cfg.label_opacity
        out = [render_frame(scene, rng, t) for t in range(num_frames)]
        labels = np.stack([o[1] for o in out])
        counts = np.stack([np.bincount(lab.ravel(), minlength=len(scene.objects) + 1)[1:] for lab in labels])
        if counts.min() >= min_pixels:
            break
    else:
        raise InputError(f"synthetic v2 cine seed {seed}: could not keep {cfg.min_objects}+ objects in view at "
                         f"size {size}; allow more kinds or a larger size")
    ids = range(1, len(scene.objects) + 1)
    return SyntheticCineV2(
        frames=np.stack([o[0] for o in out]), labels=labels, spacing=(scene.carm.iso_spacing,) * 2,
        object_names={i: scene.objects[i - 1].kind for i in ids}, frame_time=float(frame_time), seed=int(seed),
        object_kinds={i: scene.objects[i - 1].kind for i in ids},
        contrast=np.array([scene.bolus.injecting(t) for t in range(num_frames)]),
        exposed=scene.collimator.exposed >= 0.5,
        tracks={i: np.stack([o[2][i - 1][0] for o in out]) for i in ids},
        drawn={i: np.stack([o[2][i - 1][1] for o in out]) for i in ids},
        unlabelled={name: np.stack([o[4][name] for o in out]) for name in out[0][4]},
        max_opacification_frame=int(np.argmax([o[3] for o in out])),
        motion={"peak_px": round(peak, 2), "max_step_px": round(step, 2), "fps": round(1 / frame_time, 2),
                "heart_rate_bpm": round(scene.motion.heart_rate_hz * 60, 1),
                "lao": round(scene.carm.lao, 1), "cranial": round(scene.carm.cranial, 1),
                "tree": scene.tree.side, "bits": scene.detector.bits})
