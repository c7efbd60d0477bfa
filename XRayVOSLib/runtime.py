"""Process-level helpers shared by the CLI, the worker, bench and the Slicer module: device, memory,
signals, the Python interpreter for background processes. Standard library only at import time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from XRayVOSLib.errors import InputError


def resolve_device(name: str) -> Any:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; a CUDA request without a GPU is an InputError."""
    import torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was requested but no CUDA GPU is available to PyTorch; use cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


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


def peak_memory_mb(device: str) -> float:
    """CUDA: peak allocated by torch since the last reset. CPU: this process's RSS high-water mark."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


CANCEL_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))


@contextlib.contextmanager
def cancel_on_signals(event: threading.Event) -> Iterator[list[int]]:
    """SIGINT / SIGTERM (SIGBREAK on Windows) set `event`, which every method checks once per frame; a second
    SIGINT interrupts at once. Yields the list of signal numbers caught. Outside the main thread (where
    handlers cannot be installed) it does nothing: the caller's own cancel applies."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and caught:
            raise KeyboardInterrupt
        caught.append(signum)
        event.set()

    previous = {s: signal.signal(s, handler) for s in CANCEL_SIGNALS}
    try:
        yield caught
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def python_executable(home: str | Path | None = None) -> str:
    """The interpreter for background processes: PythonSlicer inside Slicer (its launcher sets Slicer's
    library paths), looked up on PATH, then in `home`/bin (Slicer's home, slicer.app.slicerHome: on macOS
    the running executable is not beside it), then beside the running executable; else this interpreter."""
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidates = [Path(home) / "bin" / name] if home else []
    candidates.append(Path(sys.executable).resolve().parent / name)
    return next((str(c) for c in candidates if c.is_file()), sys.executable)


__all__ = ["cancel_on_signals", "peak_memory_mb", "peak_rss_mb", "python_executable", "resolve_device"]
