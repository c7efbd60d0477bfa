"""Image physics of a synthetic angiogram: tubes rasterised from their centerlines, Beer-Lambert
attenuation, contrast bolus, detector blur, signal-dependent (quantum) noise, shutters, vignetting.

Everything is summed as attenuation A (a line integral, the log of the transmitted fraction), then
shown like processed MONOCHROME2 XA: grey = level - gain * (A - A_ref), so structures are dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from XRayVOSLib.synth.anatomy import Scene, SceneObject, _wander
from XRayVOSLib.synth.motion import Motion


@dataclass
class Collimator:
    exposed: np.ndarray  # [H, W] float32, 1 in the exposed field, 0 under the shutters, soft edge
    field: tuple[float, float, float, float]  # a box inside the exposed field (to place objects)


def random_collimator(rng: np.random.Generator, cfg, size: int) -> Collimator:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    exposed = np.ones((size, size), np.float32)
    box = [0.0, 0.0, float(size), float(size)]
    soft = max(1.0, 1.5 * size / 512)
    if rng.random() < cfg.collimator_probability:
        for side in range(4):  # straight shutter blades, each side independently
            if rng.random() < 0.45:
                inset = rng.uniform(0.03, 0.14) * size
                tilt = np.deg2rad(rng.uniform(-3, 3))
                pos = xx if side % 2 == 0 else yy
                other = yy if side % 2 == 0 else xx
                edge = inset + np.tan(tilt) * (other - size / 2)
                dist = pos - edge if side < 2 else (size - pos) - edge
                exposed *= np.clip(dist / soft + 0.5, 0, 1)
                margin = inset + abs(np.tan(tilt)) * size / 2
                box[side % 2] = max(box[side % 2], margin) if side < 2 else box[side % 2]
                if side >= 2:
                    box[side % 2 + 2] = min(box[side % 2 + 2], size - margin)
        if rng.random() < 0.3:  # round iris
            radius = rng.uniform(0.55, 0.72) * size
            dist = radius - np.hypot(xx - size / 2, yy - size / 2)
            exposed *= np.clip(dist / soft + 0.5, 0, 1)
            half = radius / np.sqrt(2)
            box = [max(box[0], size / 2 - half), max(box[1], size / 2 - half),
                   min(box[2], size / 2 + half), min(box[3], size / 2 + half)]
    return Collimator(exposed, (box[0], box[1], box[2], box[3]))


def _smooth_noise(rng, shape: tuple[int, int], cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


class Background:
    """Three body layers on a padded canvas: chest wall (ribs, spine, leads), diaphragm, heart."""

    def __init__(self, rng, cfg, scene: Scene, margin: int):
        self.margin = margin
        size, s = scene.size, scene.scale
        c = size + 2 * margin
        shape = (c, c)
        # Soft body texture at several scales; lung fields are the bright (negative) lobes.
        octaves = ((2, 0.25), (4, 0.15), (8, 0.08), (18, 0.04), (45, 0.015))
        chest = (0.6 + sum(a * _smooth_noise(rng, shape, n) for n, a in octaves)).astype(np.float32)
        chest += self._ribs(rng, shape, size, s)
        if rng.random() < 0.6:
            chest += self._spine(rng, shape, size, s)
        for _ in range(int(rng.integers(1, 4)) if rng.random() < cfg.distractor_probability else 0):
            self._lead(rng, chest, c, s)
        self.chest = chest
        yy, xx = np.mgrid[0:c, 0:c].astype(np.float32)
        self.diaphragm = np.zeros(shape, np.float32)
        if rng.random() < 0.6:  # dome: the liver below it is much denser than lung
            top = rng.uniform(0.45, 1.1) * size + margin
            x_top = rng.uniform(0.1, 0.9) * c
            curve = top + rng.uniform(0.6, 1.6) * (xx - x_top) ** 2 / c + rng.uniform(-0.2, 0.2) * (xx - x_top)
            edge = np.clip((yy - curve) / (4 * s + 1), -30, 30)
            self.diaphragm = (rng.uniform(0.25, 0.5) / (1 + np.exp(-edge))).astype(np.float32)
        self.heart = np.zeros(shape, np.float32)
        hc = tuple(int(v) for v in scene.heart_center + margin)
        axes = (int(rng.uniform(0.3, 0.45) * size), int(rng.uniform(0.22, 0.35) * size))
        cv2.ellipse(self.heart, hc, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        self.heart = cv2.GaussianBlur(self.heart, (0, 0), 0.04 * size) * rng.uniform(0.12, 0.3)
        self.resp_gain = (rng.uniform(0.4, 0.8), rng.uniform(1.0, 1.4), 1.0)

    @staticmethod
    def _ribs(rng, shape, size, s) -> np.ndarray:
        """Curved bands with denser cortical edges, irregularly spaced, all bowing the same way."""
        c = shape[0]
        img = np.zeros(shape, np.float32)
        ang, bow = rng.uniform(-0.6, 0.6), rng.uniform(0.4, 1.4) * rng.choice([-1, 1]) / c
        x = np.linspace(-0.3 * c, 1.3 * c, 60)
        y0 = rng.uniform(-0.15, 0) * size
        while y0 < 1.2 * c:
            width = rng.uniform(0.035, 0.06) * size
            y = y0 + bow * (x - c / 2) ** 2 + rng.uniform(-0.05, 0.05) * x
            pts = np.stack([c / 2 + (x - c / 2) * np.cos(ang) - (y - c / 2) * np.sin(ang),
                            c / 2 + (x - c / 2) * np.sin(ang) + (y - c / 2) * np.cos(ang)], 1)
            pts = np.round(pts * 16).astype(np.int32)
            cv2.polylines(img, [pts], False, 1.0, max(1, int(width)), cv2.LINE_AA, 4)
            cv2.polylines(img, [pts], False, 0.6, max(1, int(width * 0.7)), cv2.LINE_AA, 4)
            y0 += width + rng.uniform(0.04, 0.09) * size
        return cv2.GaussianBlur(img, (0, 0), 1.5 * s + 0.5) * rng.uniform(0.05, 0.14)

    @staticmethod
    def _spine(rng, shape, size, s) -> np.ndarray:
        """Vertebral column: bodies with dense endplates, separated by discs, along a tilted axis."""
        img = np.zeros(shape, np.float32)
        c = shape[0]
        x0, w = rng.uniform(0.0, 1.0) * c, rng.uniform(0.14, 0.2) * size
        body, disc, tilt = rng.uniform(0.08, 0.1) * size, rng.uniform(0.015, 0.025) * size, rng.uniform(-12, 12)
        slope = np.tan(np.deg2rad(tilt))
        for y in np.arange(rng.uniform(-body, 0), c + body, body + disc):
            center = (x0 - slope * (y - c / 2), y)
            box = np.round(cv2.boxPoints((center, (w, body), tilt))).astype(np.int32)
            cv2.fillPoly(img, [box], 0.8, cv2.LINE_AA)
            cv2.polylines(img, [box], True, 1.3, max(1, int(2.5 * s)), cv2.LINE_AA)
            for side in (-0.3, 0.3):  # pedicles
                cv2.ellipse(img, (int(center[0] + side * w), int(y)), (max(1, int(0.06 * w)), max(1, int(0.12 * body))),
                            tilt, 0, 360, 1.4, max(1, int(2 * s)), cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), 4.0 * s + 0.5)
        return img * rng.uniform(0.08, 0.22)

    @staticmethod
    def _lead(rng, canvas, c, s) -> None:
        """ECG lead on the skin: a visible cable and snap that is no labelled object (distractor)."""
        start = rng.uniform(0, c, 2)
        pts = _wander(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.2) * c, 4.0, rng.uniform(-2, 2) / c, c)
        val = float(canvas.mean() + rng.uniform(0.1, 0.25))
        cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], False, val,
                      max(1, int(rng.uniform(1.5, 3) * s)), cv2.LINE_AA, 4)
        cv2.circle(canvas, tuple(int(v) for v in start), max(2, int(rng.uniform(6, 10) * s)), val,
                   max(1, int(2 * s)), cv2.LINE_AA)

    def attenuation(self, motion: Motion, frame: int) -> np.ndarray:
        size, mg = motion.size, self.margin
        out = np.zeros((size, size), np.float32)
        still = np.array([[1, 0, mg], [0, 1, mg]], np.float32)
        for layer, gain, pulse in ((self.chest, self.resp_gain[0], 0.0), (self.diaphragm, self.resp_gain[1], 0.0),
                                   (self.heart, self.resp_gain[2], 0.04)):
            m = motion.layer_matrix(frame, mg, gain, pulse, motion.heart_center)
            if np.abs(m - still).max() < 1e-4:  # breath-hold, no pan: a crop, not a warp
                out += layer[mg:mg + size, mg:mg + size]
            else:
                out += cv2.warpAffine(layer, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_REFLECT)
        return out


@dataclass
class Bolus:
    """Contrast concentration over time; distal vessels fill later (front moving at `speed`)."""

    onset: float  # frames, half-opacified
    rise: float
    washout: float
    fall: float
    floor: float  # minimum relative opacity: ground truth stays visible
    peak: float
    speed: float  # pixels per frame along the tree

    def injection(self, frame) -> np.ndarray:
        rise = 1 / (1 + np.exp(-(frame - self.onset) / self.rise))
        return rise * (1 - 1 / (1 + np.exp(-(frame - self.washout) / self.fall)))

    def level(self, frame: float, arc: np.ndarray | float = 0.0) -> np.ndarray:
        return self.peak * (self.floor + (1 - self.floor) * self.injection(frame - np.asarray(arc) / self.speed))


def random_bolus(rng, cfg, num_frames: int, frame_time: float, tree_length: float) -> Bolus:
    t = max(num_frames, 2)
    return Bolus(onset=rng.uniform(*cfg.contrast_onset) * t, rise=rng.uniform(0.03, 0.1) * t + 0.7,
                 washout=rng.uniform(*cfg.contrast_washout) * t, fall=rng.uniform(0.05, 0.15) * t + 0.7,
                 floor=rng.uniform(*cfg.contrast_floor), peak=rng.uniform(0.7, 1.2),
                 speed=max(tree_length, 1.0) / (rng.uniform(0.15, 0.45) / frame_time))


def _densify(obj: SceneObject, pts: np.ndarray, max_step: float = 0.6):
    """Points every <= max_step pixels along each polyline, with their index into the object arrays."""
    seg = np.flatnonzero(~obj.starts[1:])  # segment i joins point i and i + 1
    base = np.arange(len(pts), dtype=np.float64)
    if len(seg) == 0:
        return pts, base
    length = np.linalg.norm(pts[seg + 1] - pts[seg], axis=1).max()
    k = max(1, int(np.ceil(length / max_step)))
    f = np.arange(1, k) / k
    inner = pts[seg, None] + (pts[seg + 1] - pts[seg])[:, None] * f[None, :, None]
    pos = seg[:, None] + f[None, :]  # fractional point index, to interpolate the attributes
    return np.concatenate([pts, inner.reshape(-1, 2)]), np.concatenate([base, pos.ravel()])


def _interp(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    i = np.minimum(pos.astype(np.int64), len(values) - 1)
    j = np.minimum(i + 1, len(values) - 1)
    f = pos - i
    return values[i] * (1 - f) + values[j] * f


def tube_attenuation(obj: SceneObject, pts: np.ndarray, size: int, contrast: float, bolus: Bolus | None,
                     frame: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Attenuation and mask of one object in its bounding box: each pixel takes the radius and
    density of its nearest centerline point (distance transform with labels); groups add up."""
    pad = obj.radius.max() + 2
    x0, y0 = np.maximum(np.floor(pts.min(0) - pad), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + pad), size).astype(int)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    h, w = y1 - y0, x1 - x0
    att = np.zeros((h, w), np.float32)
    mask = np.zeros((h, w), bool)
    for g in np.unique(obj.group):
        sel = obj.group == g
        sub = SceneObject(obj.kind, obj.name, pts[sel], obj.radius[sel], obj.density[sel], obj.arc[sel],
                          obj.starts[sel], obj.group[sel])
        dense, pos = _densify(sub, sub.points)
        ix = np.rint(dense[:, 0]).astype(np.int64) - x0
        iy = np.rint(dense[:, 1]).astype(np.int64) - y0
        keep = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        if not keep.any():
            continue
        flat, pos = iy[keep] * w + ix[keep], pos[keep]
        src = np.full(h * w, 255, np.uint8)
        src[flat] = 0
        dist, lab = cv2.distanceTransformWithLabels(src.reshape(h, w), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(int(lab.max()) + 1, np.int64)
        lut[lab.ravel()[flat]] = np.arange(len(flat))  # label -> a centerline point on that pixel
        inside = dist < sub.radius.max() + 0.5  # candidates; only these need the lookups
        near = pos[lut[lab[inside]]]  # fractional index of the nearest centerline point
        r_out = _interp(sub.radius, near) + 0.5  # +0.5: every pixel whose center is inside is hit
        hit = dist[inside] < r_out
        inside[inside] = hit
        if not hit.any():
            continue
        d, r_out, near = dist[inside], r_out[hit], near[hit]
        chord = 2 * np.sqrt(np.maximum(r_out**2 - d**2, 0))  # path length through a solid cylinder
        dens = _interp(sub.density, near)
        if obj.hollow:  # wall only, plus whatever contrast fills the lumen
            r_in = r_out * obj.hollow
            lumen = 2 * np.sqrt(np.maximum(r_in**2 - d**2, 0))
            chord = (chord - lumen) + lumen * contrast * 0.55
        if obj.contrast and bolus is not None:
            dens = dens * bolus.level(frame, _interp(sub.arc, near))
        if obj.mesh:
            chord = _stent_mesh(d, r_out, _interp(sub.arc, near), obj.radius.max())
        att[inside] += (dens * chord).astype(np.float32)
        mask |= inside
    if not mask.any():
        return None
    return (slice(y0, y1), slice(x0, x1)), att, mask


def _stent_mesh(d, r_out, s, r_max) -> np.ndarray:
    """Projected diamond lattice of a cylindrical stent: both walls, darker where seen edge-on."""
    phi = np.arcsin(np.clip(d / r_out, 0, 0.999))
    cell, crowns, width = max(3.0, 1.1 * r_max), 8, 0.55
    struts = np.zeros_like(d)
    for theta in (phi, np.pi - phi):
        for sign in (1, -1):
            u = s / cell + sign * crowns * theta / (2 * np.pi)
            struts += np.exp(-(((u - np.round(u)) * cell / width) ** 2))
    return (0.15 + struts) / np.maximum(np.cos(phi), 0.3)


class Renderer:
    """Renders frame t of a scene: (grey uint8 image, uint8 labels) from the same moved geometry."""

    def __init__(self, rng: np.random.Generator, cfg, scene: Scene, motion: Motion, collimator: Collimator,
                 num_frames: int, frame_time: float, low_dose: bool):
        size = scene.size
        self.scene, self.motion, self.rng, self.size = scene, motion, rng, size
        self.exposed = collimator.exposed >= 0.5
        self.exposed_u8 = self.exposed.astype(np.uint8)
        self.background = Background(rng, cfg, scene, margin=int(0.25 * size) + 4)
        tree = max((float(o.arc.max()) for o in scene.objects if o.contrast), default=float(size))
        self.bolus = random_bolus(rng, cfg, num_frames, frame_time, tree)
        self.blur = rng.uniform(*cfg.blur) * size / 512
        self.gain, self.level = rng.uniform(85, 125), rng.uniform(125, 175)
        # Per-pixel noise shrinks with the pixel count (binning averages quanta).
        noise_grey = rng.uniform(*cfg.noise) * (2.5 if low_dose else 1.0) * float(np.clip(size / 512, 0.4, 2.0))
        # Correlated (slightly blurred) unit noise: normalise its std back to 1.
        self.noise_blur = 0.5
        k = cv2.getGaussianKernel(5, self.noise_blur)
        self.sigma0 = noise_grey / self.gain / float((k**2).sum())
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        rel = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2
        heel = rng.uniform(-0.08, 0.08) * (xx * np.cos(a := rng.uniform(0, 6.3)) + yy * np.sin(a)) / size
        static = rng.uniform(*cfg.vignetting) * rel + heel
        self.a_ref = float(np.median((self.background.attenuation(motion, 0) + static)[self.exposed]))
        shutter_grey = rng.uniform(15, 55)
        self.static = (static + (self.level - shutter_grey) / self.gain * (1 - collimator.exposed)).astype(np.float32)
        self.sharpen = rng.uniform(0.2, 0.8) if rng.random() < cfg.sharpen_probability else 0.0
        self.sharpen_sigma = rng.uniform(1.5, 3.0) * size / 512

    def render(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        size, motion = self.size, self.motion
        att = self.background.attenuation(motion, frame) + self.static
        labels = np.zeros((size, size), np.uint8)
        fill = float(self.bolus.injection(frame))  # catheters carry contrast while injecting
        objects = self.scene.objects
        order = sorted(range(len(objects)), key=lambda i: objects[i].layer)
        layered = [(i, objects[i]) for i in order] + [(-1, extra) for extra in self.scene.extras]
        for i, obj in layered:
            hit = tube_attenuation(obj, motion.warp_points(obj.points, frame), size, fill, self.bolus, frame)
            if hit is None:
                continue
            box, a, m = hit
            att[box] += a
            if i >= 0:
                labels[box][m] = i + 1  # sorted by layer: the top object is written last
        if self.blur > 0.05:  # detector / focal-spot blur
            att = cv2.GaussianBlur(att, (0, 0), self.blur)
        noise = self.rng.standard_normal((size, size), dtype=np.float32)
        noise = cv2.GaussianBlur(noise, (5, 5), self.noise_blur)
        # Quantum noise: std of log-intensity ~ 1/sqrt(photons) ~ exp(A/2).
        att += noise * (self.sigma0 * np.exp(np.minimum(att - self.a_ref, 4.0) * 0.5))
        if self.sharpen:  # unsharp masking, as XA image processing does
            att += self.sharpen * (att - cv2.GaussianBlur(att, (0, 0), self.sharpen_sigma))
        grey = self.level - self.gain * (att - self.a_ref)
        labels *= self.exposed_u8  # nothing is visible (so nothing is labelled) under the shutters
        np.clip(grey + 0.5, 0, 255, out=grey)
        return grey.astype(np.uint8), labels
