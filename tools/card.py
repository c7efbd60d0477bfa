"""The model card's figures in one command: methods, one vs two supports, and the k and r sweeps.

    python tools/card.py --data runs/heldout320 --model models/xrayvos_default.safetensors \
        --out runs/card320

Every figure is a held-out J&F from `evaluate_methods`; results go to OUT/card.json and OUT/card.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from XRayVOSLib.evaluation.runner import evaluate_methods
from XRayVOSLib.settings import RunSettings

WINDOWS = (5, 9, 15, 19)
INTERVALS = (3, 6, 12)


def _row(label: str, summary: dict[str, Any]) -> dict[str, Any]:
    d = summary["dataset"]
    return {"setting": label, "J&F": d.get("J&F"), "J": d.get("J"), "F": d.get("F"), "fps": summary.get("fps")}


def synthetic_kinds(data: Path) -> dict[str, dict[int, str]] | None:
    """{video: {object id: kind}} from a synthetic set's meta.json (None for other data sets)."""
    meta = data / "meta.json"
    if not meta.is_file():
        return None
    videos = json.loads(meta.read_text()).get("videos", {})
    return {v: {int(i): k for i, k in d.get("object_kinds", {}).items()} for v, d in videos.items()} or None


def run_card(data: Path, model: str | None, out: Path, device: str = "cpu", videos: int | None = None,
             sweeps: bool = True) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    quiet = lambda *_: None  # noqa: E731
    settings = RunSettings.from_model(model, device=device)  # the model's own settings; each method runs as itself
    common = dict(videos=videos, plots=False, log=quiet, model=model)
    rows: dict[str, list[dict[str, Any]]] = {"methods_one_support": [], "methods_two_supports": [], "window": [],
                                             "memory_every": [], "kinds_one_support": []}
    kinds = synthetic_kinds(data)
    for key, supports in (("methods_one_support", "first"), ("methods_two_supports", "first+middle")):
        res = evaluate_methods(data, ["local", "global", "flow", "copy"], supports, out / key, categories=kinds,
                               settings=settings, **common)
        rows[key] = [_row(name, s) for name, s in res["methods"].items()]
        if key == "methods_one_support":  # which kinds of object each method loses
            for name, summary in res["methods"].items():
                for kind, means in summary.get("categories", {}).items():
                    rows["kinds_one_support"].append(_row(f"{kind}: {name}", {"dataset": means}))
    if sweeps:
        for k in WINDOWS:
            res = evaluate_methods(data, ["local"], "first", None, settings=settings.replace(window=k), **common)
            rows["window"].append(_row(f"k={k}", res["methods"]["local"]))
        for r in INTERVALS:
            res = evaluate_methods(data, ["local"], "first", None, settings=settings.replace(memory_every=r),
                                   **common)
            rows["memory_every"].append(_row(f"r={r}", res["methods"]["local"]))
    card = {"data": str(data), "model": model, "device": device, "date": time.strftime("%Y-%m-%d"), "tables": rows}
    (out / "card.json").write_text(json.dumps(card, indent=1, default=lambda v: None))
    (out / "card.md").write_text(to_markdown(card))
    return card


def to_markdown(card: dict[str, Any]) -> str:
    lines = []
    for name, rows in card["tables"].items():
        if not rows:
            continue
        lines += [f"**{name}**", "", "| setting | J&F | J | F | fps |", "|---|---|---|---|---|"]
        for r in rows:
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            fps = "n/a" if r["fps"] is None else f"{r['fps']:.1f}"
            lines.append(f"| {r['setting']} | {fmt(r['J&F'])} | {fmt(r['J'])} | {fmt(r['F'])} | {fps} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--videos", type=int, default=None)
    p.add_argument("--no-sweeps", action="store_true")
    args = p.parse_args(argv)
    card = run_card(args.data, args.model, args.out, args.device, args.videos, sweeps=not args.no_sweeps)
    print(to_markdown(card))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
