"""Speed and memory benchmark of the shipped pipeline and what it is compared with (`xrayvos bench`).

Each configuration (variant, objects, frames) runs in a fresh subprocess,
`python -m XRayVOSLib.inference.bench --one SPEC.json`, so one run's memory high-water mark cannot leak
into the next and every run pays the same warm-up. The parent generates the synthetic cines once and
hands them over as .npy files; the variants run back to back on the same cine, so their ratios compare
like with like even on a noisy machine. Variants (VARIANTS): `shipped` (the model's own settings),
`network` (the network alone: no fusion, its fixed threshold), `global` (global matching, shipped
otherwise) and the baselines `flow`, `flow-support`, `copy`.

Figures per run (support = ground truth of frame 0, every other frame predicted):
    fps        predicted frames / wall time from the first support encoding to the last frame
    fps_warm   the same excluding the first WARMUP_FRAMES frames: TorchScript tracing (CPU) and allocator
               warm-up happen there, so this is the steady per-frame speed on a long cine
    warmup_s   time until the first predicted frame (support encoding + tracing + one frame)
    peak_mb    CPU: RSS high-water mark minus the RSS just before the model was built (frames already
               loaded), i.e. what propagation itself needed; CUDA: torch.cuda.max_memory_allocated
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from XRayVOSLib.errors import InputError, XRayVOSError
from XRayVOSLib.runtime import peak_rss_mb, resolve_device
from XRayVOSLib.settings import RunSettings

WARMUP_FRAMES = 2
BASE_FRAMES = 30  # synthetic cines are generated this long and looped to the benchmark length


VARIANTS = ("shipped", "network", "global", "flow", "flow-support", "copy")


def variant_settings(variant: str, shipped: RunSettings) -> RunSettings:
    """The RunSettings of a bench variant, from the shipped run's settings."""
    if variant == "shipped":
        return shipped
    if variant == "network":
        return shipped.replace(temporal_blend=0.0, support_warp=0.0, decision="threshold")
    if variant == "global":
        return shipped.replace(method="global")
    if variant in ("flow", "flow-support", "copy"):
        return shipped.replace(method=variant)
    raise InputError(f"unknown bench variant {variant!r}; choose from {', '.join(VARIANTS)}")


@dataclass(frozen=True)
class BenchCase:
    variant: str = "shipped"
    settings: dict[str, Any] = field(default_factory=lambda: RunSettings().to_dict())  # RunSettings.to_dict
    objects: int = 1
    frames: int = 100
    size: int = 512
    model: str | None = None
    accelerate: bool = True
    seed: int = 0


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _split_objects(labels: np.ndarray, wanted: int) -> np.ndarray:
    """Split the largest objects into column bands until the map holds `wanted` ids (cost scales with K)."""
    labels = labels.copy()
    while True:
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        if len(ids) >= wanted or counts.max() < 2:
            return labels
        big = ids[np.argmax(counts)]
        ys, xs = np.nonzero(labels == big)
        right = xs > np.median(xs) if np.any(xs > np.median(xs)) else np.arange(len(xs)) % 2 == 1
        labels[ys[right], xs[right]] = int(ids.max()) + 1


def make_cine(objects: int, frames: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [T, H, W], support labels of frame 0 with `objects` ids) from a looped synthetic cine.

    A BASE_FRAMES-long cine is played forward and back (no jump cut) with a one-pixel shift per cycle, so
    long benchmarks cost no long generation and no two cycles are identical.
    """
    from XRayVOSLib.synth import SynthConfig, generate_cine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        config = SynthConfig(min_objects=objects, max_objects=objects)
        cine = generate_cine(seed, min(BASE_FRAMES, frames), size, config)
    base = cine.frames
    period = max(1, 2 * len(base) - 2)
    out = np.empty((frames, size, size), np.uint8)
    for t in range(frames):
        phase = t % period
        index = phase if phase < len(base) else period - phase
        out[t] = np.roll(base[index], t // period, axis=1)
    return out, _split_objects(cine.labels[0], objects)


def run_case(case: BenchCase, frames: np.ndarray, support: np.ndarray) -> dict[str, Any]:
    """Propagate frame 0's support through `frames` in this process and measure it."""
    settings = RunSettings.from_dict(case.settings)
    cuda = settings.uses_network and resolve_device(settings.device).type == "cuda"
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_mb()
    method, trained, note = _build(settings, case)
    stamps: list[float] = []
    start = time.perf_counter()
    for _ in method.iter_propagate(frames, {0: support}, progress=lambda d, n: stamps.append(time.perf_counter())):
        pass
    end = time.perf_counter()
    n = len(stamps)
    warm = (n - WARMUP_FRAMES) / (stamps[-1] - stamps[WARMUP_FRAMES - 1]) if n > WARMUP_FRAMES else None
    device = str(getattr(method, "device", "cpu"))
    result = {
        **asdict(case), "device": device, "objects": int(len(np.unique(support)) - 1),
        "fps": n / (end - start), "fps_warm": warm, "warmup_s": stamps[0] - start, "seconds": end - start,
        "trained": trained, "note": note, "peak_rss_mb": peak_rss_mb(),
    }
    if cuda:
        import torch

        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mb"] = result["peak_rss_mb"] - rss_before
    return result


def _build(settings: RunSettings, case: BenchCase) -> tuple[Any, bool, str]:
    """(method, trained, note): the network as `Propagator.load` builds it, or a baseline."""
    from XRayVOSLib.methods import make_method

    if not settings.uses_network:
        return make_method(settings), True, "baseline"
    from XRayVOSLib.inference.propagator import Propagator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = Propagator.load(case.model, settings, accelerate=case.accelerate)
    source = Path(str(method.info.get("source", "untrained"))).name
    return method, method.trained, source if method.trained else f"{source}: UNTRAINED weights"


def run_case_subprocess(case: BenchCase, cine_path: Path, support_path: Path) -> dict[str, Any]:
    """run_case in a fresh interpreter; returns its JSON result."""
    spec = {"case": asdict(case), "frames": str(cine_path), "support": str(support_path)}
    cmd = [sys.executable, "-m", "XRayVOSLib.inference.bench", "--one", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise XRayVOSError(f"bench run {case.variant}/{case.objects} objects/T={case.frames} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_benchmark(base: BenchCase, objects: list[int], lengths: list[int], variants: tuple[str, ...],
                  log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> list[dict]:
    """Every (objects, T, variant) combination; the variants back to back on the same cine."""
    shipped = RunSettings.from_dict(base.settings)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="xrayvos-bench-") as tmp:
        for k in objects:
            for t in lengths:
                frames, support = make_cine(k, t, base.size, base.seed)
                cine_path, support_path = Path(tmp) / f"cine_{k}_{t}.npy", Path(tmp) / f"support_{k}_{t}.npy"
                np.save(cine_path, frames)
                np.save(support_path, support)
                del frames
                for variant in variants:
                    settings = variant_settings(variant, shipped).to_dict()
                    case = replace(base, variant=variant, settings=settings, objects=k, frames=t)
                    log(f"bench: {k} object(s), T={t}, {variant} ...")
                    results.append(run_case_subprocess(case, cine_path, support_path))
    return results


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(results: list[dict]) -> str:
    """One row per run, each with its speed relative to the shipped pipeline on the same cine."""
    head = (f"{'objects':>7} {'frames':>6}  {'variant':<13} {'fps':>7} {'fps_warm':>8} {'warmup_s':>8} "
            f"{'peak_MB':>8} {'x shipped':>9}")
    lines = [head, "-" * len(head)]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results:
        groups.setdefault((r["objects"], r["frames"]), {})[r["variant"]] = r
    for (k, t), runs in groups.items():
        shipped = runs.get("shipped")
        for name, r in runs.items():
            ratio = r["fps"] / shipped["fps"] if shipped and shipped["fps"] else None
            lines.append(f"{k:>7} {t:>6}  {name:<13} {_fmt(r['fps']):>7} {_fmt(r['fps_warm']):>8} "
                         f"{_fmt(r['warmup_s'], 1):>8} {_fmt(r['peak_mb'], 0):>8} {'x' + _fmt(ratio):>9}")
    first = results[0] if results else {}
    s = first.get("settings", {})
    notes = sorted({r["note"] for r in results})
    lines.append(f"device {first.get('device')}, {first.get('size')}x{first.get('size')}, window {s.get('window')}, "
                 f"memory every {s.get('memory_every')}, TorchScript {'on' if first.get('accelerate') else 'off'}; "
                 f"shipped: decision {s.get('decision')}, temporal blend {s.get('temporal_blend')}, "
                 f"support warp {s.get('support_warp')}; model: {'; '.join(notes)}")
    lines.append(f"fps_warm excludes the first {WARMUP_FRAMES} predicted frames (tracing); peak_MB is "
                 + ("CUDA max allocated" if str(first.get("device", "")).startswith("cuda")
                    else "the RSS increase of a fresh process per run"))
    return "\n".join(lines)


def _main_one(spec_text: str) -> int:
    spec = json.loads(spec_text)
    case = BenchCase(**spec["case"])
    frames, support = np.load(spec["frames"]), np.load(spec["support"])  # read whole: in the baseline RSS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_case(case, frames, support)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: one benchmark run (see `xrayvos bench`)")
    parser.add_argument("--one", required=True, metavar="SPEC_JSON")
    raise SystemExit(_main_one(parser.parse_args().one))
