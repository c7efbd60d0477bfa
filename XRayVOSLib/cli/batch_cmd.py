"""`xrayvos batch MANIFEST --out DIR [--workers N | --scheduler ADDRESS] [settings...]`: a cohort on Dask.

Every run of the manifest (XRayVOSLib/batch/manifest.py: id, cine, supports, gt) writes DIR/<id>/ exactly as
`xrayvos propagate` does; DIR/summary.csv and DIR/summary.json record every run (docs/batch.md). Running
the same command again skips the runs complete with the same fingerprint and redoes the rest.

Exit status: 0 every run is done (or was complete already); 3 some runs failed (the others are complete, the
summary says which and why); 2 the manifest or an option was refused (nothing ran); 130 cancelled (Ctrl-C,
SIGTERM: finished runs are kept, the summary marks the rest cancelled).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from XRayVOSLib.cli.settings_options import add_settings_options, settings_from_args


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not >= {minimum}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    from XRayVOSLib.batch import run_batch

    settings = settings_from_args(args)
    result = run_batch(args.manifest, args.out, settings, model=args.model, scheduler=args.scheduler,
                       workers=args.workers, retries=args.retries, dicom_seg=args.dicom_seg,
                       progress=not args.quiet, dashboard=not args.no_dashboard)
    failed = [r for r in result.rows if r["status"] == "failed"]
    for row in failed[:20]:
        print(f"xrayvos batch: {row['id']} failed: {row['error']}", file=sys.stderr)
    if len(failed) > 20:
        print(f"xrayvos batch: ... and {len(failed) - 20} more failed runs (see summary.csv)", file=sys.stderr)
    print(f"xrayvos batch: {result.report()}", file=sys.stderr if args.quiet else sys.stdout)
    return result.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="propagate a cohort (a manifest of cines and supports) on a Dask cluster, resumable",
        description=(
            "Run `propagate` for every line of MANIFEST (CSV with a header id,cine,supports[,gt], or JSON lines) "
            "on Dask: an embedded cluster of worker processes (--workers) or an existing one (--scheduler). "
            "Writes DIR/<id>/ per run, DIR/summary.csv and DIR/summary.json; a re-run skips complete runs. "
            "Exit 0: all done; 3: some runs failed; 2: refused; 130: cancelled."
        ),
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="CSV or JSON-lines file, one run per line")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for DIR/<id>/ and the summary")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=at_least(1), metavar="N",
                       help="worker processes of the embedded cluster (default: one per CPU core; 1 on a GPU)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing Dask scheduler (tcp://host:8786) or its scheduler file")
    add_settings_options(parser)
    parser.add_argument("--retries", type=at_least(0), default=1, metavar="R",
                        help="runs of a task that raised an unexpected error, again (default 1; bad input is "
                             "never retried)")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="also write each result as DIR/<id>.seg.dcm, a DICOM SEG of its (DICOM) cine")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the embedded cluster's dashboard")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
