"""The one process protocol: JSON event lines and exit codes of every background-capable command.

`python -m XRayVOSLib.worker --job JOB`, `xrayvos propagate --progress-json` and `xrayvos finetune
--progress-json` print only JSON on stdout, one object per line, each with an "event" key:

    {"event": "started", ...}                       work begins (propagation: method, frames, supports, device)
    {"event": "stage", "stage": name}               a training stage begins (finetune only)
    {"event": "progress", "done": d, "total": n}    after each unit of work (a frame visit: a frame between two
                                                    supports counts twice; a training step, with "loss", "eta_s")
    {"event": "done", ...}                          the last line of a run that finished (outputs written)
    {"event": "cancelled", "done": d, "total": n}   the last line after a cancel (SIGINT, SIGTERM, SIGBREAK)
    {"event": "error", "message": "..."}            the last line after a failure (also on stderr)

Exit codes (the same for every command):
"""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK = 0  # done: every output written
EXIT_FAILED = 1  # an unexpected failure (a bug): traceback on stderr
EXIT_INPUT = 2  # bad input, a bad option, or an OS error (unwritable folder, full disk): one line on stderr
EXIT_SOME_FAILED = 3  # `xrayvos batch`: some runs failed (recorded in summary.csv), every other run is complete
EXIT_CANCELLED = 130  # cancelled by a signal or the caller; complete outputs only, never a partial result file

EXIT_CODES = {EXIT_OK: "done", EXIT_FAILED: "failed", EXIT_INPUT: "bad input",
              EXIT_SOME_FAILED: "some runs of a batch failed", EXIT_CANCELLED: "cancelled"}
__doc__ = (__doc__ or "") + "".join(f"    {code:<4} {what}\n" for code, what in EXIT_CODES.items())


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed at once so the parent sees progress as it happens."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


__all__ = ["EXIT_CANCELLED", "EXIT_CODES", "EXIT_FAILED", "EXIT_INPUT", "EXIT_OK", "EXIT_SOME_FAILED", "emit"]
