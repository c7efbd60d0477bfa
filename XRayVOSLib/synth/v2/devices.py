"""Devices and unlabelled distractors of synthetic angiography v2, as 3D tubes (see anatomy.py).

The guide catheter comes up the aorta (femoral) or from the right arm (radial) and engages the
ostium; the guidewire runs through it and down one branch; balloons and stents sit on the wire.
Pacing leads and sternal wires are drawn but never labelled.
"""

from __future__ import annotations

import numpy as np

from XRayVOSLib.synth.anatomy import BALLOON, CATHETER, GUIDEWIRE, STENT
from XRayVOSLib.synth.v2.anatomy import (
    MU_CATHETER_WALL,
    MU_PLATINUM,
    MU_STENT,
    MU_WIRE,
    CoronaryTree,
    Heart,
    Tube,
    TubeBuilder,
    aortic_root,
    arclength,
    resample,
    spline,
)

PACING_LEAD, STERNAL_WIRE = "pacing lead", "sternal wire"


def catheter(rng: np.random.Generator, heart: Heart, tree: CoronaryTree, name: str = CATHETER) -> Tube:
    """Guide catheter (5-7 F, hollow) from outside the field, over the arch, into the ostium."""
    a, o = aortic_root(heart), tree.ostium
    if rng.random() < 0.6:  # femoral: up the descending aorta, over the arch
        rel = [(35, 55, -240), (35, 55, -60), (25, 45, 55), (5, 20, 78), (-10, 2, 45)]
    else:  # right radial: subclavian and brachiocephalic arteries
        rel = [(-220, 10, 115), (-70, 12, 100), (-25, 6, 72), (-12, 2, 42)]
    pts = np.array(rel, float) + a + rng.normal(0, 4, (len(rel), 3))
    pts = np.concatenate([pts, [a + 0.5 * (o - a) + np.array([0, 0, 8.0]), o]])
    path = spline(pts)
    from_tip = arclength(path)[-1] - arclength(path)
    mu = np.full(len(path), MU_CATHETER_WALL * rng.uniform(0.8, 1.3))
    mu[from_tip < 3.0] *= 2.0  # radio-opaque tip marker
    b = TubeBuilder()
    b.add(path, rng.uniform(0.83, 1.17), mu, cardiac=np.exp(-from_tip / 45.0),
          breathing=0.6 + 0.4 * np.exp(-from_tip / 80))
    return b.build(CATHETER, name, hollow=rng.uniform(0.7, 0.82))


def _perpendicular(pts: np.ndarray) -> np.ndarray:
    t = np.gradient(pts, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-9
    n = np.cross(t, np.array([0.3, 0.5, 0.8]))
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-9)


def guidewire(rng, cath: Tube, route: np.ndarray, route_r: np.ndarray, name: str = GUIDEWIRE) -> Tube:
    """0.014-inch wire inside the catheter, then along the vessel, hugging one wall, opaque coil tip."""
    off = 0.5 * route_r * np.sin(arclength(route) / rng.uniform(12, 30) + rng.uniform(0, 6.3))
    vessel = route + _perpendicular(route) * off[:, None]
    if rng.random() < 0.2:  # the tip has run past the opacified lumen
        d = vessel[-1] - vessel[-6]
        vessel = np.concatenate([vessel, vessel[-1] + np.outer(np.arange(1, 20) * 0.6, d / np.linalg.norm(d))])
    inner = cath.points[:-1] + _perpendicular(cath.points[:-1]) * rng.uniform(-0.3, 0.3)
    pts = np.concatenate([inner, vessel])
    arc = arclength(pts)
    tip = arc > arc[-1] - rng.uniform(25, 35)
    mu = np.where(tip, 1.5, 1.0) * MU_WIRE
    radius = np.where(tip, 0.22, 0.18)
    cardiac = np.concatenate([cath.cardiac[:-1], np.ones(len(vessel))])
    breathing = np.concatenate([cath.breathing[:-1], np.ones(len(vessel))])
    b = TubeBuilder()
    b.add(pts, radius, mu, arc, cardiac=cardiac, breathing=breathing)
    return b.build(GUIDEWIRE, name)


def _section(rng, route: np.ndarray, length: float, taken: list[tuple[int, int]]) -> tuple[int, int] | None:
    arc = arclength(route)
    for _ in range(30):
        a = rng.uniform(15, max(16, arc[-1] * 0.85 - length))
        i0, i1 = int(np.searchsorted(arc, a)), int(np.searchsorted(arc, a + length))
        if i1 - i0 >= 6 and i1 < len(route) and all(i1 < t0 or i0 > t1 for t0, t1 in taken):
            taken.append((i0, i1))
            return i0, i1
    return None


def balloon(rng, route, route_r, taken, name: str = BALLOON) -> Tube | None:
    """Inflated (contrast-filled, tapered) or deflated balloon with two platinum marker bands."""
    sec = _section(rng, route, rng.uniform(12, 25), taken)
    if sec is None:
        return None
    pts, r = route[sec[0]:sec[1]], route_r[sec[0]:sec[1]]
    u = np.linspace(0, 1, len(pts))
    shoulder = np.clip(np.minimum(u, 1 - u) / 0.12, 0, 1) ** 0.5
    if rng.random() < 0.6:
        body, mu = float(np.median(r)) * rng.uniform(1.1, 1.35), rng.uniform(0.05, 0.1)
    else:
        body, mu = 0.5, 0.5  # folded balloon on its shaft
    b = TubeBuilder()
    b.add(pts, np.maximum(body * shoulder, 0.45), mu)
    for k in (int(0.1 * len(pts)), int(0.9 * len(pts))):
        b.add(pts[k:k + 3], 0.45, MU_PLATINUM, group=1)
    return b.build(BALLOON, name)


def stent(rng, route, route_r, taken, name: str = STENT) -> Tube | None:
    sec = _section(rng, route, rng.uniform(10, 30), taken)
    if sec is None:
        return None
    pts, r = route[sec[0]:sec[1]], route_r[sec[0]:sec[1]]
    b = TubeBuilder()
    b.add(pts, r * rng.uniform(1.0, 1.12) + 0.1, MU_STENT * rng.uniform(0.6, 1.2))
    return b.build(STENT, name, mesh=True)


def pacing_lead(rng, heart: Heart) -> Tube:
    """Transvenous lead: left subclavian vein, SVC, right atrium, tip in the RV apex (moves with the heart)."""
    a = aortic_root(heart)
    rel = [(160, -20, 150), (80, -10, 130), (10, 0, 105), (-30, 12, 55), (-38, 10, -5)]
    pts = np.array(rel, float) + a + rng.normal(0, 5, (len(rel), 3))
    apex = heart.to_world(heart.surface(np.array([0.35]), np.array([-0.7]), lift=-8.0))[0]
    path = spline(np.concatenate([pts, [apex]]))
    from_tip = arclength(path)[-1] - arclength(path)
    mu = np.where(from_tip < 10, 1.5, 0.5)
    b = TubeBuilder()
    b.add(path, np.where(from_tip < 10, 1.1, 0.9), mu, cardiac=np.clip(1.2 - from_tip / 120, 0, 1), breathing=0.8)
    return b.build(PACING_LEAD, "pacing lead")


def sternal_wires(rng, heart: Heart) -> Tube:
    """Cerclage loops around the sternum of an operated chest (anterior, move with breathing only)."""
    a = aortic_root(heart)
    b = TubeBuilder()
    y = heart.center[1] - heart.radius - rng.uniform(20, 35)
    for k in range(int(rng.integers(4, 8))):
        z = a[2] + 40 - k * rng.uniform(20, 26)
        ang = np.linspace(0, 2 * np.pi, 60)
        loop = np.stack([rng.normal(0, 4) + rng.uniform(10, 16) * np.cos(ang), y + 5 * np.sin(ang),
                         z + rng.normal(0, 1.5) + 1.5 * np.sin(3 * ang)], 1)
        twist = loop[:1] + np.stack([np.zeros(8), -np.linspace(0, 8, 8), 1.2 * np.sin(np.arange(8) * 2.5)], 1)
        b.add(resample(np.concatenate([loop, twist])), 0.4, 2.0, cardiac=0.0, breathing=0.4)
    return b.build(STERNAL_WIRE, "sternal wires")
