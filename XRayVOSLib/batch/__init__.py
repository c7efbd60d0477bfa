"""Cohort runs on a Dask cluster: `xrayvos batch MANIFEST --out DIR` and run_batch() (docs/batch.md).

Each run writes DIR/<id>/ exactly as `xrayvos propagate` does (XRayVOSLib.run_one); a re-run skips runs
complete with the same fingerprint; one failing run is recorded in DIR/summary.csv and stops nothing else.
"""

from XRayVOSLib.batch.manifest import RunSpec, read_manifest
from XRayVOSLib.batch.runner import default_workers, run_batch
from XRayVOSLib.batch.summary import COLUMNS, EXIT_SOME_FAILED, BatchResult

__all__ = ["COLUMNS", "EXIT_SOME_FAILED", "BatchResult", "RunSpec", "default_workers", "read_manifest", "run_batch"]
