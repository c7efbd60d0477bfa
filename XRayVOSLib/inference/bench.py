"""Speed and memory benchmark of local vs global matching (the logic behind `xrayvos bench`).

Each configuration (matching, objects, frames, stride) runs in a fresh subprocess,
`python -m XRayVOSLib.inference.bench --one SPEC.json`, so one run's memory high-water mark cannot leak
into the next and every run pays the same warm-up. The parent generates the synthetic cines once and
hands them over as .npy files; local and global run back to back on the same cine, so the local/global
ratios compare like with like even on a noisy machine.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

WARMUP_FRAMES = 2
BASE_FRAMES = 30  # synthetic cines are generated this long and looped to the benchmark length


@dataclass(frozen=True)
class BenchCase:
    matching: str = "local"
    objects: int = 1
    frames: int = 100
    size: int = 512
    stride: int = 16
    window: int = 15
    memory_every: int = 6
    device: str = "auto"
    model: str | None = None
    accelerate: bool = True
    seed: int = 0
    temporal_blend: float | None = None  # None: what the checkpoint carries (as Propagator.load does)
    support_warp: float | None = None
    area_prior: bool | None = None


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark in MiB (whole lifetime)."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


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
        cine = generate_cine(seed, min(BASE_FRAMES, frames), size, SynthConfig(min_objects=objects, max_objects=objects))
    base = cine.frames
    period = max(1, 2 * len(base) - 2)
    out = np.empty((frames, size, size), np.uint8)
    for t in range(frames):
        phase = t % period
        index = phase if phase < len(base) else period - phase
        out[t] = np.roll(base[index], t // period, axis=1)
    return out, _split_objects(cine.labels[0], objects)


def build_network(model: str | None, stride: int) -> tuple[Any, bool, str, dict[str, Any]]:
    """(network, trained, note, info). A checkpoint of another stride gives an untrained net of the wanted one."""
    import torch

    from XRayVOSLib.inference.propagator import default_model_path
    from XRayVOSLib.model.checkpoint import load_checkpoint, read_metadata
    from XRayVOSLib.model.config import ModelConfig
    from XRayVOSLib.model.network import LocalMatchingNetwork

    path = Path(model) if model else default_model_path()
    torch.manual_seed(0)
    if path is None:
        return (LocalMatchingNetwork(ModelConfig(stride=stride)), False,
                f"no checkpoint: untrained stride-{stride} network", {})
    config, info = read_metadata(path)
    if config.stride != stride:
        net = LocalMatchingNetwork(replace(config, stride=stride))
        return (net, False, f"{path.name} is stride {config.stride}: untrained stride-{stride} network built (speed only)",
                info)
    net, info = load_checkpoint(path)
    return net, bool(info.get("trained", True)), f"{path.name}", info


def run_case(case: BenchCase, frames: np.ndarray, support: np.ndarray) -> dict[str, Any]:
    """Propagate frame 0's support through `frames` in this process and measure it."""
    import torch

    from XRayVOSLib.inference.propagator import Propagator, resolve_device

    device = resolve_device(case.device)
    rss_before = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    network, trained, note, info = build_network(case.model, case.stride)
    blend = case.temporal_blend if case.temporal_blend is not None else float(info.get("temporal_blend", 0.0))
    anchor = case.support_warp if case.support_warp is not None else float(info.get("support_warp", 0.0))
    area_prior = case.area_prior if case.area_prior is not None else bool(info.get("area_prior", False))
    prop = Propagator.load(network, device=str(device), matching=case.matching, window=case.window,
                           memory_every=case.memory_every, accelerate=case.accelerate,
                           temporal_blend=blend, support_warp=anchor, area_prior=area_prior)
    stamps: list[float] = []
    start = time.perf_counter()
    for _ in prop.iter_propagate(frames, {0: support}, progress=lambda d, n: stamps.append(time.perf_counter())):
        pass
    end = time.perf_counter()
    n = len(stamps)
    warm = (n - WARMUP_FRAMES) / (stamps[-1] - stamps[WARMUP_FRAMES - 1]) if n > WARMUP_FRAMES else None
    result = {
        **asdict(case), "device": str(device), "objects": int(len(np.unique(support)) - 1),
        "fps": n / (end - start), "fps_warm": warm, "warmup_s": stamps[0] - start, "seconds": end - start,
        "trained": trained, "note": note, "peak_rss_mb": peak_rss_mb(),
        "temporal_blend": blend, "support_warp": anchor, "area_prior": area_prior,
    }
    if device.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mb"] = result["peak_rss_mb"] - rss_before
    return result


def run_case_subprocess(case: BenchCase, cine_path: Path, support_path: Path) -> dict[str, Any]:
    """run_case in a fresh interpreter; returns its JSON result."""
    spec = {"case": asdict(case), "frames": str(cine_path), "support": str(support_path)}
    cmd = [sys.executable, "-m", "XRayVOSLib.inference.bench", "--one", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        from XRayVOSLib.errors import XRayVOSError

        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise XRayVOSError(f"bench run {case.matching}/{case.objects} objects/T={case.frames} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_benchmark(base: BenchCase, objects: list[int], lengths: list[int], strides: list[int],
                  matchings: tuple[str, ...] = ("local", "global"),
                  log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> list[dict]:
    """Every (stride, objects, T, matching) combination; local and global back to back on the same cine."""
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="xrayvos-bench-") as tmp:
        for k in objects:
            for t in lengths:
                frames, support = make_cine(k, t, base.size, base.seed)
                cine_path, support_path = Path(tmp) / f"cine_{k}_{t}.npy", Path(tmp) / f"support_{k}_{t}.npy"
                np.save(cine_path, frames)
                np.save(support_path, support)
                del frames
                for stride in strides:
                    for matching in matchings:
                        case = replace(base, matching=matching, objects=k, frames=t, stride=stride)
                        log(f"bench: stride {stride}, {k} object(s), T={t}, {matching} ...")
                        results.append(run_case_subprocess(case, cine_path, support_path))
    return results


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(results: list[dict]) -> str:
    """One row per run and, under each local/global pair, their ratio (local / global)."""
    head = f"{'stride':>6} {'objects':>7} {'frames':>6}  {'matching':<12} {'fps':>7} {'fps_warm':>8} {'warmup_s':>8} {'peak_MB':>8}"
    lines = [head, "-" * len(head)]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results:
        groups.setdefault((r["stride"], r["objects"], r["frames"]), {})[r["matching"]] = r
    for (stride, k, t), runs in groups.items():
        for name, r in runs.items():
            lines.append(f"{stride:>6} {k:>7} {t:>6}  {name:<12} {_fmt(r['fps']):>7} {_fmt(r['fps_warm']):>8} "
                         f"{_fmt(r['warmup_s'], 1):>8} {_fmt(r['peak_mb'], 0):>8}")
        if "local" in runs and "global" in runs:
            lo, gl = runs["local"], runs["global"]
            ratio = lambda key: None if not lo[key] or not gl[key] else lo[key] / gl[key]  # noqa: E731
            lines.append(f"{'':>6} {'':>7} {'':>6}  {'local/global':<12} {'x' + _fmt(ratio('fps')):>7} "
                         f"{'x' + _fmt(ratio('fps_warm')):>8} {'':>8} {'x' + _fmt(ratio('peak_mb')):>8}")
    notes = sorted({r["note"] for r in results})
    first = results[0] if results else {}
    lines.append(f"device {first.get('device')}, {first.get('size')}x{first.get('size')}, window {first.get('window')}, "
                 f"memory every {first.get('memory_every')}, TorchScript {'on' if first.get('accelerate') else 'off'}, "
                 f"temporal blend {first.get('temporal_blend')}, support warp {first.get('support_warp')}, area prior {'on' if first.get('area_prior') else 'off'}; "
                 f"model: {'; '.join(notes)}")
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
