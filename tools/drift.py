"""Mean J by distance from the nearest support frame, per method, from an `xrayvos evaluate` results.json.

It separates two kinds of error: drift (J falls as frames get farther from the support, as optical flow's
does) and per-frame precision (J is the same one frame away as thirty, as a network that re-segments every
frame shows when thin objects lose a pixel along each edge).

    python tools/drift.py runs/card/methods_one_support/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from XRayVOSLib.errors import InputError

BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 10**9))


def j_by_distance(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{method: {"1", "2", "3-5", ...: mean J over object-frames that far from the nearest support}}."""
    supports = results.get("support_frames")
    if not isinstance(supports, dict) or "methods" not in results:
        raise InputError("not an `xrayvos evaluate` results.json (no support_frames / methods)")
    out: dict[str, dict[str, float]] = {}
    for method, summary in results["methods"].items():
        values: dict[tuple[int, int], list[float]] = {b: [] for b in BINS}
        for video, objects in summary.get("per_frame_J", {}).items():
            given = supports.get(video) or []
            if not given:
                raise InputError(f"results.json lists no support frames for video {video!r}")
            for frames in objects.values():
                for t, j in frames.items():
                    d = min(abs(int(t) - s) for s in given)
                    for lo, hi in BINS:
                        if lo <= d <= hi and np.isfinite(j):
                            values[(lo, hi)].append(float(j))
        out[method] = {_label(b): float(np.mean(v)) for b, v in values.items() if v}
    return out


def _label(bin_: tuple[int, int]) -> str:
    lo, hi = bin_
    return str(lo) if lo == hi else (f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mean J by distance from the nearest support frame")
    parser.add_argument("results", type=Path, help="results.json written by `xrayvos evaluate --out`")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {args.results}: cannot read ({exc})") from None
    table = j_by_distance(results)
    labels = [_label(b) for b in BINS]
    print("frames from support: " + "  ".join(f"{x:>6s}" for x in labels))
    for method, row in table.items():
        print(f"{method:>19s}: " + "  ".join(f"{row[x]:6.3f}" if x in row else "     -" for x in labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
