"""The batch driver: which runs are already complete, the Dask cluster, one task per run, progress, summary.

    result = run_batch("cohort.csv", "results", RunSettings(method="flow"))            # embedded LocalCluster
    result = run_batch("cohort.csv", "results", settings, client=Client("tcp://head:8786"))  # existing cluster
    result.exit_code, result.rows, result.counts

Dask distributed is the engine (not a home-made pool): its scheduler hands runs to worker processes,
replaces a worker that dies (a LocalCluster's nanny restarts it; a lost task is scheduled again, and one
that has killed `distributed.scheduler.allowed-failures` + 1 workers fails with KilledWorker), and the same
code runs on an existing cluster: `dask scheduler` / `dask worker` by hand, or SLURM/PBS through
dask-jobqueue. Workers must see --out and the inputs at the same paths as the driver (a shared file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from XRayVOSLib.batch.manifest import RunSpec, read_manifest, runs_from_records
from XRayVOSLib.batch.summary import BatchResult
from XRayVOSLib.batch.task import IgnoreInterrupt, failed_row, record_row, run_task
from XRayVOSLib.errors import InputError
from XRayVOSLib.run_one import PROPAGATE_RESULT, fingerprint, model_digest, model_path
from XRayVOSLib.runtime import cancel_on_signals
from XRayVOSLib.settings import RunSettings

LogFn = Callable[[str], None]
POLL_S = 0.25  # how often the driver looks at the futures (the bar's running count and ETA move with it)
SUMMARY_EVERY_S = 30.0  # a long batch rewrites summary.csv/json this often, so a crash of the driver loses little


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def default_workers(settings: RunSettings) -> int:
    """The embedded cluster's size: one single-threaded worker process per CPU core this process may use;
    one for the network on a GPU (every worker would load its own model onto the same device)."""
    if settings.uses_network and settings.device != "cpu":
        import torch

        if torch.cuda.is_available():
            return 1
    return cpu_cores()


def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def run_batch(manifest: str | Path | Sequence[RunSpec | dict], out: str | Path, settings: RunSettings,
              client: Any = None, *, model: str | Path | None = None, scheduler: str | None = None,
              workers: int | None = None, retries: int = 1, dicom_seg: bool = False, progress: bool = True,
              dashboard: bool = True, log: LogFn = stderr_log) -> BatchResult:
    """Run every run of `manifest` (a CSV / JSON-lines path, or RunSpecs, or dicts with the manifest's keys)
    into out/<id>/, skipping runs complete with the same fingerprint; write out/summary.csv and .json.

    client: a distributed.Client to use (kept open); else `scheduler` (an address or a scheduler file) is
    connected to, else a LocalCluster of `workers` processes (default_workers) is started and closed.
    retries: how often a task that raised an unexpected error is run again (a bad input is not retried)."""
    specs = _specs(manifest)
    out = _out_folder(out)
    weights = model_path(settings, model)
    try:
        model_sha = model_digest(settings, model)
    except OSError as exc:
        raise InputError(f"--model {weights}: cannot be read ({exc.strerror or exc})") from None
    plan = _Plan(specs, out, settings, None if weights is None else str(weights), model_sha, dicom_seg, retries)
    started = time.perf_counter()
    rows = plan.skipped_rows()
    if rows:
        log(f"xrayvos batch: {len(rows)} of {len(specs)} runs are complete with the same fingerprint: skipped")
    with _connect(client, scheduler, workers or default_workers(settings), dashboard) as (dask_client, info):
        _describe(dask_client, info, dashboard, log)
        cancelled = _gather(dask_client, plan, rows, progress, started, info)
    result = BatchResult(out, [rows[s.id] for s in specs], time.perf_counter() - started,
                         _info(plan, info), cancelled)
    result.write()
    return result


class _Plan:
    """The batch's fixed inputs: specs, settings, the model and its digest, what is complete already."""

    def __init__(self, specs: list[RunSpec], out: Path, settings: RunSettings, model: str | None,
                 model_sha: str | None, dicom_seg: bool, retries: int) -> None:
        self.specs, self.out, self.settings, self.model = specs, out, settings, model
        self.model_sha, self.dicom_seg, self.retries = model_sha, dicom_seg, retries
        self.complete = {s.id: self._record(s) for s in specs}

    def _record(self, spec: RunSpec) -> dict | None:
        """The run.json of a finished run with the same fingerprint (and all its frames), else None."""
        folder = self.out / spec.id
        if not PROPAGATE_RESULT.is_record(folder / "run.json"):
            return None
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        try:
            wanted = fingerprint(spec.cine, list(spec.supports), self.settings, self.model, self.model_sha)
        except OSError:  # an input is gone or unreadable: the run is redone, and fails with its reason
            return None
        if (record.get("fingerprint") or {}).get("digest") != wanted["digest"]:
            return None
        if self.dicom_seg and not (self.out / f"{spec.id}.seg.dcm").is_file():
            return None
        frames = sum(1 for p in folder.iterdir() if re.fullmatch(PROPAGATE_RESULT.files[0], p.name))
        return record if frames == record.get("frames") else None

    def skipped_rows(self) -> dict[str, dict]:
        """Rows of the complete runs that need no task (no ground truth to score)."""
        return {s.id: record_row(s, self.complete[s.id], "skipped") for s in self.specs
                if self.complete[s.id] is not None and s.gt is None}

    def submit(self, client: Any, spec: RunSpec) -> Any:
        return client.submit(run_task, spec, str(self.out), self.settings.to_dict(), self.model, self.model_sha,
                             self.dicom_seg, self.complete[spec.id] is not None, retries=self.retries,
                             pure=False, key=f"xrayvos-run-{spec.id}-{uuid.uuid4().hex[:8]}")


def _specs(manifest: str | Path | Sequence[RunSpec | dict]) -> list[RunSpec]:
    if isinstance(manifest, (str, Path)):
        return read_manifest(manifest)
    items = list(manifest)
    if all(isinstance(m, RunSpec) for m in items):
        specs = runs_from_records(((i + 1, s.to_dict()) for i, s in enumerate(items)), Path.cwd(), "runs")
    else:
        specs = runs_from_records(((i + 1, dict(m)) for i, m in enumerate(items)), Path.cwd(), "runs")
    if not specs:
        raise InputError("the batch lists no runs")
    return specs


def _out_folder(out: str | Path) -> Path:
    path = Path(os.path.abspath(Path(out).expanduser()))
    if os.path.lexists(path) and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {path}: cannot be created ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def _connect(client: Any, scheduler: str | None, workers: int, dashboard: bool) -> Iterator[tuple[Any, dict]]:
    """(client, info): the caller's client, one connected to `scheduler`, or an embedded LocalCluster's."""
    if client is not None:
        yield client, {"cluster": "given", "scheduler": client.scheduler.address}
        return
    from distributed import Client, LocalCluster

    if scheduler:
        kwargs = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
        try:
            own = Client(timeout="30s", **kwargs)
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with own:
            yield own, {"cluster": "scheduler", "scheduler": own.scheduler.address}
        return
    import dask

    # Saturation 1.0: a worker holds only the run it is computing (runs take seconds, nothing to prefetch), so
    # a worker that dies takes one run with it and a long cine does not hold a short one back.
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":8787" if dashboard else None, env=_thread_env())
    with cluster, Client(cluster) as own:
        own.register_plugin(IgnoreInterrupt())
        yield own, {"cluster": "local", "scheduler": cluster.scheduler_address, "workers": workers}


def _thread_env() -> dict[str, str]:
    """One thread per worker for torch (OpenMP, MKL, OpenBLAS) and OpenCV (DIS flow) alike, unless the user set
    a count in the environment: the workers are the parallelism. Dask's nanny sets OMP_NUM_THREADS=1 but not
    OpenCV's pool, which starts a thread per core in every worker; and a 2-thread MKL/OpenBLAS called from a
    worker's task thread ran a 30-frame run in 45-74 s instead of 3-3.5 s on a busy 2-core machine."""
    return {name: os.environ.get(name, "1") for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                         "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")}


def _describe(client: Any, info: dict, dashboard: bool, log: LogFn) -> None:
    """Print where the batch runs and the dashboard's address (an embedded one needs bokeh to serve it)."""
    import importlib.util

    local = info["cluster"] == "local"
    served = not local or (dashboard and importlib.util.find_spec("bokeh") is not None)
    info["dashboard"] = client.dashboard_link if served else None
    where = f"{info['workers']} local worker processes" if local else info["scheduler"]
    if info["dashboard"]:
        log(f"xrayvos batch: Dask cluster {where}; dashboard {info['dashboard']}")
    else:
        hint = " (no dashboard: install bokeh to have one)" if dashboard else ""
        log(f"xrayvos batch: Dask cluster {where}{hint}")


def _gather(client: Any, plan: _Plan, rows: dict[str, dict], progress: bool, started: float, info: dict) -> bool:
    """Submit the runs not yet in `rows`, fill `rows` as they finish; True when the batch was cancelled."""
    todo = [s for s in plan.specs if s.id not in rows]
    futures = {plan.submit(client, s): s for s in todo}
    bar = _Bar(len(plan.specs), len(rows), progress)
    cancel = threading.Event()
    last_write = time.monotonic()
    try:
        with cancel_on_signals(cancel):
            pending = set(futures)
            while pending and not cancel.is_set():
                finished = [f for f in pending if f.done()]
                for future in finished:
                    pending.discard(future)
                    rows[futures[future].id] = _outcome(future, futures[future], plan.retries)
                    bar.finished(rows[futures[future].id]["status"])
                bar.running(_running(client, pending))
                if time.monotonic() - last_write > SUMMARY_EVERY_S:
                    _partial(plan, rows, started, info)
                    last_write = time.monotonic()
                if pending and not finished:
                    time.sleep(POLL_S)
    except KeyboardInterrupt:  # a second Ctrl-C
        cancel.set()
    finally:
        bar.close()
    if not cancel.is_set():
        return False
    left = [f for f in futures if futures[f].id not in rows]
    for future in [f for f in left if f.status in ("finished", "error")]:  # finished as the cancel came
        rows[futures[future].id] = _outcome(future, futures[future], plan.retries)
    left = [f for f in left if futures[f].id not in rows]
    client.cancel(left)
    for future in left:
        rows[futures[future].id] = {**failed_row(futures[future], "the batch was cancelled before this run "
                                                                  "finished"), "status": "cancelled"}
    return True


def _outcome(future: Any, spec: RunSpec, retries: int) -> dict:
    """The task's row, or a failed row naming what stopped it (a dead worker, an unexpected error)."""
    from distributed import KilledWorker

    if future.status == "finished":
        return future.result()
    if future.status == "cancelled":
        return {**failed_row(spec, "cancelled on the cluster"), "status": "cancelled"}
    exc = future.exception()
    if isinstance(exc, KilledWorker):
        return failed_row(spec, f"the worker running it died each time it was tried (a crash or out of memory; "
                                f"see the worker logs): KilledWorker {exc}")
    message = " ".join(str(exc).splitlines())
    return failed_row(spec, f"unexpected {type(exc).__name__}: {message} (tried {retries + 1} times)")


def _running(client: Any, pending: set) -> int:
    """Runs being processed now: the scheduler's tasks on workers, at most one per worker thread."""
    if not pending:
        return 0
    keys = {f.key for f in pending}
    try:
        processing = client.processing()
        threads = sum(client.nthreads().values())
    except (OSError, TimeoutError):  # the scheduler is busy or going: the count waits for the next poll
        return 0
    return min(threads, sum(1 for tasks in processing.values() for k in tasks if k in keys))


def _partial(plan: _Plan, rows: dict[str, dict], started: float, info: dict) -> None:
    """summary.csv/json so far, the unfinished runs as 'running' (replaced by the final one at the end)."""
    so_far = [rows.get(s.id) or {**failed_row(s, None), "status": "running"} for s in plan.specs]
    BatchResult(plan.out, so_far, time.perf_counter() - started, _info(plan, info)).write()


def _info(plan: _Plan, info: dict) -> dict[str, Any]:
    return {"out": str(plan.out), "settings": plan.settings.to_dict(), "model": plan.model,
            "model_sha256": plan.model_sha, "retries": plan.retries, **info}


class _Bar:
    """tqdm over runs: done (skipped included), failed, running; tqdm's own ETA and rate."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.counts = {"done": initial, "failed": 0, "running": 0}
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="run", desc="batch", file=sys.stderr)
            self._show()

    def finished(self, status: str) -> None:
        self.counts["failed" if status in ("failed", "cancelled") else "done"] += 1
        if self.bar is not None:
            self.bar.update(1)
            self._show()

    def running(self, count: int) -> None:
        if self.bar is not None and count != self.counts["running"]:
            self.counts["running"] = count
            self._show()

    def _show(self) -> None:
        self.bar.set_postfix(self.counts, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["default_workers", "run_batch", "stderr_log"]
