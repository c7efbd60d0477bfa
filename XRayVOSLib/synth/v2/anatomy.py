"""3D anatomy of synthetic angiography v2: coronary trees on a heart surface, devices and distractors.

Coordinates are patient millimetres, DICOM LPS: x towards the patient's left, y posterior, z superior.
The ventricles are a half-ellipsoid in a heart-local frame (Z from the apex, Z = -L, to the
atrio-ventricular groove, Z = 0; X towards the anterior interventricular groove), so arteries that run in
the grooves and over the walls wrap around it and foreshorten and cross when projected.

Every structure is a `Tube` (centreline points, radius and attenuation per point); geometry.py moves and
projects the points and the v1 rasteriser (`XRayVOSLib.synth.render.tube_attenuation`) draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from XRayVOSLib.synth.anatomy import VESSEL

R_MIN = 0.35  # smallest lumen radius drawn, mm (0.7 mm diameter)
STEP_MM = 0.6  # centreline sampling; the rasteriser densifies further in pixels
# Linear attenuation (per mm of path) relative to blood and soft tissue, at a typical 70 kVp spectrum.
MU_CONTRAST = (0.09, 0.16)  # undiluted iodine in the lumen (dilution varies per injection)
MU_CATHETER_WALL, MU_WIRE, MU_PLATINUM, MU_STENT = 0.22, 1.4, 3.0, 1.0


@dataclass
class Heart:
    center: np.ndarray  # (3,) world position of the AV-groove centre (local origin)
    rotation: np.ndarray  # (3, 3): columns are the local X, Y, Z axes in world coordinates
    radius: float  # equatorial semi-axis of the ventricles, mm
    length: float  # base-to-apex, mm

    def to_world(self, local: np.ndarray) -> np.ndarray:
        return self.center + local @ self.rotation.T

    def to_local(self, world: np.ndarray) -> np.ndarray:
        return (world - self.center) @ self.rotation

    def surface(self, theta: np.ndarray, phi: np.ndarray, lift: float = 1.5) -> np.ndarray:
        """Local points on the epicardium lifted by `lift` mm; theta 0 = apex, pi/2 = AV groove."""
        r, z = self.radius + lift, self.length + lift
        return np.stack([r * np.sin(theta) * np.cos(phi), r * np.sin(theta) * np.sin(phi), -z * np.cos(theta)], 1)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def random_heart(rng: np.random.Generator) -> Heart:
    """A heart whose long axis points anterior, left and inferior, with a random spin about it."""
    apex_dir = np.array([0.62, -0.45, -0.64]) + rng.normal(0, 0.12, 3)  # base -> apex
    z = -apex_dir / np.linalg.norm(apex_dir)  # local Z points from apex to base
    anterior = np.array([0.0, -1.0, 0.0])
    x = anterior - (anterior @ z) * z
    x /= np.linalg.norm(x)
    x = _rotation(z, rng.uniform(-0.35, 0.35)) @ x
    rot = np.stack([x, np.cross(z, x), z], 1)  # local Y = Z x X: towards the left-lateral (LV free) wall
    center = np.array([25.0, 0.0, 0.0]) + rng.normal(0, 5, 3)  # left of the midline
    return Heart(center=center, rotation=rot, radius=rng.uniform(36, 46), length=rng.uniform(75, 95))


@dataclass
class Tube:
    """A structure as centrelines: per-point radius (mm), attenuation (per mm), arc (mm from its root)."""

    kind: str
    name: str
    points: np.ndarray  # [N, 3] world mm at end-diastole
    radius: np.ndarray
    mu: np.ndarray
    arc: np.ndarray
    starts: np.ndarray  # [N] bool: a new polyline begins here
    group: np.ndarray  # [N] int: parts of different groups add up where they overlap in projection
    cardiac: np.ndarray  # [N] share of the heart's motion (1 on the heart, 0 away from it)
    breathing: np.ndarray  # [N] share of the respiratory shift
    hollow: float = 0.0
    mesh: bool = False
    contrast: bool = False  # attenuation follows the bolus (the opacified lumen)


class TubeBuilder:
    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, pts, radius, mu, arc=None, group: int = 0, cardiac=1.0, breathing=1.0) -> None:
        pts = np.asarray(pts, np.float64).reshape(-1, 3)
        n = len(pts)
        arc = arclength(pts) if arc is None else np.asarray(arc, np.float64)
        starts = np.zeros(n, bool)
        starts[0] = True

        def full(v):
            return np.broadcast_to(np.asarray(v, np.float64), (n,)).copy()

        self.parts.append((pts, full(radius), full(mu), arc, starts, np.full(n, group, np.int32), full(cardiac),
                           full(breathing)))

    def build(self, kind: str, name: str, **kw) -> Tube:
        cols = [np.concatenate(c) for c in zip(*self.parts, strict=True)]
        return Tube(kind, name, *cols, **kw)


def arclength(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])


def resample(pts: np.ndarray, step: float = STEP_MM) -> np.ndarray:
    arc = arclength(pts)
    s = np.arange(0.0, arc[-1] + 1e-9, step) if arc[-1] > 0 else np.zeros(1)
    return np.stack([np.interp(s, arc, pts[:, k]) for k in range(pts.shape[1])], 1)


def spline(waypoints: np.ndarray, step: float = STEP_MM) -> np.ndarray:
    """Catmull-Rom curve through 3D waypoints (catheters, leads), resampled every `step` mm."""
    p = np.concatenate([waypoints[:1], waypoints, waypoints[-1:]])
    t = np.linspace(0, 1, 40, endpoint=False)[:, None]
    segs = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        segs.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                           + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return resample(np.concatenate(segs + [waypoints[-1:]]), step)


@dataclass
class Branch:
    name: str
    points: np.ndarray  # [N, 3] world
    radius: np.ndarray  # mm
    arc: np.ndarray  # mm from the ostium
    parent: int
    attach: int  # index on the parent where this branch leaves it
    depth: int
    group: int = 0


@dataclass
class CoronaryTree:
    side: str  # "left" or "right"
    ostium: np.ndarray  # (3,) world
    branches: list[Branch] = field(default_factory=list)

    def add(self, name, local_pts, heart: Heart, r0, r1, parent=-1, attach=0, depth=0, group=0, rng=None):
        pts = resample(heart.to_world(local_pts))
        s = arclength(pts)
        radius = r0 + (r1 - r0) * s / max(s[-1], 1e-6)
        if rng is not None and depth <= 1 and rng.random() < 0.3:  # focal stenosis
            mid, sev = rng.uniform(0.25, 0.75) * s[-1], rng.uniform(0.3, 0.7)
            radius *= 1 - sev * np.exp(-(((s - mid) / (2.5 * r0)) ** 2))
        arc0 = self.branches[parent].arc[attach] if parent >= 0 else 0.0
        self.branches.append(Branch(name, pts, radius, arc0 + s, parent, attach, depth, group))
        return len(self.branches) - 1


def _groove(rng, heart: Heart, theta: tuple[float, float], phi: tuple[float, float], n: int = 200) -> np.ndarray:
    """A surface path from (theta0, phi0) to (theta1, phi1) with two gentle tortuous wiggles."""
    u = np.linspace(0, 1, n)
    th = theta[0] + (theta[1] - theta[0]) * u
    ph = phi[0] + (phi[1] - phi[0]) * u
    for amp, cycles in ((0.05, rng.uniform(1, 2.5)), (0.02, rng.uniform(4, 8))):
        ph = ph + rng.uniform(0.3, 1.0) * amp * np.sin(2 * np.pi * cycles * u + rng.uniform(0, 6.3)) * (u > 0)
        th = th + rng.uniform(0.3, 1.0) * amp * np.sin(2 * np.pi * cycles * u + rng.uniform(0, 6.3)) * (u > 0)
    return heart.surface(th, ph)


def _side_branches(rng, tree, heart, parent: int, prefix: str, count: int, dtheta, dphi, group: int) -> None:
    """Children leaving `parent` at random positions, heading by (dtheta, dphi) over the wall."""
    par = tree.branches[parent]
    local = heart.to_local(par.points)
    theta = np.arccos(np.clip(-local[:, 2] / (heart.length + 1.5), -1, 1))
    phi = np.arctan2(local[:, 1], local[:, 0])
    for k, pos in enumerate(np.sort(rng.uniform(0.12, 0.75, count))):
        i = int(pos * (len(par.points) - 1))
        r0 = par.radius[i] * rng.uniform(0.55, 0.8)
        t1 = theta[i] + rng.uniform(*dtheta)
        p1 = phi[i] + rng.uniform(*dphi)
        pts = _groove(rng, heart, (theta[i], t1), (phi[i], p1), 120)
        pts = pts + (heart.to_local(par.points[i : i + 1]) - pts[0])  # start on the parent's centreline
        tree.add(f"{prefix}{k + 1}", pts, heart, r0, max(r0 * rng.uniform(0.3, 0.5), R_MIN), parent, i,
                 par.depth + 1, group, rng)


def aortic_root(heart: Heart) -> np.ndarray:
    return heart.to_world(np.array([[0.25 * heart.radius, -0.2 * heart.radius, 0.22 * heart.length]]))[0]


def left_tree(rng: np.random.Generator, heart: Heart) -> CoronaryTree:
    """LM -> LAD (anterior interventricular groove, with diagonals) and LCx (left AV groove, marginals)."""
    root = aortic_root(heart)
    ostium = root + heart.rotation @ np.array([0.2, 0.9, 0.0]) * 13
    tree = CoronaryTree("left", ostium)
    r_lm = rng.uniform(1.8, 2.3)  # 3.6-4.6 mm lumen diameter
    phi_b = rng.uniform(0.25, 0.55)
    bif = heart.surface(np.array([np.pi / 2 + 0.08]), np.array([phi_b]))
    lm = np.linspace(heart.to_local(ostium[None])[0], bif[0], 30)
    end = len(tree.branches[tree.add("LM", lm, heart, r_lm, r_lm * 0.95)].points) - 1
    wrap = rng.uniform(-0.35, 0.15)  # the LAD ends before the apex or wraps around it
    lad = _groove(rng, heart, (np.pi / 2 + 0.08, wrap), (phi_b, rng.uniform(-0.15, 0.15)))
    lad_i = tree.add("LAD", lad, heart, r_lm * rng.uniform(0.75, 0.9), R_MIN * rng.uniform(1, 1.4), 0, end, 1, 0,
                     rng)
    lcx_end = phi_b + rng.uniform(1.4, 2.6)
    lcx = _groove(rng, heart, (np.pi / 2 + 0.08, np.pi / 2 + rng.uniform(-0.15, 0.05)), (phi_b, lcx_end))
    lcx_i = tree.add("LCx", lcx, heart, r_lm * rng.uniform(0.65, 0.8), R_MIN * rng.uniform(1, 1.5), 0, end, 1, 2,
                     rng)
    _side_branches(rng, tree, heart, lad_i, "D", int(rng.integers(2, 5)), (-0.9, -0.4), (0.3, 0.9), 1)
    _side_branches(rng, tree, heart, lcx_i, "OM", int(rng.integers(2, 4)), (-1.2, -0.6), (-0.15, 0.25), 3)
    if rng.random() < 0.3:  # ramus intermedius between LAD and LCx
        ram = _groove(rng, heart, (np.pi / 2 + 0.08, np.pi / 2 - rng.uniform(0.7, 1.1)),
                      (phi_b, phi_b + rng.uniform(0.3, 0.7)))
        tree.add("RI", ram, heart, r_lm * 0.6, R_MIN * 1.2, 0, end, 1, 3, rng)
    return tree


def right_tree(rng: np.random.Generator, heart: Heart) -> CoronaryTree:
    """RCA along the right AV groove to the crux, PDA down the posterior groove, acute marginals."""
    root = aortic_root(heart)
    ostium = root + heart.rotation @ np.array([0.7, -0.7, 0.0]) * 12
    tree = CoronaryTree("right", ostium)
    r0 = rng.uniform(1.6, 2.1)
    start = heart.surface(np.array([np.pi / 2 + 0.1]), np.array([-0.5]))
    lead = np.linspace(heart.to_local(ostium[None])[0], start[0], 25)
    crux = -np.pi + rng.uniform(-0.35, 0.25)
    groove = _groove(rng, heart, (np.pi / 2 + 0.1, np.pi / 2 + 0.02), (-0.5, crux), 260)
    rca = tree.add("RCA", np.concatenate([lead, groove[1:]]), heart, r0, r0 * rng.uniform(0.5, 0.65), group=0,
                   rng=rng)
    pda = _groove(rng, heart, (np.pi / 2 + 0.02, rng.uniform(0.25, 0.7)), (crux, crux + rng.uniform(-0.1, 0.1)))
    last = len(tree.branches[rca].points) - 1
    tree.add("PDA", pda, heart, tree.branches[rca].radius[-1] * 0.85, R_MIN * 1.2, rca, last, 1, 1, rng)
    _side_branches(rng, tree, heart, rca, "AM", int(rng.integers(2, 4)), (-1.1, -0.5), (-0.2, 0.2), 1)
    return tree


def tree_tube(tree: CoronaryTree, mu: float, name: str, kind: str = VESSEL) -> Tube:
    b = TubeBuilder()
    for br in tree.branches:
        b.add(br.points, br.radius, mu, br.arc, group=br.group)
    return b.build(kind, name, contrast=True)


def wire_route(rng, tree: CoronaryTree) -> tuple[np.ndarray, np.ndarray]:
    """Centreline and radius from the ostium to the distal part of one long branch (where wires go)."""
    long = [i for i, b in enumerate(tree.branches) if b.depth >= 1 and b.arc[-1] - b.arc[0] > 40]
    i = int(rng.choice(long)) if long else 0
    chain, cut = [], len(tree.branches[i].points)
    while i >= 0:
        br = tree.branches[i]
        chain.append((br.points[:cut], br.radius[:cut]))
        cut, i = br.attach + 1, br.parent
    pts = np.concatenate([c[0] for c in chain[::-1]])
    rad = np.concatenate([c[1] for c in chain[::-1]])
    keep = max(10, int(len(pts) * rng.uniform(0.75, 1.0)))
    return pts[:keep], rad[:keep]
