"""Image formation of synthetic angiography v2: anatomical background, bolus, detector and XA processing.

Attenuation A (line integral, log units) is summed from the chest (lungs, mediastinum, spine, ribs,
diaphragm moving with breathing), the heart shadow (the ray's chord through the contracting heart) and
the tubes. The detector counts Poisson quanta N0 * exp(-(A - A_ref)) (dose sets N0), spreads them in the
scintillator (blur applied after the noise, so the noise is correlated as on a real flat panel),
digitises at 8-12 bits, takes the log, and the XA pipeline applies unsharp-mask edge enhancement and a
window/gamma LUT to 8-bit MONOCHROME2 (structures dark).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from XRayVOSLib.synth.render import Background, _smooth_noise
from XRayVOSLib.synth.v2.anatomy import Heart
from XRayVOSLib.synth.v2.geometry import CArm, Motion


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class Bolus:
    """Contrast in the lumen: a front leaves the ostium at `arrival` and fills distally at `speed`."""

    arrival: float  # frame the front leaves the ostium
    speed: float  # mm of tree per frame
    rise: float  # frames for one point to opacify fully
    washout: float  # frame the injection stops (wash-out starts at the ostium)
    fall: float
    floor: float  # residual opacity after wash-out (relative)
    peak: float

    def opacity(self, frame: float, arc: np.ndarray) -> np.ndarray:
        delay = np.asarray(arc) / self.speed
        fill = _smoothstep((frame - self.arrival - delay) / self.rise)
        out = 1 - (1 - self.floor) * _smoothstep((frame - self.washout - 1.4 * delay) / self.fall)
        return self.peak * fill * out

    def injecting(self, frame: float) -> float:
        """Contrast in the catheter lumen: from just before the front leaves until the wash-out."""
        return float(_smoothstep(frame - self.arrival + 1.0) * (1 - _smoothstep((frame - self.washout) / self.fall)))


def random_bolus(rng, cfg, num_frames: int, frame_time: float, tree_length: float) -> Bolus:
    speed = tree_length / (rng.uniform(*cfg.fill_seconds) / frame_time)
    rise = rng.uniform(1.0, 3.0)
    if rng.random() < cfg.washin_probability:  # the cine starts while the tree is still filling
        arrival = -rng.uniform(*cfg.washin_front) * tree_length / speed
    else:
        arrival = -(tree_length / speed + rise + rng.uniform(0, 5))
    filled = arrival + tree_length / speed + rise
    washout = max(rng.uniform(*cfg.washout_at) * num_frames, filled + 3)
    return Bolus(arrival=arrival, speed=speed, rise=rise, washout=washout, fall=rng.uniform(4, 12),
                 floor=rng.uniform(*cfg.contrast_floor), peak=1.0)


class Chest:
    """Chest layers on a padded canvas (shifted per frame by breathing and table pan) and the heart shadow."""

    def __init__(self, rng, cfg, size: int, carm: CArm, heart: Heart, motion: Motion):
        self.size, self.carm, self.heart, self.motion = size, carm, heart, motion
        self.margin = m = int(0.2 * size) + 4
        c = size + 2 * m
        s = size / 512
        yy, xx = np.mgrid[0:c, 0:c].astype(np.float32)
        spine_pt = heart.center + np.array([-0.3 * heart.radius, 2.2 * heart.radius, 0.0])
        sx = float(carm.project(spine_pt[None])[0][0, 0]) + m
        width = rng.uniform(0.16, 0.26) * size
        mediastinum = np.exp(-(((xx - sx) / width) ** 2)) * rng.uniform(0.3, 0.6)  # lungs either side are bright
        texture = sum(a * _smooth_noise(rng, (c, c), n) for n, a in ((3, 0.08), (7, 0.04), (16, 0.02), (40, 0.01)))
        chest = (mediastinum + texture).astype(np.float32) + Background._ribs(rng, (c, c), size, s)
        if rng.random() < 0.8:
            chest += Background._spine(rng, (c, c), size, s)
        for _ in range(int(rng.integers(1, 4)) if rng.random() < cfg.ecg_probability else 0):
            Background._lead(rng, chest, c, s)  # ECG leads on the skin (unlabelled)
        self.chest = chest
        self.diaphragm = np.zeros((c, c), np.float32)
        if rng.random() < cfg.diaphragm_probability:  # dome edge: the liver below is much denser than lung
            top, x_top = rng.uniform(0.55, 1.05) * size + m, rng.uniform(0.1, 0.9) * c
            curve = top + rng.uniform(0.6, 1.6) * (xx - x_top) ** 2 / c
            self.diaphragm = (rng.uniform(0.4, 0.8) / (1 + np.exp(-np.clip((yy - curve) / (5 * s + 1), -30, 30))))
            self.diaphragm = self.diaphragm.astype(np.float32)
        self.gains = (rng.uniform(0.3, 0.6), rng.uniform(1.0, 1.3))  # chest wall moves less than the diaphragm
        self.mu_heart = rng.uniform(0.004, 0.009)  # heart versus lung, per mm of chord
        self.ref = carm.project(heart.center[None])[0][0]

    def _shift(self, frame: int, gain: float) -> np.ndarray:
        mo = self.motion
        moved = self.heart.center + gain * mo.respiration(frame) * mo.resp_shift
        return self.carm.project(moved[None], mo.table(frame))[0][0] - self.ref

    def heart_shadow(self, frame: int, grid: int = 64) -> np.ndarray:
        """Chord (mm) of each pixel's ray through the heart's ellipsoid, times mu, at the frame's contraction."""
        carm, h, mo = self.carm, self.heart, self.motion
        beam, col, row = carm.axes()
        c = mo.contraction(frame) * mo.gain
        semi = np.array([h.radius * (1 - mo.radial * c)] * 2 + [h.length * (1 - 0.5 * mo.longitudinal * c)]) + 3
        center = h.center + mo.respiration(frame) * mo.resp_shift + mo.table(frame) + c * mo.sway
        iso = carm.iso
        source = iso - beam * carm.sod
        u = (np.arange(grid) + 0.5) * carm.size / grid - carm.size / 2 - carm.offset[0]
        v = (np.arange(grid) + 0.5) * carm.size / grid - carm.size / 2 - carm.offset[1]
        uu, vv = np.meshgrid(u, v)
        det = (iso + beam * (carm.sid - carm.sod))[None, None] + carm.detector_spacing * (
            uu[..., None] * col + vv[..., None] * row)
        d = det - source
        d /= np.linalg.norm(d, axis=2, keepdims=True)
        o = ((source - center) @ h.rotation) / semi
        dl = (d @ h.rotation) / semi
        a, b, cc = (dl**2).sum(2), 2 * (dl @ o), (o**2).sum() - 1
        disc = np.maximum(b * b - 4 * a * cc, 0)
        chord = (np.sqrt(disc) / a).astype(np.float32)  # in units of the ray's length (mm)
        img = cv2.resize(chord * self.mu_heart, (carm.size, carm.size), interpolation=cv2.INTER_CUBIC)
        return cv2.GaussianBlur(img, (0, 0), 0.02 * carm.size)

    def attenuation(self, frame: int) -> np.ndarray:
        size, m = self.size, self.margin
        out = self.heart_shadow(frame)
        for layer, gain in ((self.chest, self.gains[0]), (self.diaphragm, self.gains[1])):
            dx, dy = self._shift(frame, gain)
            mat = np.array([[1, 0, m - dx], [0, 1, m - dy]], np.float32)  # output pixel -> canvas pixel
            out += cv2.warpAffine(layer, mat, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT)
        return out


@dataclass
class Detector:
    quanta: float  # mean detected quanta per pixel at the reference attenuation (dose)
    blur: float  # scintillator / focal-spot blur, pixels
    electronic: float  # additive noise, quanta
    bits: int  # ADC depth
    sharpen: float  # unsharp-mask gain of the XA edge enhancement
    sharpen_sigma: float
    gamma: float
    level: float  # grey of the background median
    contrast: float  # grey per log unit
    a_ref: float = 0.0
    headroom: float = 1.6  # log units above the reference before the ADC saturates

    def log_image(self, rng: np.random.Generator, att: np.ndarray) -> np.ndarray:
        mean = self.quanta * np.exp(-(att - self.a_ref))
        counts = rng.poisson(mean).astype(np.float32)
        if self.blur > 0.05:
            counts = cv2.GaussianBlur(counts, (0, 0), self.blur)
        counts += rng.standard_normal(counts.shape, dtype=np.float32) * self.electronic
        full = self.quanta * np.exp(self.headroom)
        levels = float(2**self.bits - 1)
        digital = np.clip(np.round(counts / full * levels), 1, levels)
        log = np.log(levels / digital).astype(np.float32)  # = A - A_ref + headroom, plus noise
        if self.sharpen:
            log += self.sharpen * (log - cv2.GaussianBlur(log, (0, 0), self.sharpen_sigma))
        return log

    def display(self, log: np.ndarray) -> np.ndarray:
        grey = np.clip((self.level - self.contrast * (log - self.headroom)) / 255.0, 0, 1)
        return np.clip(255.0 * grey**self.gamma + 0.5, 0, 255).astype(np.uint8)


def random_detector(rng, cfg, size: int) -> Detector:
    low, high = np.log(cfg.quanta)
    quanta = float(np.exp(rng.uniform(low, high))) * (512 / size) ** 2  # bigger pixels collect more quanta
    return Detector(quanta=quanta, blur=rng.uniform(*cfg.blur) * size / 512, electronic=rng.uniform(0.5, 2.0),
                    bits=int(rng.choice(cfg.bits)), sharpen=rng.uniform(*cfg.sharpen),
                    sharpen_sigma=rng.uniform(2.0, 5.0) * size / 512, gamma=rng.uniform(*cfg.gamma),
                    level=rng.uniform(*cfg.level), contrast=rng.uniform(*cfg.contrast))
