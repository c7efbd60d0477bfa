"""Measure the confidence estimator on HELD-OUT cines: detection of bad frames, and a simulated review session.

    python tools/review_eval.py --data runs/heldout320 --json /tmp/review_heldout.json
    python tools/review_eval.py --data runs/hard512 --supports-file supports_first.json --no-session ...

Detection: the shipped pipeline (Propagator.load(None)) propagates every cine from its first frame and from
its first and middle frames (or from a protocol supports file beside the set); per frame and object, the
AUROC of the estimated J for true J < 0.7 (a low estimate is the alarm) and Spearman's rho with the true J;
also per frame (estimated J of the frame = its worst object's, true J = the mean over its objects).

Session: from a support on the first frame, three times: pick a frame, paint its ground truth as a new
support (what a clinician's correction is), re-propagate (incrementally: cache.py). The mean J over all
frames (a corrected frame counts with J = 1, it is exact) after 1, 2, 3 corrections, for three ways to
pick: the review queue (lowest estimated J of a frame not yet a support: PropagationResult.review_order),
the frame farthest from every support, and a random frame (averaged over --random-draws draws).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from confidence_data import Cine, Samples, davis_cines, detection_figures, per_frame, samples_of, support_frames, true_j
from XRayVOSLib.evaluation.runner import load_support_frames
from XRayVOSLib.propagation.confidence import PropagationResult

BAD_BELOW = 0.7


def detection(method: Any, cines: list[Cine], modes: list[str], supports_file: dict | None) -> dict[str, Any]:
    out = {}
    for mode in modes if supports_file is None else ["file"]:
        parts = []
        for i, cine in enumerate(cines):
            given = supports_file[cine.name.split("/")[-1]] if supports_file else support_frames(cine, mode)
            result = method.propagate_result(cine.frames, {t: cine.labels[t] for t in given})
            parts.append(samples_of(result, cine, i))
        s = Samples.concat(parts)
        frame_est, frame_j = per_frame(s, s.estimate, "min"), per_frame(s, s.j, "mean")
        out[mode] = {"frame_object": _rounded(detection_figures(s.estimate, s.j, BAD_BELOW)),
                     "frame": _rounded(detection_figures(frame_est, frame_j, BAD_BELOW))}
        print(mode, json.dumps(out[mode]), flush=True)
    return out


def frame_mean_j(result: PropagationResult, cine: Cine) -> float:
    """Mean over frames of the mean J over objects; supports count with their own J (1: they are exact)."""
    j = true_j(result, cine)
    j[result.support_frames] = 1.0
    rows = [np.nanmean(j[t]) for t in range(len(j)) if np.isfinite(j[t]).any()]
    return float(np.mean(rows))


def farthest(result: PropagationResult, rng: np.random.Generator) -> int:
    supports = result.support_frames
    distance = [min(abs(t - s) for s in supports) for t in range(len(result.labels))]
    return int(np.argmax(distance))  # the first of the farthest


def queue(result: PropagationResult, rng: np.random.Generator) -> int:
    return result.review_order()[0]


def queue_mean(result: PropagationResult, rng: np.random.Generator) -> int:
    """The queue variant ranking a frame by the mean estimated J of its objects (not its worst one)."""
    score = np.nanmean(result.confidence, axis=1)
    return min((t for t in range(len(score)) if t not in result.support_frames), key=lambda t: (score[t], t))


def random_frame(result: PropagationResult, rng: np.random.Generator) -> int:
    free = [t for t in range(len(result.labels)) if t not in result.support_frames]
    return int(rng.choice(free))


PICKERS: dict[str, Callable[[PropagationResult, np.random.Generator], int]] = {
    "queue": queue, "farthest": farthest, "random": random_frame, "queue-mean": queue_mean}


def session(method: Any, cine: Cine, pick: Callable, corrections: int, seed: int) -> dict[str, Any]:
    """Mean J after 0..corrections corrections, the frames picked, and the frame visits computed / read back."""
    rng = np.random.default_rng(seed)
    supports = {0: cine.labels[0]}
    scores, picked, steps = [], [], []
    with tempfile.TemporaryDirectory() as cache:
        for k in range(corrections + 1):
            result = method.propagate_result(cine.frames, supports, cache=cache)
            scores.append(frame_mean_j(result, cine))
            steps.append((result.steps.get("computed", 0), result.steps.get("reused", 0)))
            if k < corrections:
                t = pick(result, rng)
                picked.append(t)
                supports[t] = cine.labels[t]
    return {"mean_j": scores, "picked": picked, "steps": steps}


def review_sessions(method: Any, cines: list[Cine], corrections: int, draws: int,
                    pickers: list[str]) -> dict[str, Any]:
    table: dict[str, list[list[float]]] = {name: [] for name in pickers}
    detail: dict[str, Any] = {}
    for cine in cines:
        started = time.perf_counter()
        for name in pickers:
            pick = PICKERS[name]
            runs = [session(method, cine, pick, corrections, seed) for seed in range(draws if name == "random" else 1)]
            table[name].append(np.mean([r["mean_j"] for r in runs], axis=0).tolist())
            detail.setdefault(cine.name, {})[name] = runs if name != "random" else {"mean_j": table[name][-1]}
        print(cine.name, {n: np.round(table[n][-1], 4).tolist() for n in pickers},
              f"{time.perf_counter() - started:.0f} s", flush=True)
    means = {name: np.round(np.mean(rows, axis=0), 4).tolist() for name, rows in table.items()}
    print("mean J after 0..k corrections", json.dumps(means), flush=True)
    return {"mean_j": means, "cines": detail}


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a DAVIS-layout held-out set")
    parser.add_argument("--supports-file", help="a protocol supports JSON beside the set (instead of first, "
                                                "first+middle), e.g. supports_first.json")
    parser.add_argument("--modes", default="first,first+middle")
    parser.add_argument("--no-detection", action="store_true")
    parser.add_argument("--no-session", action="store_true")
    parser.add_argument("--corrections", type=int, default=3)
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument("--videos", type=int, help="only the first N videos")
    parser.add_argument("--pickers", default="queue,farthest,random", help=f"of {', '.join(PICKERS)}")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    from XRayVOSLib.inference.propagator import Propagator

    method = Propagator.load(None)
    cines = list(davis_cines(args.data))[: args.videos]
    supports_file = load_support_frames(Path(args.data) / args.supports_file) if args.supports_file else None
    report: dict[str, Any] = {"data": str(args.data), "videos": len(cines), "estimator": None}
    if not args.no_detection:
        report["detection"] = detection(method, cines, args.modes.split(","), supports_file)
    if not args.no_session:
        report["session"] = review_sessions(method, cines, args.corrections, args.random_draws,
                                            args.pickers.split(","))
    from XRayVOSLib.propagation.confidence import estimator_for

    fitted = estimator_for(method.confidence_profile())
    report["estimator"] = fitted.name if fitted is not None else None
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
