"""C-arm projection and 3D motion of synthetic angiography v2.

The C-arm is a point source and a flat detector rotated LAO/RAO about the patient's long axis and
cranial/caudal about the left-right axis; a point projects with perspective, so magnification (and the
projected radius) varies with depth. The heart contracts (radially and base-to-apex) and twists about its
long axis, the thorax moves with breathing and the table pans; all of it moves 3D points, so the labels
stay exact and the projected motion is non-rigid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from XRayVOSLib.synth.v2.anatomy import Heart

# Standard coronary views (LAO +, RAO -; cranial +, caudal -), jittered per cine.
VIEWS = ((-30, 25), (-30, -25), (45, -30), (45, 25), (0, 35), (0, -35), (35, 0), (-35, 0), (-10, -35), (60, 20))


@dataclass
class CArm:
    lao: float  # degrees, RAO < 0
    cranial: float  # degrees, caudal < 0
    sid: float  # source-image distance, mm
    sod: float  # source-isocentre distance, mm
    detector_spacing: float  # mm per pixel on the detector
    size: int
    iso: np.ndarray  # (3,) isocentre at frame 0 (the table's position)
    offset: np.ndarray  # (2,) pixels: where the isocentre falls relative to the image centre

    @property
    def iso_spacing(self) -> float:
        """mm per pixel at the isocentre (what a length measured on the image means)."""
        return self.detector_spacing * self.sod / self.sid

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Beam direction and the detector's column and row directions (patient left on the right in AP)."""
        a, c = np.deg2rad(self.lao), np.deg2rad(self.cranial)
        beam = np.array([np.sin(a) * np.cos(c), -np.cos(a) * np.cos(c), np.sin(c)])
        down = np.array([0.0, 0.0, -1.0]) - beam * -beam[2]
        down /= np.linalg.norm(down)
        return beam, np.cross(beam, down), down

    def project(self, points: np.ndarray, table: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (x, y) of world points [N, 3] and the local pixels per mm; `table` shifts the patient."""
        beam, col, row = self.axes()
        iso = self.iso - (0 if table is None else table)
        rel = points - (iso - beam * self.sod)
        depth = np.maximum(rel @ beam, 1.0)
        px_per_mm = self.sid / depth / self.detector_spacing
        center = self.size / 2.0 + self.offset
        uv = np.stack([(rel @ col) * px_per_mm + center[0], (rel @ row) * px_per_mm + center[1]], 1)
        return uv, px_per_mm


def random_carm(rng: np.random.Generator, size: int, center: np.ndarray, spacing_mm=(0.2, 0.4)) -> CArm:
    lao, cra = VIEWS[int(rng.integers(len(VIEWS)))] if rng.random() < 0.7 else (rng.uniform(-45, 60), 0.0)
    sid, magnification = rng.uniform(900, 1200), rng.uniform(1.25, 1.6)
    iso_spacing = rng.uniform(*spacing_mm) * 512 / size  # mm per pixel at the isocentre, at 512 pixels
    return CArm(lao=lao + rng.uniform(-10, 10), cranial=float(np.clip(cra + rng.uniform(-10, 10), -40, 40)), sid=sid,
                sod=sid / magnification, detector_spacing=iso_spacing * magnification, size=size,
                iso=np.asarray(center, float) + rng.normal(0, 8, 3), offset=np.zeros(2))


@dataclass
class Motion:
    heart: Heart
    frame_time: float
    heart_rate_hz: float
    phase0: float  # cardiac cycle fraction at frame 0
    systole: float  # fraction of the cycle spent contracting
    radial: float  # fractional shortening of the radius at end-systole
    longitudinal: float  # fractional base-to-apex shortening
    torsion: float  # radians of apex-versus-base twist
    sway: np.ndarray  # (3,) mm: the whole heart's rocking at end-systole
    gain: float  # scales every cardiac amplitude (calibrated to a peak displacement)
    resp_period_s: float
    resp_phase0: float
    resp_shift: np.ndarray  # (3,) mm at full inspiration
    pan_velocity: np.ndarray  # (3,) mm per frame
    pan_accel: np.ndarray  # (3,) mm per frame^2

    def contraction(self, frame: float) -> float:
        """0 at end-diastole, 1 at end-systole: fast systole, slower diastole."""
        phase = (self.phase0 + frame * self.frame_time * self.heart_rate_hz) % 1.0
        if phase < self.systole:
            return 0.5 - 0.5 * np.cos(np.pi * phase / self.systole)
        return 0.5 + 0.5 * np.cos(np.pi * (phase - self.systole) / (1 - self.systole))

    def respiration(self, frame: float) -> float:
        return 0.5 - 0.5 * np.cos(2 * np.pi * frame * self.frame_time / self.resp_period_s + self.resp_phase0)

    def table(self, frame: float) -> np.ndarray:
        return self.pan_velocity * frame + 0.5 * self.pan_accel * frame**2

    def heart_field(self, points: np.ndarray, frame: float) -> np.ndarray:
        """World points [N, 3] moved by contraction and torsion of the heart (no blending)."""
        c = self.contraction(frame) * self.gain
        if c == 0.0:
            return points
        h = self.heart
        local = h.to_local(points)
        from_base = np.clip(-local[:, 2] / h.length, 0, 1)  # 0 at the AV groove, 1 at the apex
        ang = c * self.torsion * (from_base - 0.3)
        ca, sa = np.cos(ang), np.sin(ang)
        x, y = local[:, 0] * (1 - self.radial * c), local[:, 1] * (1 - self.radial * c)
        moved = np.stack([ca * x - sa * y, sa * x + ca * y,
                          local[:, 2] - self.longitudinal * c * (local[:, 2] + h.length)], 1)
        return h.to_world(moved) + c * self.sway

    def move(self, points: np.ndarray, cardiac: np.ndarray, breathing: np.ndarray, frame: float) -> np.ndarray:
        beat = self.heart_field(points, frame) - points
        return points + cardiac[:, None] * beat + breathing[:, None] * (self.respiration(frame) * self.resp_shift)


def random_motion(rng: np.random.Generator, cfg, heart: Heart, frame_time: float, num_frames: int) -> Motion:
    breathing = rng.random() < cfg.respiratory_probability  # else breath-hold, as in most coronary runs
    resp = (np.array([rng.normal(0, 2), rng.uniform(-4, 2), -rng.uniform(*cfg.respiratory_mm)])
            if breathing else np.zeros(3))
    pan = np.zeros(3)
    if rng.random() < cfg.pan_probability:  # the operator follows the contrast down the tree
        ang = rng.uniform(0, 2 * np.pi)
        pan = rng.uniform(*cfg.pan_mm) / max(num_frames, 1) * np.array([np.cos(ang), 0.3 * rng.normal(), np.sin(ang)])
    return Motion(heart=heart, frame_time=frame_time, heart_rate_hz=rng.uniform(*cfg.heart_rate_bpm) / 60,
                  phase0=rng.uniform(0, 1), systole=rng.uniform(0.3, 0.42), radial=rng.uniform(0.1, 0.18),
                  longitudinal=rng.uniform(0.08, 0.16), torsion=rng.uniform(0.15, 0.35) * rng.choice([-1, 1]),
                  sway=rng.normal(0, 3, 3), gain=1.0, resp_period_s=rng.uniform(3.0, 5.5),
                  resp_phase0=rng.uniform(0, 2 * np.pi), resp_shift=resp, pan_velocity=pan,
                  pan_accel=-pan / max(num_frames, 1) * rng.uniform(0, 1))


def trajectories(carm: CArm, motion: Motion, points: np.ndarray, cardiac: np.ndarray, breathing: np.ndarray,
                 num_frames: int) -> np.ndarray:
    """Projected pixels [T, N, 2] of world points over the cine."""
    return np.stack([carm.project(motion.move(points, cardiac, breathing, t), motion.table(t))[0]
                     for t in range(num_frames)])


def displacement_stats(tracks: np.ndarray, support: int = 0) -> tuple[float, float]:
    """(peak displacement from the support frame's pose, largest inter-frame step), pixels, over all points."""
    peak = float(np.linalg.norm(tracks - tracks[support], axis=2).max()) if len(tracks) > 1 else 0.0
    step = float(np.linalg.norm(np.diff(tracks, axis=0), axis=2).max()) if len(tracks) > 1 else 0.0
    return peak, step


def calibrate(carm: CArm, motion: Motion, points, cardiac, breathing, num_frames: int, peak: float,
              max_step: float) -> tuple[float, float]:
    """Set motion.gain so the peak displacement from frame 0 is `peak` pixels, keeping the largest step
    below `max_step`; returns the measured (peak, step). Three rescalings suffice: the map from gain to
    displacement is close to linear at these amplitudes."""
    motion.gain = 0.0  # breathing and table pan alone must leave room for the heart's share
    still, _ = displacement_stats(trajectories(carm, motion, points, cardiac, breathing, num_frames))
    if still > 0.6 * peak:
        shrink = 0.6 * peak / still
        motion.resp_shift, motion.pan_velocity, motion.pan_accel = (
            motion.resp_shift * shrink, motion.pan_velocity * shrink, motion.pan_accel * shrink)
    motion.gain = 1.0
    for _ in range(3):
        got, step = displacement_stats(trajectories(carm, motion, points, cardiac, breathing, num_frames))
        if got < 1e-6:
            return got, step
        factor = min(peak / got, max_step / max(step, 1e-6))
        motion.gain = float(np.clip(motion.gain * factor, 0.0, 3.0))
    return displacement_stats(trajectories(carm, motion, points, cardiac, breathing, num_frames))
