"""The batch's record: DIR/summary.csv (one row per run) and DIR/summary.json (the same rows, the totals, the
settings and the cluster), both written atomically, and the batch's exit status.

Row columns: id, status, frames, objects (how many), seconds and fps (of the propagation, as in the run's
run.json), J, F, J&F (where the manifest gives ground truth; the run's mean over its objects), error.
Status: done (computed by this batch), skipped (complete from an earlier batch with the same fingerprint),
failed (error says why), cancelled (the batch was stopped before the run finished).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from XRayVOSLib.events import EXIT_CANCELLED, EXIT_OK, EXIT_SOME_FAILED
from XRayVOSLib.outputs import write_json_atomic, write_text_atomic

COLUMNS = ("id", "status", "frames", "objects", "seconds", "fps", "J", "F", "J&F", "error")
STATUSES = ("done", "skipped", "failed", "cancelled")
# Some runs failed (or were cancelled by a worker's death), the others are complete: the batch's own code,
# distinct from 2 (the manifest or an option was refused and nothing ran) and 1 (a bug).


@dataclass
class BatchResult:
    """What run_batch returns: every run's row (manifest order) and where the summary was written."""

    out: Path
    rows: list[dict[str, Any]]
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.rows) for s in STATUSES}

    @property
    def exit_code(self) -> int:
        if self.cancelled:
            return EXIT_CANCELLED
        return EXIT_SOME_FAILED if self.counts["failed"] else EXIT_OK

    def frames_computed(self) -> int:
        return sum(r["frames"] or 0 for r in self.rows if r["status"] == "done")

    def throughput(self) -> dict[str, float | None]:
        """runs/min and frames/s of the runs this batch computed, over the batch's wall time."""
        done = self.counts["done"]
        if self.seconds <= 0:
            return {"runs_per_min": None, "frames_per_s": None}
        return {"runs_per_min": round(60 * done / self.seconds, 2),
                "frames_per_s": round(self.frames_computed() / self.seconds, 2)}

    def scores(self) -> dict[str, float | None]:
        """The mean over the scored runs of their J, F and J&F."""
        out = {}
        for name in ("J", "F", "J&F"):
            values = [r[name] for r in self.rows if isinstance(r.get(name), float) and math.isfinite(r[name])]
            out[name] = round(sum(values) / len(values), 6) if values else None
        return out

    def write(self) -> tuple[Path, Path]:
        """DIR/summary.csv and DIR/summary.json (each replaced atomically, so a reader never sees half)."""
        csv_path, json_path = self.out / "summary.csv", self.out / "summary.json"
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in COLUMNS])
        write_text_atomic(csv_path, text.getvalue())
        write_json_atomic(json_path, {
            **self.info, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(self.seconds, 3),
            "cancelled": self.cancelled, "counts": self.counts, **self.throughput(), "scores": self.scores(),
            "runs": [{c: row.get(c) for c in COLUMNS} for row in self.rows],
        })
        return csv_path, json_path

    def report(self) -> str:
        """The closing line: counts, throughput, where the summary is."""
        counts = self.counts
        parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s] or s in ("done", "failed")]
        speed = self.throughput()
        rate = f"; {speed['runs_per_min']} runs/min, {speed['frames_per_s']} frames/s" if counts["done"] else ""
        return (f"{', '.join(parts)} of {len(self.rows)} runs in {self.seconds:.1f} s{rate}; "
                f"summary in {self.out / 'summary.csv'}")


__all__ = ["COLUMNS", "EXIT_SOME_FAILED", "STATUSES", "BatchResult"]
