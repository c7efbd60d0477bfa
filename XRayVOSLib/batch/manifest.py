"""The batch manifest: one line per run, as CSV (a header row) or JSON lines.

    id,cine,supports,gt
    p001_lao,cines/p001_lao.dcm,0:masks/p001_f0.png,gt/p001_lao
    p002_rao,cines/p002_rao.dcm,0:masks/p002_f0.png;20:masks/p002_f20.png,

    {"id": "p001_lao", "cine": "cines/p001_lao.dcm", "supports": ["0:masks/p001_f0.png"], "gt": "gt/p001_lao"}

- id: the run's folder name under --out (letters, digits, '.', '_', '-'; unique, also ignoring case, so the
  folders are distinct on macOS and Windows too);
- cine: anything `read_cine` reads (DICOM file or folder, image folder, video, NRRD/NIfTI, .npy);
- supports: one or more T:MASK as `propagate --support` takes them (T 0-based), ';'-separated in CSV, a list
  (or one string) in JSON;
- gt (optional): a folder of ground-truth label maps %05d.png of the annotated frames, scored like `evaluate`.

Relative paths are relative to the manifest's folder, so a manifest travels with its data. A malformed
manifest is refused whole, naming the file and line; a cine or mask that is missing or bad is not a manifest
error: that run fails on its own and the others go on.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from XRayVOSLib.errors import InputError
from XRayVOSLib.run_one import parse_support

FIELDS = ("id", "cine", "supports", "gt")
REQUIRED = ("id", "cine", "supports")
RESERVED_IDS = ("summary.csv", "summary.json")  # the batch's own files in --out
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class RunSpec:
    """One run of a batch: absolute paths, supports as T:MASK with an absolute MASK."""

    id: str
    cine: Path
    supports: tuple[str, ...]
    gt: Path | None = None

    @property
    def support_frames(self) -> list[int]:
        return sorted(parse_support(spec)[0] for spec in self.supports)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "cine": str(self.cine), "supports": list(self.supports),
                "gt": None if self.gt is None else str(self.gt)}


def read_manifest(path: str | Path) -> list[RunSpec]:
    """Every run of a CSV or JSON-lines manifest (by suffix: .csv; .jsonl/.ndjson/.json; else by content)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's CSV often starts with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest {path}: cannot be read ({exc})") from None
    suffix = path.suffix.lower()
    as_json = suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and text.lstrip().startswith("{"))
    rows = _json_rows(path, text) if as_json else _csv_rows(path, text)
    specs = runs_from_records(rows, base=path.parent.resolve(), source=f"manifest {path}")
    if not specs:
        raise InputError(f"manifest {path}: lists no runs")
    return specs


def runs_from_records(records: Iterable[tuple[int, Mapping[str, Any]]], base: Path,
                      source: str = "manifest") -> list[RunSpec]:
    """RunSpecs from (line, record) pairs; ids checked for uniqueness. Used by read_manifest and run_batch."""
    specs: list[RunSpec] = []
    seen: dict[str, int] = {}
    for line, record in records:
        where = f"{source} line {line}"
        spec = _spec(record, base, where)
        other = seen.get(spec.id.lower())
        if other is not None:
            raise InputError(f"{where}: id {spec.id!r} is also on line {other} (ids name the output folders)")
        seen[spec.id.lower()] = line
        specs.append(spec)
    return specs


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in FIELDS]
    missing = [f for f in REQUIRED if f not in header]
    if unknown or missing:
        raise InputError(f"manifest {path}: the header row must name the columns {', '.join(FIELDS[:3])} "
                         f"(and optionally gt); {_problem(unknown, missing)}")
    reader.fieldnames = header
    rows = []
    for row in reader:
        if None in row:
            raise InputError(f"manifest {path} line {reader.line_num}: more values than columns (a ',' in a "
                             "path needs the path in double quotes)")
        if any((v or "").strip() for v in row.values()):
            supports = [s.strip() for s in (row.get("supports") or "").split(";") if s.strip()]
            rows.append((reader.line_num, {**row, "supports": supports}))
    return rows


def _json_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"manifest {path} line {number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise InputError(f"manifest {path} line {number}: expected a JSON object, got {type(record).__name__}")
        unknown = [k for k in record if k not in FIELDS]
        if unknown:
            raise InputError(f"manifest {path} line {number}: {_problem(unknown, [])}; the keys are "
                             f"{', '.join(FIELDS)}")
        rows.append((number, record))
    return rows


def _problem(unknown: list[str], missing: list[str]) -> str:
    parts = ([f"unknown {', '.join(map(repr, unknown))}"] if unknown else []) + (
        [f"missing {', '.join(missing)}"] if missing else [])
    return "; ".join(parts)


def _spec(record: Mapping[str, Any], base: Path, where: str) -> RunSpec:
    for name in REQUIRED:
        if not record.get(name):
            raise InputError(f"{where}: no {name}")
    run_id = str(record["id"]).strip()
    if not _ID.fullmatch(run_id) or run_id.lower() in RESERVED_IDS:
        raise InputError(f"{where}: id {run_id!r} cannot name a folder; use letters, digits, '.', '_' and '-' "
                         "(starting with a letter or digit), and not summary.csv or summary.json")
    supports = record["supports"]
    supports = [supports] if isinstance(supports, str) else supports
    if not isinstance(supports, list) or not supports or not all(isinstance(s, str) for s in supports):
        raise InputError(f"{where}: supports must be one or more T:MASK strings, got {record['supports']!r}")
    resolved = []
    for text in supports:
        try:
            t, mask = parse_support(text.strip())
        except InputError as exc:
            raise InputError(f"{where}: {str(exc).replace('--support ', 'support ')}") from None
        resolved.append(f"{t}:{_path(mask, base)}")
    frames = [int(s.partition(":")[0]) for s in resolved]
    if len(set(frames)) != len(frames):
        raise InputError(f"{where}: a support frame is given twice ({', '.join(map(str, sorted(frames)))})")
    gt = record.get("gt")
    return RunSpec(run_id, _path(Path(str(record["cine"]).strip()), base), tuple(resolved),
                   _path(Path(str(gt).strip()), base) if gt else None)


def _path(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))  # "a/../b" as b, links kept


__all__ = ["FIELDS", "RunSpec", "read_manifest", "runs_from_records"]
