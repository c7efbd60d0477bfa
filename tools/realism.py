"""How close synthetic frames come to real XA: grey-level histograms and noise power spectra (NPS).

    python tools/realism.py                       # v2 (and v1 for reference) against ../shared/data/xa-phantom
    python tools/realism.py --videos 8 --frames 12 --out docs/images/synth_v2_vs_phantom.png

The real reference is the static XA phantom (GE, 512x512, 8-bit, real detector noise and processing),
read with XRayVOSLib.io.read_cine. For every source the same estimators run:
- histogram: grey levels of the exposed field (shutters excluded) over all frames; distance to the real
  histogram as the Wasserstein-1 distance in grey levels, raw and after z-scoring (shape only);
- noise: the difference of consecutive frames in 64x64 regions free of labelled objects, plane-detrended,
  divided by sqrt(2) (two frames' noise). The phantom is static, so there it is pure noise; for the
  synthetic sources cines of the same seeds are drawn with every motion and the bolus frozen (a static
  scene imaged by the synthetic detector), so the difference is noise too. NPS is the radially averaged
  periodogram (Hann window); reported as the noise std (median over regions), the log-log slope over
  0.05-0.45 cycles/pixel and the ratio of high (0.3-0.5) to low (0.05-0.15) frequency power (1 for white
  noise, lower when blurred/correlated).
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import wasserstein_distance

ROI = 64


def shared_dir() -> Path:
    return Path(os.environ.get("XRAYVOS_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


def field_mask(frames: np.ndarray) -> np.ndarray:
    """Exposed field of a real cine: where the time-mean is not shutter-dark, eroded off the soft edge."""
    mean = cv2.GaussianBlur(frames.mean(0).astype(np.float32), (0, 0), 6)
    mask = (mean > 0.5 * np.median(mean)).astype(np.uint8)
    return cv2.erode(mask, np.ones((25, 25), np.uint8)) > 0


def radial_nps(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS [bins] of noise patches [K, ROI, ROI] (grey^2 per unit frequency)."""
    win = np.outer(np.hanning(ROI), np.hanning(ROI))
    spec = np.abs(np.fft.fftshift(np.fft.fft2(patches * win), axes=(1, 2))) ** 2 / (win**2).sum()
    spec = spec.mean(0)
    f = np.fft.fftshift(np.fft.fftfreq(ROI))
    rad = np.hypot(*np.meshgrid(f, f))
    edges = np.linspace(0, 0.5, 21)
    idx = np.digitize(rad.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < 20)
    nps = np.bincount(idx[ok], spec.ravel()[ok], 20) / np.maximum(np.bincount(idx[ok], minlength=20), 1)
    return (edges[:-1] + edges[1:]) / 2, nps


def noise_patches(frames: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Plane-detrended half-differences of consecutive frames in ROIs where `usable` [T, H, W] holds."""
    yy, xx = np.mgrid[0:ROI, 0:ROI].astype(np.float64)
    design = np.stack([np.ones(ROI * ROI), xx.ravel(), yy.ravel()], 1)
    out = []
    for t in range(len(frames) - 1):
        diff = (frames[t + 1].astype(np.float64) - frames[t].astype(np.float64)) / np.sqrt(2)
        for y in range(0, frames.shape[1] - ROI + 1, ROI):
            for x in range(0, frames.shape[2] - ROI + 1, ROI):
                if usable[t, y:y + ROI, x:x + ROI].all() and usable[t + 1, y:y + ROI, x:x + ROI].all():
                    p = diff[y:y + ROI, x:x + ROI].ravel()
                    out.append((p - design @ np.linalg.lstsq(design, p, rcond=None)[0]).reshape(ROI, ROI))
    if not out:
        raise SystemExit("realism: no object-free 64x64 region to measure noise in")
    patches = np.stack(out)
    var = patches.var(axis=(1, 2))
    return patches[var <= np.median(var) * 1.5]  # drop regions where something moved through


def measure(frames: np.ndarray, usable: np.ndarray) -> dict:
    """Histogram, noise std, NPS slope and HF/LF ratio of one source (frames [T, H, W] uint8)."""
    grey = frames[usable].astype(np.float64)
    patches = noise_patches(frames, usable)
    f, nps = radial_nps(patches)
    band = (f > 0.05) & (f < 0.45)
    slope = float(np.polyfit(np.log10(f[band]), np.log10(np.maximum(nps[band], 1e-9)), 1)[0])
    hf, lf = nps[(f > 0.3) & (f < 0.5)].mean(), nps[(f > 0.05) & (f < 0.15)].mean()
    sub = grey[:: max(1, grey.size // 400_000)]
    return {"grey": sub, "noise_std": float(np.median(patches.std(axis=(1, 2)))), "nps_slope": slope,
            "hf_lf": float(hf / lf),
            "freq": f, "nps": nps, "p5_50_95": np.percentile(grey, [5, 50, 95]).round(1).tolist()}


def real_sources(folder: Path) -> tuple[dict, np.ndarray]:
    from XRayVOSLib.io import read_cine

    paths = sorted(glob.glob(str(folder / "*.dcm")))
    if not paths:
        raise SystemExit(f"realism: no *.dcm in {folder}")
    frames, usable = [], []
    for p in paths:
        cine = np.asarray(read_cine(p).frames)
        if cine.dtype != np.uint8:
            cine = np.clip(cine, 0, 255).astype(np.uint8)
        mask = field_mask(cine)
        frames.append(cine)
        usable.append(np.broadcast_to(mask, cine.shape))
    stats = [measure(f, u) for f, u in zip(frames, usable, strict=True)]
    pooled = {"grey": np.concatenate([s["grey"] for s in stats]),
              **{k: float(np.mean([s[k] for s in stats])) for k in ("noise_std", "nps_slope", "hf_lf")},
              "freq": stats[0]["freq"], "nps": np.mean([s["nps"] for s in stats], 0),
              "p5_50_95": np.percentile(np.concatenate([s["grey"] for s in stats]), [5, 50, 95]).round(1).tolist()}
    return pooled, frames[0][0]


def _cines(config, videos: int, frames: int, seed: int) -> list:
    from XRayVOSLib.synth import generate_cine

    return [generate_cine(seed + i, frames, 512, config) for i in range(videos)]


def _free(cine) -> np.ndarray:
    """[T, H, W] exposed pixels at least 7 px away from every labelled object."""
    free = np.stack([cv2.dilate((lab > 0).astype(np.uint8), np.ones((15, 15), np.uint8)) == 0 for lab in cine.labels])
    return free & (cv2.erode(cine.exposed.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)


def synthetic_source(moving, frozen, videos: int, frames: int, seed: int) -> tuple[dict, np.ndarray]:
    """Histograms of `moving` cines, noise of the same seeds drawn with the `frozen` (motionless) config."""
    cines = _cines(moving, videos, frames, seed)
    still = _cines(frozen, videos, frames, seed)
    grey = np.concatenate([c.frames[_free(c) | (c.labels > 0)].astype(np.float64)[::50] for c in cines])
    noise = [measure(c.frames, _free(c)) for c in still]
    pooled = {"grey": grey, **{k: float(np.mean([s[k] for s in noise])) for k in ("noise_std", "nps_slope", "hf_lf")},
              "freq": noise[0]["freq"], "nps": np.mean([s["nps"] for s in noise], 0),
              "p5_50_95": np.percentile(grey, [5, 50, 95]).round(1).tolist()}
    first = cines[0]
    return pooled, first.frames[getattr(first, "max_opacification_frame", 0)]


def frozen_configs():
    """v2 and v1 configs with every motion and the bolus frozen (for the noise estimate)."""
    from XRayVOSLib.synth import SynthConfig, SynthV2Config

    v2 = SynthV2Config(peak_px=(0.0, 0.0), respiratory_probability=0.0, pan_probability=0.0, washin_probability=0.0,
                       washout_at=(50.0, 60.0))
    v1 = SynthConfig(cardiac_amplitude=(0.0, 0.0), respiratory_probability=0.0, pan_probability=0.0,
                     contrast_onset=(-5.0, -4.0), contrast_washout=(5.0, 6.0))
    return v2, v1


def compare(real: dict, other: dict) -> dict:
    z = lambda g: (g - g.mean()) / (g.std() + 1e-9)  # noqa: E731
    return {"hist_w1": float(wasserstein_distance(real["grey"], other["grey"])),
            "hist_w1_shape": float(wasserstein_distance(z(real["grey"]), z(other["grey"]))),
            "noise_std_ratio": other["noise_std"] / real["noise_std"],
            "nps_slope": other["nps_slope"], "hf_lf": other["hf_lf"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phantom", type=Path, default=shared_dir() / "data" / "xa-phantom")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("docs/images/synth_v2_vs_phantom.png"))
    args = parser.parse_args(argv)
    from XRayVOSLib.synth import SynthConfig, SynthV2Config
    from XRayVOSLib.viz import frame_strip

    real, real_frame = real_sources(args.phantom)
    frozen_v2, frozen_v1 = frozen_configs()
    v2, v2_frame = synthetic_source(SynthV2Config(), frozen_v2, args.videos, args.frames, args.seed)
    v1, _ = synthetic_source(SynthConfig(), frozen_v1, args.videos, args.frames, args.seed)
    print(f"real: {args.phantom} ({real['p5_50_95']} grey p5/p50/p95), synthetic: {args.videos} cines x "
          f"{args.frames} frames at 512, seeds {args.seed}..{args.seed + args.videos - 1}")
    print(f"{'source':8s} {'hist W1':>8s} {'W1 shape':>9s} {'noise std':>10s} {'NPS slope':>10s} {'HF/LF':>7s} "
          f"{'p5/p50/p95':>18s}")
    print(f"{'real':8s} {0.0:8.2f} {0.0:9.3f} {real['noise_std']:10.2f} {real['nps_slope']:10.2f} "
          f"{real['hf_lf']:7.2f} {str(real['p5_50_95']):>18s}")
    for name, src in (("v2", v2), ("v1", v1)):
        c = compare(real, src)
        print(f"{name:8s} {c['hist_w1']:8.2f} {c['hist_w1_shape']:9.3f} {src['noise_std']:10.2f} "
              f"{src['nps_slope']:10.2f} {src['hf_lf']:7.2f} {str(src['p5_50_95']):>18s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture = frame_strip([real_frame, v2_frame], columns=2, gap=8)
    tmp = args.out.with_name(args.out.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"realism: could not write {args.out}")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} (real phantom frame left, v2 frame right)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
