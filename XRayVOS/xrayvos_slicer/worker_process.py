"""Launch, monitor and cancel a background `python -m ...` without blocking the caller.

The propagation worker is `python -m XRayVOSLib.worker --job JOB`; a fine-tune is
`python -m XRayVOSLib finetune ... --progress-json`. Both report the JSON event lines and exit codes of
XRayVOSLib.events. The interpreter is XRayVOSLib.runtime.python_executable() unless the caller names one.

Reader threads turn the worker's stdout into a queue of JSON events and keep the last stderr lines;
`poll()` drains the queue and never blocks, so a Qt timer (or a script loop) can call it. Cancel kills
the whole process tree: in Slicer `PythonSlicer` is a launcher whose child is the real interpreter, so
killing only the launcher would leave the computation running. On POSIX the worker leads its own
session (start_new_session) and gets SIGTERM, then SIGKILL, as a group; on Windows psutil walks the
children. Imports nothing from MRML.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from XRayVOSLib.runtime import python_executable

STDERR_LINES = 40


def library_root() -> Path:
    """The folder holding the XRayVOSLib package (the repository, or the installed module folder)."""
    import XRayVOSLib

    return Path(XRayVOSLib.__file__).resolve().parent.parent


def worker_environment(base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    root = str(library_root())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p != root])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.update(extra or {})
    return env


class WorkerProcess:
    """One background worker run. Not thread-safe: call start / poll / cancel from one thread."""

    def __init__(self, job_path: str | Path, python: str | None = None,
                 env: Mapping[str, str] | None = None, module_args: list[str] | None = None) -> None:
        """job_path: the job JSON (its folder is the working directory). module_args: what follows
        `python -m` (default: the propagation worker on job_path)."""
        self.job_path = Path(job_path)
        self.module_args = list(module_args) if module_args else ["XRayVOSLib.worker", "--job", str(self.job_path)]
        self.python = python or python_executable()
        self.env = dict(env) if env is not None else worker_environment()
        self.proc: subprocess.Popen | None = None
        self.events: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.stdout_other: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.cancel_requested = False
        self.started_at: float | None = None
        self._threads: list[threading.Thread] = []

    @property
    def command(self) -> list[str]:
        return [self.python, "-m", *self.module_args]

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("worker already started")
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: cancel reaches the launcher's children
        else:
            kwargs["creationflags"] = (getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                                       | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=str(self.job_path.parent),
                                     text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self.started_at = time.monotonic()
        for target, stream in ((self._read_stdout, self.proc.stdout), (self._read_stderr, self.proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True, name="xrayvos-worker-reader")
            thread.start()
            self._threads.append(thread)

    def _read_stdout(self, stream) -> None:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "event" in event:
                self.events.put(event)
            else:
                self.stdout_other.append(line)  # a stray print from a library: keep it for error reports
        stream.close()

    def _read_stderr(self, stream) -> None:
        for line in stream:
            if line.strip():
                self.stderr_tail.append(line.rstrip())
        stream.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def finished(self) -> bool:
        """Exited and its output fully read (so no event is still on its way)."""
        return (self.proc is not None and self.proc.poll() is not None
                and not any(t.is_alive() for t in self._threads))

    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def drain(self) -> tuple[bool, list[dict[str, Any]]]:
        """(finished, events so far). Finished is read before the queue, so when it is True no event can
        still be on its way: the caller has seen everything the process reported."""
        finished = self.finished()
        return finished, self.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._threads:
            thread.join(5.0)
        return self.proc.returncode

    def error_text(self, lines: int = 12) -> str:
        """The worker's last stderr lines (its traceback or message), for the user."""
        tail = list(self.stderr_tail)[-lines:] or list(self.stdout_other)[-lines:]
        return "\n".join(tail)

    def cancel(self, grace: float = 5.0) -> None:
        """Ask the worker to stop (SIGTERM to its group), kill the whole tree if it is still there after `grace`."""
        self.cancel_requested = True
        if self.proc is None or self.proc.poll() is not None:
            return
        if os.name == "posix":
            pgid = self.proc.pid  # start_new_session made the worker its group's leader
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            # A launcher may die at once and leave its child finishing its frame: wait for the group.
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None or _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        else:
            _kill_tree_windows(self.proc.pid)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        for thread in self._threads:
            thread.join(1.0)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group?"""
    try:
        import psutil
    except ImportError:
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree_windows(pid: int) -> None:
    try:
        import psutil
    except ImportError:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        return
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for child in parent.children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        parent.kill()
    except psutil.NoSuchProcess:
        pass
