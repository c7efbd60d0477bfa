"""The cine generator: a random scene of vessels and devices, moved and rendered frame by frame.

`XRayVOSLib.synth` re-exports what is public here; its docstring describes the cines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.synth import anatomy as A
from XRayVOSLib.synth.motion import random_motion
from XRayVOSLib.synth.render import Renderer, random_collimator

ALL_KINDS = A.ALL_KINDS
_WEIGHTS = {A.VESSEL: 0.5, A.CATHETER: 3.0, A.GUIDEWIRE: 3.0, A.BALLOON: 1.2, A.STENT: 1.2,
            A.MARKERS: 1.0, A.ELECTRODE: 1.0}
_REPEATABLE = (A.GUIDEWIRE, A.MARKERS, A.ELECTRODE)  # a buddy wire, several marker rows / EP catheters
Range = tuple[float, float]
_REDRAWS = [0]  # scenes redrawn since import (a generator health figure for tests and benchmarks)


@dataclass
class SynthConfig:
    """Knobs of the generator. Ranges are (low, high), drawn uniformly per cine."""

    min_objects: int = 1
    max_objects: int = 5
    kinds: tuple[str, ...] = ALL_KINDS  # object kinds that may appear
    vessel_probability: float = 0.9  # chance the vessel tree is one of the objects
    max_branches: int = 40
    zoom: Range = (0.85, 1.2)  # magnification: anatomy size in pixels, and spacing
    # Motion (fractions of the image size)
    cardiac_amplitude: Range = (0.02, 0.055)  # peak displacement
    heart_rate_bpm: Range = (60.0, 90.0)
    respiratory_probability: float = 0.35  # else breath-hold
    respiratory_amplitude: Range = (0.005, 0.03)
    pan_probability: float = 0.25
    table_pan: Range = (0.001, 0.006)  # per frame
    frame_rates: tuple[float, ...] = (15.0,)
    # Contrast bolus (fractions of the cine length; <0 or >1 falls outside the cine)
    contrast_onset: Range = (-0.25, 0.35)  # vessels half-filled
    contrast_washout: Range = (0.6, 1.4)  # vessels half-emptied
    contrast_floor: Range = (0.25, 0.4)  # least vessel opacity relative to the peak
    # Detector and display
    noise: Range = (3.0, 7.0)  # grey-level std on the background at normal dose
    low_dose: bool | None = None  # None: random with low_dose_probability (2.5x noise)
    low_dose_probability: float = 0.2
    blur: Range = (0.7, 1.4)  # detector blur sigma, pixels at 512
    collimator_probability: float = 0.6
    vignetting: Range = (0.0, 0.3)
    sharpen_probability: float = 0.5
    distractor_probability: float = 0.4  # unlabelled ECG leads on the skin
    unlabelled_catheter_probability: float = 0.7  # the injecting catheter shows even when not an object

    @classmethod
    def preset(cls, name: str) -> SynthConfig:
        """'easy' (few objects, slow, clean), 'default', 'hard' (fast motion, low dose, clutter)."""
        if name == "default":
            return cls()
        if name == "easy":
            return cls(max_objects=3, cardiac_amplitude=(0.004, 0.01), respiratory_probability=0.0,
                       pan_probability=0.0, contrast_onset=(-0.6, -0.3), contrast_washout=(1.5, 2.0),
                       contrast_floor=(0.5, 0.7), noise=(1.5, 3.0), low_dose=False, collimator_probability=0.3,
                       distractor_probability=0.0)
        if name == "hard":
            return cls(min_objects=3, cardiac_amplitude=(0.015, 0.035), respiratory_probability=0.7,
                       pan_probability=0.5, frame_rates=(7.5, 15.0, 15.0), contrast_floor=(0.15, 0.25),
                       noise=(4.0, 8.0), low_dose_probability=0.5, distractor_probability=0.8)
        raise InputError(f"unknown synth preset {name!r}; use 'easy', 'default' or 'hard'")

    def validate(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= 255:
            raise InputError(f"need 1 <= min_objects <= max_objects <= 255, got {self.min_objects}..{self.max_objects}")
        bad = [k for k in self.kinds if k not in ALL_KINDS]
        if bad or not self.kinds:
            raise InputError(f"unknown object kinds {bad or '(none)'}; choose from {list(ALL_KINDS)}")
        unique = len(set(self.kinds))
        if not any(k in _REPEATABLE for k in self.kinds) and self.min_objects > unique:
            raise InputError(f"min_objects={self.min_objects} but kinds {list(self.kinds)} allow only {unique} "
                             f"objects (only {', '.join(_REPEATABLE)} may repeat)")
        if not self.frame_rates or min(self.frame_rates) <= 0:
            raise InputError(f"frame_rates must be positive, got {self.frame_rates}")
        for name, value in asdict(self).items():
            ranged = isinstance(value, tuple) and len(value) == 2 and name not in ("kinds", "frame_rates")
            if ranged and value[0] > value[1]:
                raise InputError(f"SynthConfig.{name} must be (low, high), got {value}")


@dataclass
class SyntheticCine:
    frames: np.ndarray  # [T, H, W] uint8
    labels: np.ndarray  # [T, H, W] uint8
    object_names: dict[int, str]
    spacing: tuple[float, float]  # (row, col) mm
    frame_time: float  # seconds
    seed: int = 0
    object_kinds: dict[int, str] = field(default_factory=dict)
    contrast: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] vessel opacity at the ostium
    exposed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # [H, W] not under a shutter

    def meta(self) -> dict:
        return {"seed": self.seed, "num_frames": int(self.frames.shape[0]), "size": int(self.frames.shape[1]),
                "object_names": {str(k): v for k, v in self.object_names.items()},
                "object_kinds": {str(k): v for k, v in self.object_kinds.items()},
                "spacing": list(self.spacing), "frame_time": self.frame_time}


def _choose_kinds(rng: np.random.Generator, cfg: SynthConfig) -> list[str]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    chosen = [A.VESSEL] if A.VESSEL in cfg.kinds and rng.random() < cfg.vessel_probability else []
    skipped: set[str] = set()
    while len(chosen) < n:
        pool = [k for k in cfg.kinds if k not in chosen and k not in skipped]
        pool = pool or [k for k in cfg.kinds if k in _REPEATABLE]
        if not pool:
            break
        w = np.array([_WEIGHTS[k] for k in pool])
        kind = str(rng.choice(pool, p=w / w.sum()))
        if kind in (A.BALLOON, A.STENT) and A.GUIDEWIRE in cfg.kinds and A.GUIDEWIRE not in chosen:
            if len(chosen) + 2 > n:  # devices ride on a wire: no room for both
                skipped.add(kind)
                continue
            chosen.append(A.GUIDEWIRE)
        chosen.append(kind)
    return chosen


def _build_scene(rng: np.random.Generator, cfg: SynthConfig, size: int, fieldbox) -> A.Scene:
    zoom = rng.uniform(*cfg.zoom)
    scale = size / 512 * zoom
    x0, y0, x1, y1 = fieldbox
    span = np.array([x1 - x0, y1 - y0])
    heart = np.array([x0, y0]) + span * rng.uniform(0.4, 0.6, 2)
    scene = A.Scene(size, scale, 0.3 * 512 / size / zoom, heart, fieldbox)
    ang = rng.uniform(0, 2 * np.pi)
    root = heart - np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0.18, 0.3) * size
    root = np.clip(root, [x0 + 0.06 * span[0], y0 + 0.06 * span[1]], [x1 - 0.06 * span[0], y1 - 0.06 * span[1]])
    style = "right" if rng.random() < 0.3 else "left"
    scene.tree = A.vessel_tree(rng, root, ang + rng.uniform(-0.4, 0.4), scale, size, style, cfg.max_branches)
    scene.ostium = scene.tree[0].points[0]
    step = max(1.5 * scale, 1.0)
    lm = scene.tree[0].points
    direction = (lm[min(4, len(lm) - 1)] - lm[0]) / (np.linalg.norm(lm[min(4, len(lm) - 1)] - lm[0]) + 1e-9)
    kinds = _choose_kinds(rng, cfg)
    counts: dict[str, int] = {}
    names = []
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
        names.append(kind if counts[kind] == 1 else f"{kind} {counts[kind]}")
    cath, cath_path = A.catheter(rng, scene.ostium, direction, scale, size, step, "catheter")
    wire_path = None
    taken: list[tuple[int, int]] = []
    for kind, name in zip(kinds, names, strict=True):
        if kind == A.VESSEL:
            obj = A.tree_object(scene.tree, scale, name)
        elif kind == A.CATHETER:
            obj = cath
            obj.name = name
        elif kind == A.GUIDEWIRE:
            obj, path, vr = A.guidewire(rng, cath_path, *A.tree_path(rng, scene.tree), scale, step, name)
            if wire_path is None:
                wire_path = (path, vr)
        elif kind in (A.BALLOON, A.STENT):
            if wire_path is None:  # no wire object: the device still sits in a vessel
                wire_path = A.rail(*A.tree_path(rng, scene.tree), step)
            make = A.balloon if kind == A.BALLOON else A.stent
            obj = make(rng, wire_path[0], wire_path[1], scale, scene.spacing, taken, fieldbox, name)
            if obj is None:
                continue
        elif kind == A.MARKERS:
            obj = A.markers(rng, scene, name)
        else:
            obj = A.electrode_catheter(rng, scene, step, name)
        scene.objects.append(obj)
    wired = any(o.kind == A.GUIDEWIRE for o in scene.objects)
    if A.CATHETER not in kinds and (wired or A.VESSEL in kinds) and rng.random() < cfg.unlabelled_catheter_probability:
        scene.extras.append(cath)
    return scene


def generate_cine_v1(seed: int, num_frames: int = 30, size: int = 512,
                     config: SynthConfig | None = None) -> SyntheticCine:
    """One v1 cine (XRayVOSLib.synth.generate_cine picks v1 or v2 by the config); the same
    (seed, num_frames, size, config) gives byte-identical output."""
    cfg = config or SynthConfig()
    cfg.validate()
    if int(num_frames) < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if not 64 <= int(size) <= 4096:
        raise InputError(f"size must be between 64 and 4096 pixels, got {size}")
    num_frames, size = int(num_frames), int(size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 64), 0x5EED]))
    min_pixels = max(6, size * size // 20000)
    for _attempt in range(10):  # redraw the scene if an object leaves the exposed field
        collimator = random_collimator(rng, cfg, size)
        scene = _build_scene(rng, cfg, size, collimator.field)
        if len(scene.objects) < cfg.min_objects:  # a device found no room: draw again
            _REDRAWS[0] += 1
            continue
        frame_time = 1.0 / float(rng.choice(cfg.frame_rates))
        motion = random_motion(rng, cfg, size, frame_time, num_frames, scene.heart_center)
        low_dose = cfg.low_dose if cfg.low_dose is not None else bool(rng.random() < cfg.low_dose_probability)
        renderer = Renderer(rng, cfg, scene, motion, collimator, num_frames, frame_time, low_dose)
        frames = np.empty((num_frames, size, size), np.uint8)
        labels = np.empty((num_frames, size, size), np.uint8)
        ok = True
        counts = np.zeros((num_frames, len(scene.objects)), np.int64)
        for t in range(num_frames):
            frames[t], labels[t] = renderer.render(t)
            counts[t] = np.bincount(labels[t].ravel(), minlength=len(scene.objects) + 1)[1:]
            if counts[t].min() < min_pixels:
                ok = False
                break
        # Also reject an object that mostly leaves the field at some point (a near-empty target).
        if ok and (counts.min(0) >= 0.2 * counts.max(0)).all():
            break
        _REDRAWS[0] += 1
    else:
        raise InputError(f"synthetic cine seed {seed}: could not fit {cfg.min_objects}+ objects of kinds "
                         f"{list(cfg.kinds)} in view at size {size}; allow more kinds or a larger size")
    ids = range(1, len(scene.objects) + 1)
    return SyntheticCine(
        frames=frames, labels=labels, object_names={i: scene.objects[i - 1].name for i in ids},
        spacing=(scene.spacing, scene.spacing), frame_time=float(frame_time), seed=int(seed),
        object_kinds={i: scene.objects[i - 1].kind for i in ids},
        contrast=np.array([float(renderer.bolus.level(t)) for t in range(num_frames)]),
        exposed=renderer.exposed.copy())
