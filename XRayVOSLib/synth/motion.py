"""Cardiac, respiratory and table-pan motion of a synthetic cine.

Motion moves geometry (polyline points) rather than pixels, so labels stay exact. The background is
smooth, so it is moved by an affine warp per layer that shares the respiratory/pan part of the motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Motion:
    size: int
    frame_time: float
    heart_center: np.ndarray  # (2,) x, y
    heart_rate_hz: float
    cardiac_phase0: float  # cycle fraction at frame 0
    systole: float  # fraction of the cycle spent contracting
    cardiac_amp: float  # peak displacement, pixels
    radial: float  # share of the peak that is concentric contraction
    twist: float  # share that is rotation about the heart center
    modes: np.ndarray  # [M, 5]: fx, fy, phase, ax, ay of a smooth random displacement field
    resp_period_s: float
    resp_phase0: float
    resp_shift: np.ndarray  # (2,) pixels at full inspiration
    resp_scale: float  # relative scale change at full inspiration
    pan_velocity: np.ndarray  # (2,) pixels per frame
    pan_accel: np.ndarray  # (2,) pixels per frame^2 (table moved by hand: not uniform)

    def contraction(self, frame: float) -> float:
        """0 at end-diastole, 1 at end-systole; fast systole, slower diastole, smooth at the joins."""
        phase = (self.cardiac_phase0 + frame * self.frame_time * self.heart_rate_hz) % 1.0
        if phase < self.systole:
            return 0.5 - 0.5 * np.cos(np.pi * phase / self.systole)
        return 0.5 + 0.5 * np.cos(np.pi * (phase - self.systole) / (1 - self.systole))

    def respiration(self, frame: float) -> float:
        return 0.5 - 0.5 * np.cos(2 * np.pi * frame * self.frame_time / self.resp_period_s + self.resp_phase0)

    def pan(self, frame: float) -> np.ndarray:
        return self.pan_velocity * frame + 0.5 * self.pan_accel * frame**2

    def cardiac_displacement(self, pts: np.ndarray, frame: float) -> np.ndarray:
        """Smooth non-rigid field: contraction + twist + random modes, fading away from the heart."""
        c = self.contraction(frame)
        if c == 0.0 or self.cardiac_amp == 0.0:
            return np.zeros_like(pts)
        rel = (pts - self.heart_center) / self.size
        disp = -self.radial * 2.5 * rel  # |rel| ~ 0.3 -> ~0.75 of the peak
        disp += self.twist * 2.5 * np.stack([-rel[:, 1], rel[:, 0]], 1)
        for fx, fy, ph, ax, ay in self.modes:
            wave = np.sin(2 * np.pi * (fx * rel[:, 0] + fy * rel[:, 1]) + ph)
            disp += np.outer(wave, (ax, ay))
        weight = np.exp(-np.sum(rel**2, 1) / (2 * 0.45**2))[:, None]
        return disp * weight * (c * self.cardiac_amp)

    def affine(self, frame: float, resp_gain: float = 1.0, extra_scale: float = 1.0) -> tuple[float, np.ndarray]:
        """Global scale (about the image center) and shift from respiration and table pan."""
        r = self.respiration(frame) * resp_gain
        return (1 + self.resp_scale * r) * extra_scale, self.resp_shift * r + self.pan(frame)

    def warp_points(self, pts: np.ndarray, frame: float) -> np.ndarray:
        scale, shift = self.affine(frame)
        center = self.size / 2.0
        moved = pts + self.cardiac_displacement(pts, frame)
        return center + scale * (moved - center) + shift

    def layer_matrix(self, frame: float, margin: int, resp_gain: float = 1.0, pulse: float = 0.0,
                     pivot: np.ndarray | None = None) -> np.ndarray:
        """2x3 inverse map (output pixel -> canvas pixel) for cv2.warpAffine of a background layer.

        The canvas is the image padded by `margin` on every side. `pulse` > 0 makes the layer shrink
        about `pivot` with the cardiac contraction (heart shadow).
        """
        s, shift = self.affine(frame, resp_gain)
        center = np.full(2, self.size / 2.0)
        # forward: p' = center + s * (q - center) + shift, where q = pivot + k * (p - pivot)
        k = 1.0 - pulse * self.contraction(frame)
        pv = center if pivot is None else pivot
        # compose forward A p + b, then invert
        a = s * k
        b = center + s * (pv + k * (-pv) - center) + shift  # p' = a p + b
        inv_a, inv_b = 1.0 / a, -b / a
        return np.array([[inv_a, 0.0, inv_b[0] + margin], [0.0, inv_a, inv_b[1] + margin]], np.float32)


def random_motion(rng: np.random.Generator, cfg, size: int, frame_time: float, num_frames: int,
                  heart_center: np.ndarray) -> Motion:
    """Draw one cine's motion from the ranges in `cfg` (a SynthConfig)."""
    amp = rng.uniform(*cfg.cardiac_amplitude) * size
    modes = np.stack([np.concatenate([rng.uniform(-1.2, 1.2, 2), [rng.uniform(0, 2 * np.pi)],
                                      rng.normal(0, 0.35, 2)]) for _ in range(3)])
    breathing = rng.random() < cfg.respiratory_probability  # else breath-hold, as in most coronary runs
    resp_amp = rng.uniform(*cfg.respiratory_amplitude) * size if breathing else 0.0
    resp_dir = np.deg2rad(90 + rng.uniform(-25, 25))  # mostly cranio-caudal
    panning = rng.random() < cfg.pan_probability
    pan_speed = rng.uniform(*cfg.table_pan) * size if panning else 0.0
    pan_speed = min(pan_speed, 0.15 * size / max(num_frames, 1))  # keep the objects in view
    pan_dir = rng.uniform(0, 2 * np.pi)
    pan_velocity = pan_speed * np.array([np.cos(pan_dir), np.sin(pan_dir)])
    return Motion(
        size=size, frame_time=frame_time, heart_center=np.asarray(heart_center, np.float64),
        heart_rate_hz=rng.uniform(*cfg.heart_rate_bpm) / 60.0, cardiac_phase0=rng.uniform(0, 1),
        systole=rng.uniform(0.3, 0.42), cardiac_amp=amp, radial=rng.uniform(0.3, 0.7),
        twist=rng.uniform(-0.4, 0.4), modes=modes,
        resp_period_s=rng.uniform(3.0, 5.5), resp_phase0=rng.uniform(0, 2 * np.pi),
        resp_shift=resp_amp * np.array([np.cos(resp_dir), np.sin(resp_dir)]),
        resp_scale=rng.uniform(0.0, 0.02) * (resp_amp > 0), pan_velocity=pan_velocity,
        pan_accel=-pan_velocity / max(num_frames, 1) * rng.uniform(0, 1),  # the pan slows down
    )
