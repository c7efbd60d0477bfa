"""Object geometry of a synthetic angiogram: vessel trees, catheters, guidewires and devices.

Every object is a set of polylines (points in pixels, x then y) with per-point radius, density and
arc length. Motion moves the points and render.py rasterises them, so each frame's labels and pixels
come from the same geometry and match exactly.

Lengths are in pixels of a 512-pixel image multiplied by `scale` (= size / 512 * zoom), so anatomy
looks the same at every image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VESSEL = "vessel tree"
CATHETER = "catheter"
GUIDEWIRE = "guidewire"
BALLOON = "balloon"
STENT = "stent"
MARKERS = "marker spheres"
ELECTRODE = "electrode catheter"
ALL_KINDS: tuple[str, ...] = (VESSEL, CATHETER, GUIDEWIRE, BALLOON, STENT, MARKERS, ELECTRODE)

# Ground-truth stacking: where objects overlap, the pixel goes to the highest layer
# (guidewire > balloon/stent/markers > catheters > vessel tree); equal layers: later object wins.
LAYER = {VESSEL: 0, CATHETER: 1, ELECTRODE: 1, BALLOON: 2, STENT: 2, MARKERS: 2, GUIDEWIRE: 3}

# Attenuation per pixel of path length at scale 1 (divided by scale, so contrast is size-free).
MU_VESSEL, MU_CATHETER, MU_WIRE, MU_MARKER = 0.11, 0.12, 0.4, 0.38


@dataclass
class SceneObject:
    kind: str
    name: str
    points: np.ndarray  # [N, 2] float64, x then y, pixels
    radius: np.ndarray  # [N] pixels
    density: np.ndarray  # [N] attenuation per pixel of path length
    arc: np.ndarray  # [N] path length from the object's root, pixels (bolus delay, stent mesh)
    starts: np.ndarray  # [N] bool: True where a new polyline begins (no segment from point i-1)
    group: np.ndarray  # [N] int: overlapping parts of different groups add up (vessel crossings)
    hollow: float = 0.0  # lumen/outer radius of a tube wall (catheters look like tram tracks)
    contrast: bool = False  # density follows the contrast bolus (vessels)
    mesh: bool = False  # stent strut pattern

    @property
    def layer(self) -> int:
        return LAYER[self.kind]


class _Polylines:
    """Accumulates polylines of one object."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, pts, radius, density, arc=None, group: int = 0) -> None:
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        n = len(pts)
        arc = _arclength(pts) if arc is None else np.asarray(arc, np.float64)
        starts = np.zeros(n, bool)
        starts[0] = True
        self.parts.append((pts, np.broadcast_to(radius, (n,)).astype(np.float64),
                           np.broadcast_to(density, (n,)).astype(np.float64), arc, starts,
                           np.full(n, group, np.int32)))

    def build(self, kind: str, name: str, **kw) -> SceneObject:
        cols = [np.concatenate(c) for c in zip(*self.parts, strict=True)]
        return SceneObject(kind, name, *cols, **kw)


@dataclass
class Branch:
    points: np.ndarray
    radius: np.ndarray
    arc: np.ndarray  # from the tree root
    parent: int  # -1 for the root branch
    attach: int  # index on the parent where this branch leaves it
    depth: int


@dataclass
class Scene:
    size: int
    scale: float
    spacing: float  # mm per pixel
    heart_center: np.ndarray
    field: tuple[float, float, float, float]  # exposed (collimated) region x0, y0, x1, y1
    objects: list[SceneObject] = field(default_factory=list)
    extras: list[SceneObject] = field(default_factory=list)  # rendered but not labelled
    tree: list[Branch] = field(default_factory=list)  # the coronary tree, drawn or not
    ostium: np.ndarray = field(default_factory=lambda: np.zeros(2))


def _arclength(pts: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def _resample(pts: np.ndarray, step: float) -> np.ndarray:
    arc = _arclength(pts)
    s = np.arange(0.0, arc[-1] + 1e-9, step) if arc[-1] > 0 else np.zeros(1)
    return np.stack([np.interp(s, arc, pts[:, 0]), np.interp(s, arc, pts[:, 1])], 1)


def _bezier(ctrl: np.ndarray, step: float) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 400)[:, None]
    p0, p1, p2, p3 = ctrl
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return _resample(curve, step)


def _normals(pts: np.ndarray) -> np.ndarray:
    tangent = np.gradient(pts, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    return np.stack([-tangent[:, 1], tangent[:, 0]], 1)


def _wander(rng, start, angle, length, step, bend, size) -> np.ndarray:
    """A smooth random path: steady bend (vessels wrap the heart) plus a few tortuous wiggles."""
    n = max(3, int(length / step) + 1)
    s = np.arange(n) * step
    theta = angle + bend * s
    for lam, amp in ((rng.uniform(0.12, 0.45), 0.3), (rng.uniform(0.04, 0.1), 0.12)):
        phase = rng.uniform(0, 2 * np.pi)
        theta += rng.uniform(0.3, 1.0) * amp * (np.sin(2 * np.pi * s / (lam * size) + phase) - np.sin(phase))
    steps = step * np.stack([np.cos(theta), np.sin(theta)], 1)
    return np.asarray(start, np.float64) + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], 0)])


def _inside(pts: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    return (pts[:, 0] >= box[0]) & (pts[:, 0] <= box[2]) & (pts[:, 1] >= box[1]) & (pts[:, 1] <= box[3])


def vessel_tree(rng, root, angle, scale, size, style: str, max_branches: int = 40) -> list[Branch]:
    """Recursive coronary-like tree: tapering branches, side branches at 25-75 degrees, stenoses."""
    step = 1.6 * max(scale, 0.4)
    r_min = max(0.55, 0.9 * scale)
    bounds = (-0.1 * size, -0.1 * size, 1.1 * size, 1.1 * size)  # vessels may leave the image
    branches: list[Branch] = []

    def grow(start, ang, r0, length, bend, parent, attach, depth, arc0):
        if len(branches) >= max_branches or length < 8 * step or r0 < r_min:
            return
        pts = _wander(rng, start, ang, length, step, bend, size)
        n_in = int(np.argmin(_inside(pts, bounds))) if not _inside(pts, bounds).all() else len(pts)
        pts = pts[:n_in]
        if len(pts) < 6:
            return
        s = _arclength(pts)
        radius = r0 * (1 - (1 - rng.uniform(0.35, 0.6)) * s / max(length, 1))
        if depth <= 1 and rng.random() < 0.35:  # focal stenosis
            radius *= 1 - rng.uniform(0.3, 0.7) * np.exp(-(((s - rng.uniform(0.2, 0.7) * s[-1]) / (3 * r0)) ** 2))
        radius = np.maximum(radius, r_min)
        branches.append(Branch(pts, radius, arc0 + s, parent, attach, depth))
        me = len(branches) - 1
        if depth >= 4 or r0 < 1.5 * r_min:
            return
        n_kids = int(rng.poisson(max(s[-1], 1) / (0.16 * size / (1 + 0.3 * depth))))
        side = rng.choice([-1, 1])
        for pos in np.sort(rng.uniform(0.12, 0.88, n_kids)):
            i = int(pos * (len(pts) - 1))
            tangent = pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)]
            a = np.arctan2(tangent[1], tangent[0]) + side * np.deg2rad(rng.uniform(25, 75))
            side = -side if rng.random() < 0.8 else side
            # Start at the parent wall so crossings-of-groups do not darken the junction.
            kid_start = pts[i] + 0.6 * radius[i] * np.array([np.cos(a), np.sin(a)])
            kid_len = (s[-1] - s[i]) * rng.uniform(0.45, 1.0) + rng.uniform(0.05, 0.15) * size
            grow(kid_start, a, radius[i] * rng.uniform(0.5, 0.8), kid_len,
                 rng.uniform(-1.0, 1.0) / size, me, i, depth + 1, arc0 + s[i])

    r_root = max(rng.uniform(3.0, 4.5) * scale, 2.0 * r_min)  # small images: still a visible tree
    turn = rng.choice([-1, 1])
    if style == "right":  # RCA-like: one long C-shaped vessel with short marginals
        grow(root, angle, r_root, rng.uniform(0.8, 1.2) * size, turn * rng.uniform(1.6, 2.8) / size, -1, 0, 0, 0.0)
    else:  # left main splitting into LAD / LCx (sometimes a ramus)
        lm = _wander(rng, root, angle, rng.uniform(0.05, 0.1) * size, step, 0.0, size)
        s = _arclength(lm)
        branches.append(Branch(lm, np.full(len(lm), r_root), s, -1, 0, 0))
        end_angle = np.arctan2(*(lm[-1] - lm[-2])[::-1])
        daughters = ((rng.uniform(15, 45), rng.uniform(0.6, 0.9), rng.uniform(0.3, 1.2)),  # LAD
                     (-rng.uniform(40, 85), rng.uniform(0.4, 0.7), -rng.uniform(0.8, 2.2)),  # LCx
                     (rng.uniform(-20, 10), rng.uniform(0.3, 0.5), rng.uniform(-0.5, 0.5)))  # ramus
        for k, (dev, length, bend) in enumerate(daughters):
            if k == 2 and rng.random() < 0.6:
                break
            grow(lm[-1], end_angle + turn * np.deg2rad(dev), r_root * rng.uniform(0.7, 0.9),
                 length * size, turn * bend / size, 0, len(lm) - 1, 1, s[-1])
    return branches


def tree_object(branches: list[Branch], scale: float, name: str) -> SceneObject:
    poly = _Polylines()
    for i, b in enumerate(branches):
        top = i
        while branches[top].depth > 1:  # group = which first-level subtree (LAD/LCx) it is in
            top = branches[top].parent
        group = top % 2 if branches[top].depth == 1 else 0
        poly.add(b.points, b.radius, MU_VESSEL / scale, b.arc, group)
    return poly.build(VESSEL, name, contrast=True)


def tree_path(rng, branches: list[Branch]) -> tuple[np.ndarray, np.ndarray]:
    """Centerline and radius from the ostium to a distal point of one long branch (where wires go)."""
    long = [i for i, b in enumerate(branches) if b.depth <= 2 and b.arc[-1] - b.arc[0] > 10 * b.radius[0]]
    i = int(rng.choice(long)) if long else 0
    chain, cut = [], len(branches[i].points)
    while i >= 0:
        b = branches[i]
        chain.append((b.points[:cut], b.radius[:cut]))
        cut, i = b.attach + 1, b.parent
    pts = np.concatenate([c[0] for c in chain[::-1]])
    rad = np.concatenate([c[1] for c in chain[::-1]])
    keep = max(6, int(len(pts) * rng.uniform(0.75, 1.0)))
    return pts[:keep], rad[:keep]


def rail(pts: np.ndarray, radius: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """A vessel centerline resampled every `step` pixels, with its radius."""
    out = _resample(pts, step)
    if len(out) > 9:  # smooth the kinks where a branch leaves its parent
        k = np.ones(7) / 7
        out[3:-3] = np.stack([np.convolve(out[:, 0], k, "valid"), np.convolve(out[:, 1], k, "valid")], 1)
    return out, np.interp(_arclength(out), _arclength(pts), radius)


def edge_entry(rng, target, away, size) -> np.ndarray:
    """Where a tube aimed at `target` from direction `away` enters: just outside the image edge."""
    ang = np.arctan2(away[1], away[0]) + rng.uniform(-0.6, 0.6)
    d = np.array([np.cos(ang), np.sin(ang)])
    with np.errstate(divide="ignore"):
        t = np.min([((size * (d[k] > 0)) - target[k]) / d[k] for k in (0, 1) if abs(d[k]) > 1e-6])
    return target + d * (t + 0.06 * size)


def catheter(rng, ostium, direction, scale, size, step, name) -> tuple[SceneObject, np.ndarray]:
    entry = edge_entry(rng, ostium, -direction, size)
    inward = (ostium - entry) / np.linalg.norm(ostium - entry)
    ctrl = np.array([entry, entry + inward * rng.uniform(0.2, 0.45) * size,
                     ostium - direction * rng.uniform(0.08, 0.2) * size, ostium])
    pts = _bezier(ctrl, step)
    arc = _arclength(pts)
    density = np.full(len(pts), MU_CATHETER / scale)
    density[arc > arc[-1] - 4.0 / 0.3 * scale] *= 1.8  # radio-opaque tip (last ~4 mm)
    poly = _Polylines()
    poly.add(pts, max(rng.uniform(2.2, 3.2) * scale, 1.2), density, arc)  # wider than a wire
    return poly.build(CATHETER, name, hollow=rng.uniform(0.6, 0.8)), pts


def guidewire(rng, cath_path, vessel_pts, vessel_r, scale, step, name) -> tuple[SceneObject, np.ndarray, np.ndarray]:
    """Wire from the image edge through the catheter, then along a vessel, hugging its wall."""
    center, vr = rail(vessel_pts, vessel_r, step)
    off = 0.45 * vr * np.sin(np.arange(len(center)) * step / (rng.uniform(20, 60) * scale) + rng.uniform(0, 6.3))
    vessel = center + _normals(center) * off[:, None]
    if rng.random() < 0.25:  # the tip has left the opacified vessel (or runs beyond it)
        d = vessel[-1] - vessel[-4]
        steps = np.arange(1, int(rng.uniform(10, 40) * scale / step) + 2) * step
        extra = vessel[-1] + np.outer(steps, d / np.linalg.norm(d))
        vessel = np.concatenate([vessel, extra])
        vr = np.concatenate([vr, np.full(len(extra), vr[-1])])
    proximal = cath_path[:-1] + _normals(cath_path[:-1]) * rng.uniform(-0.8, 0.8) * scale
    pts = np.concatenate([proximal, vessel])
    arc = _arclength(pts)
    density = np.full(len(pts), MU_WIRE / scale)
    radius = np.full(len(pts), max(0.5, 0.6 * scale))
    tip = arc > arc[-1] - rng.uniform(20, 35) / 0.3 * scale  # radio-opaque coil tip
    density[tip] *= 1.5
    radius[tip] += 0.15 * scale
    poly = _Polylines()
    poly.add(pts, radius, density, arc)
    return poly.build(GUIDEWIRE, name), center, vr[:len(center)]


def _section(rng, path, length, taken: list[tuple[int, int]], box) -> tuple[int, int] | None:
    """A free stretch of `length` pixels of `path` inside `box` (for balloons and stents)."""
    arc = _arclength(path)
    x0, y0, x1, y1 = box
    inner = (x0 + 0.1 * (x1 - x0), y0 + 0.1 * (y1 - y0), x1 - 0.1 * (x1 - x0), y1 - 0.1 * (y1 - y0))
    for _ in range(30):
        a = rng.uniform(0.15, 0.9) * arc[-1] - length
        i0, i1 = int(np.searchsorted(arc, a)), int(np.searchsorted(arc, a + length))
        if (a > 0.05 * arc[-1] and i1 - i0 >= 4 and _inside(path[i0:i1], inner).all()
                and all(i1 < t0 or i0 > t1 for t0, t1 in taken)):
            taken.append((i0, i1))
            return i0, i1
    return None


def balloon(rng, path, vr, scale, spacing, taken, box, name) -> SceneObject | None:
    sec = _section(rng, path, rng.uniform(12, 25) / spacing, taken, box)
    if sec is None:
        return None
    pts, r = path[sec[0]:sec[1]], vr[sec[0]:sec[1]]
    u = np.linspace(0, 1, len(pts))
    shoulder = np.clip(np.minimum(u, 1 - u) / 0.12, 0, 1) ** 0.5  # tapered ends
    body = max(float(np.median(r)) * rng.uniform(1.1, 1.4), rng.uniform(2.5, 4.0) * scale)
    radius = np.maximum(body * shoulder, 0.6 * scale) + 0.3 * scale
    poly = _Polylines()
    poly.add(pts, radius, MU_VESSEL * rng.uniform(0.6, 1.0) / scale)
    for k in (int(0.12 * len(pts)), int(0.88 * len(pts))):  # two marker bands on the inner shaft
        poly.add(pts[k], max(1.2 * scale, 0.7), MU_MARKER / scale, group=1)
    return poly.build(BALLOON, name)


def stent(rng, path, vr, scale, spacing, taken, box, name) -> SceneObject | None:
    sec = _section(rng, path, rng.uniform(10, 30) / spacing, taken, box)
    if sec is None:
        return None
    pts, r = path[sec[0]:sec[1]], vr[sec[0]:sec[1]]
    poly = _Polylines()
    poly.add(pts, r * rng.uniform(1.0, 1.15) + 0.7 * scale, MU_WIRE * rng.uniform(0.5, 0.9) / scale)
    return poly.build(STENT, name, mesh=True)


def markers(rng, scene: Scene, name) -> SceneObject:
    """2-5 dense spheres in a row (calibration / marker catheter), inside the exposed field."""
    x0, y0, x1, y1 = scene.field
    n = int(rng.integers(2, 6))
    gap = rng.uniform(8, 15) / scene.spacing
    ang = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(ang), np.sin(ang)])
    span = gap * (n - 1)
    mx, my = 0.15 * (x1 - x0) + abs(d[0]) * span / 2, 0.15 * (y1 - y0) + abs(d[1]) * span / 2
    center = np.array([rng.uniform(x0 + mx, max(x0 + mx, x1 - mx) + 1e-3),
                       rng.uniform(y0 + my, max(y0 + my, y1 - my) + 1e-3)])
    poly = _Polylines()
    radius = max(rng.uniform(1.5, 3.5) * scene.scale, 1.0)
    for k in range(n):
        poly.add(center + d * (k - (n - 1) / 2) * gap, radius, MU_MARKER / scene.scale)
    return poly.build(MARKERS, name)


def electrode_catheter(rng, scene: Scene, step, name) -> SceneObject:
    """EP catheter: a solid shaft from an image edge, tip with a tip electrode and ring electrodes."""
    size, scale, mm = scene.size, scene.scale, 1.0 / scene.spacing
    tip = scene.heart_center + rng.uniform(-0.22, 0.22, 2) * size
    away = rng.normal(size=2)
    entry = edge_entry(rng, tip, away / np.linalg.norm(away), size)
    inward = (tip - entry) / np.linalg.norm(tip - entry)
    bend = np.array([-inward[1], inward[0]]) * rng.uniform(-0.25, 0.25) * size
    pts = _bezier(np.array([entry, entry + inward * 0.3 * size, tip - inward * 0.2 * size + bend, tip]), step)
    arc = _arclength(pts)
    from_tip = arc[-1] - arc
    density = np.full(len(pts), 0.14 / scale)
    radius = np.full(len(pts), max(rng.uniform(1.4, 2.0) * scale, 0.8))
    ring = from_tip < rng.uniform(2.5, 4) * mm
    gap, width = rng.uniform(2, 5) * mm, rng.uniform(1, 2) * mm
    for k in range(int(rng.integers(3, 10))):
        start = 5 * mm + k * (gap + width)
        ring |= (from_tip > start) & (from_tip < start + width)
    density[ring] = 0.42 / scale
    radius[ring] += 0.3 * scale
    poly = _Polylines()
    poly.add(pts, radius, density, arc)
    return poly.build(ELECTRODE, name)
