"""Fit the confidence estimator (estimated J per frame and object) on VALIDATION cines and write it into the
package (XRayVOSLib/propagation/confidence_fit.py).

    python tools/fit_confidence.py --val runs/val320 --v1-seeds 5000:16 --v2-seeds 6000:8 \
        --samples /tmp/confidence_samples --write XRayVOSLib/propagation/confidence_fit.py

Cines: a DAVIS-layout validation set (runs/val320: `xrayvos synth --out runs/val320 --videos 8 --frames 30
--size 320 --seed 555`) plus cines drawn in memory from validation seeds (v1 and v2 generators; never the
held-out set, dataset seed 777, nor the v2 hard set, seed 9000). Each cine is propagated from the first frame
and from the first and middle frames, by every profile's method (the shipped pipeline, the network alone,
the baselines). Model: estimated J = sigmoid(w . z + b) on standardised features (confidence.FEATURES, those
constant for a profile dropped), fitted by minimising the cross-entropy against the true J (a fraction in
[0, 1]: quasi-binomial logistic regression) with a small L2 penalty (scipy L-BFGS). The figures printed are
4-fold cross-validated by cine, on validation cines only.
"""

from __future__ import annotations

import argparse
import json
import pprint
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from confidence_data import Cine, Samples, davis_cines, detection_figures, generated_cines, samples_of, support_frames
from XRayVOSLib.propagation.confidence import FEATURES, feature_matrix
from XRayVOSLib.settings import RunSettings

PROFILES = {  # profile -> settings of the run that produces its signals
    "network+fusion": {},  # the shipped pipeline: the model's carried settings
    "network": {"temporal_blend": 0.0, "support_warp": 0.0},
    "flow": {"method": "flow"},
    "flow-support": {"method": "flow-support"},
    "copy": {"method": "copy"},
}
MODES = ("first", "first+middle")
L2 = 1e-3


def profile_method(profile: str) -> Any:
    from XRayVOSLib.methods import make_method

    overrides = PROFILES[profile]
    settings = RunSettings.from_model(None, **overrides) if "method" not in overrides else RunSettings(**overrides)
    return make_method(settings)


def collect(profile: str, cines: Iterable[Cine], log: bool = True) -> Samples:
    """Propagate every cine in every support mode with the profile's method; the scored rows."""
    method = profile_method(profile)
    parts, index = [], 0
    for cine in cines:
        for mode in MODES:
            started = time.perf_counter()
            given = support_frames(cine, mode)
            result = method.propagate_result(cine.frames, {t: cine.labels[t] for t in given})
            parts.append(samples_of(result, cine, index))
            index += 1
            if log:
                print(f"  {profile} {cine.name} {mode}: {len(parts[-1].j)} rows, mean J {parts[-1].j.mean():.3f}, "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
    return Samples.concat(parts)


def fit(samples: Samples, names: tuple[str, ...] = FEATURES) -> dict[str, Any]:
    """The logistic model on the features that vary in `samples` (confidence.Estimator's fields)."""
    from scipy.optimize import minimize

    x = feature_matrix(samples.signals, names)
    varying = [i for i in range(len(names)) if np.std(x[:, i]) > 1e-6]
    names, x = tuple(names[i] for i in varying), x[:, varying]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / scale
    y = np.clip(samples.j, 1e-4, 1 - 1e-4)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logit = z @ theta[:-1] + theta[-1]
        p = 1 / (1 + np.exp(-logit))
        nll = np.mean(np.logaddexp(0, logit) - y * logit)
        grad = np.append(z.T @ (p - y), np.sum(p - y)) / len(y)
        grad[:-1] += L2 * theta[:-1]
        return float(nll + 0.5 * L2 * theta[:-1] @ theta[:-1]), grad

    theta = minimize(loss, np.zeros(len(names) + 1), jac=True, method="L-BFGS-B").x
    return {"features": list(names), "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "weights": theta[:-1].round(6).tolist(), "bias": round(float(theta[-1]), 6)}


def estimate(model: dict[str, Any], samples: Samples) -> np.ndarray:
    from XRayVOSLib.propagation.confidence import Estimator

    return Estimator({"name": "fit", **model})(samples.signals).astype(np.float64)


def subset(samples: Samples, keep: np.ndarray) -> Samples:
    return Samples({n: v[keep] for n, v in samples.signals.items()}, samples.j[keep], samples.cine[keep],
                   samples.frame[keep], samples.estimate[keep])


def cross_validated(samples: Samples, folds: int = 4) -> dict[str, float]:
    """Detection figures of models fitted without the cine (run) group they are scored on."""
    group = (samples.cine // len(MODES)) % folds  # both support modes of a cine stay in one fold
    predicted = np.full(len(samples.j), np.nan)
    for f in range(folds):
        test = group == f
        predicted[test] = estimate(fit(subset(samples, ~test)), subset(samples, test))
    return detection_figures(predicted, samples.j)


def load_or_collect(profile: str, cines: list[Cine], folder: Path | None) -> Samples:
    path = folder / f"{profile}.npz" if folder is not None else None
    if path is not None and path.is_file():
        return Samples.load(path)
    samples = collect(profile, cines)
    if path is not None:
        folder.mkdir(parents=True, exist_ok=True)
        samples.save(path)
    return samples


def write_fits(path: Path, fits: dict[str, Any], command: str) -> None:
    text = (f'"""Fitted confidence estimators (confidence.Estimator), one per method profile (PassMethod.confidence_'
            f'profile).\n\nWritten by tools/fit_confidence.py on validation cines only; do not edit by hand:\n\n'
            f'    {command}\n\nPer profile: rows (frame x object), and the 4-fold cross-validated (by cine) AUROC for '
            f'true J < 0.7\nand Spearman rho with the true J, under "validation".\n"""\n\n'
            f'FITS: dict = {pprint.pformat(fits, width=112, sort_dicts=False)}\n')
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", action="append", default=[], help="a DAVIS-layout validation set (repeatable)")
    parser.add_argument("--v1-seeds", default="", help="FIRST:COUNT v1 validation cines drawn in memory")
    parser.add_argument("--v2-seeds", default="", help="FIRST:COUNT v2 validation cines drawn in memory")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--samples", type=Path, help="folder keeping the collected rows per profile (reused)")
    parser.add_argument("--write", type=Path, help="the confidence_fit.py to write")
    args = parser.parse_args(argv)
    cines = [c for root in args.val for c in davis_cines(root)]
    for generator, spec in (("v1", args.v1_seeds), ("v2", args.v2_seeds)):
        if spec:
            first, count = (int(v) for v in spec.split(":"))
            cines += list(generated_cines(first, count, args.frames, args.size, generator))
    fits = {}
    for profile in args.profiles.split(","):
        samples = load_or_collect(profile, cines, args.samples)
        model = fit(samples)
        figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in cross_validated(samples).items()}
        print(profile, json.dumps(figures), flush=True)
        fits[profile] = {"name": f"{profile}-v1", **model, "validation": figures}
    if args.write:
        command = "python tools/fit_confidence.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
        write_fits(args.write, fits, command)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
