"""The pass cache of incremental re-propagation: keep every pass of a run, read back the unchanged ones.

A pass is a function of its support mask, its direction, the cine and the method (pipeline.py), so a pass
of an earlier run whose support, direction, cine and method are unchanged is read back instead of computed,
and so is the first part of one: adding a support at c cuts the pass from the support before c short at c,
and what it had computed up to c is still exact. A corrected or new support at c therefore recomputes only
the two passes that start at c; every other frame comes back bit-identical to the last run, and the whole
result is bit-identical to a full run with the same supports (Testing/propagation/test_incremental.py).

Layout of a cache folder (OUT/.pass-cache/ for `xrayvos propagate`):

    cache.json     {"version", "identity" (method: settings, model digest, device, acceleration, versions;
                    cine: shape, dtype, sha256 of the pixels; object ids), "identity_sha256", "passes": [
                    {"file", "source", "direction", "support_sha256", "targets"}]}, written last and atomically
    pass-<identity>-<source>-<fwd|bwd>-<support>.npz
                   one pass: members 00000 ... (the n frames it visited, in order: [K, H, W] uint16 quantised
                   object probabilities, pipeline.quantize) and "agreement" ([n, K] float32 network-vs-fused IoU)

npz and JSON only (no pickle: np.load(allow_pickle=False)). A changed setting, model, device, cine or set of
object ids changes the identity, and nothing is read back. One run at a time per cache folder (the CLI's
result folder is locked by outputs.OutputFolder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from XRayVOSLib.errors import InputError
from XRayVOSLib.outputs import TEMP_PREFIX, write_json_atomic
from XRayVOSLib.propagation.plan import Pass

CACHE_VERSION = 1
MANIFEST = "cache.json"
CACHE_FOLDER = ".pass-cache"  # inside a result folder (no "xrayvos-" in the name: that marks leftovers)
PASS_FILE = re.compile(r"pass-[0-9a-f]{12}-\d{5,}-(fwd|bwd)-[0-9a-f]{12}\.npz")
PassOutput = tuple[np.ndarray, np.ndarray]


def cine_digest(frames: Any) -> str:
    """sha256 of a cine's shape, pixel type and pixels, frame by frame (a lazy cine is read once)."""
    digest = hashlib.sha256(json.dumps([list(frames.shape), str(np.dtype(frames.dtype))]).encode())
    for t in range(int(frames.shape[0])):
        digest.update(np.ascontiguousarray(frames[t]).tobytes())
    return digest.hexdigest()


def mask_digest(labels: np.ndarray) -> str:
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return hashlib.sha256(repr(labels.shape).encode() + labels.tobytes()).hexdigest()


def direction(p: Pass) -> str:
    return "fwd" if p.targets[0] > p.source else "bwd"


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Which part of the identity differs, in words."""
    parts = [key for key in ("method", "cine", "objects", "version") if old.get(key) != new.get(key)]
    if "method" in parts:
        method_old, method_new = old.get("method") or {}, new["method"]
        keys = sorted(k for k in set(method_old) | set(method_new) if method_old.get(k) != method_new.get(k))
        parts[parts.index("method")] = "the " + ", ".join(keys)
    words = {"cine": "the cine", "objects": "the object ids", "version": "the cache version"}
    return " and ".join(words.get(p, p) for p in parts) + " changed"


class PassCache:
    """One run's pass store (pipeline.PassStore): reads the passes of the cache in `resume_from` (default:
    `folder` itself) and writes this run's into `folder`. `status` says what happened, in words."""

    def __init__(self, folder: str | Path, resume_from: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.resume_from = Path(resume_from) if resume_from is not None else self.folder
        self.status = "not begun"
        self.counts = {"computed": 0, "reused": 0, "passes_computed": 0, "passes_reused": 0}

    # --- run ----------------------------------------------------------------------------------------------
    def begin(self, method_identity: Mapping[str, Any], frames: Any, supports: Mapping[int, np.ndarray],
              object_ids: Sequence[int]) -> None:
        self.identity = {"version": CACHE_VERSION, "method": dict(method_identity),
                         "cine": {"shape": [int(s) for s in frames.shape], "dtype": str(np.dtype(frames.dtype)),
                                  "sha256": cine_digest(frames)},
                         "objects": [int(i) for i in object_ids]}
        canonical = json.dumps(self.identity, sort_keys=True)
        self.identity_sha = hashlib.sha256(canonical.encode()).hexdigest()
        self.support_sha = {int(t): mask_digest(m) for t, m in supports.items()}
        self.entries: list[dict[str, Any]] = []
        self.old = self._read_manifest()

    def _read_manifest(self) -> dict[tuple, dict[str, Any]]:
        path = self.resume_from / MANIFEST
        if not path.is_file():
            self.status = "no earlier cache: every pass computed"
            return {}
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            passes = manifest["passes"]
            same = manifest["identity_sha256"] == self.identity_sha
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a readable XRayVOS pass cache ({exc})") from None
        if not same:
            self.status = f"cache not used: {_changed(manifest.get('identity', {}), self.identity)}"
            return {}
        self.status = "cache used"
        return {(e["source"], e["direction"], e["support_sha256"]): e for e in passes
                if isinstance(e, dict) and PASS_FILE.fullmatch(str(e.get("file", "")))}

    def _name(self, p: Pass) -> str:
        return f"pass-{self.identity_sha[:12]}-{p.source:05d}-{direction(p)}-{self.support_sha[p.source][:12]}.npz"

    def reuse(self, p: Pass) -> Iterator[PassOutput] | None:
        """The cached outputs of pass p's targets, or None when p (or a longer pass it begins) is not cached."""
        entry = self.old.get((p.source, direction(p), self.support_sha[p.source]))
        if entry is None or int(entry["targets"]) < len(p.targets):
            return None
        source = self.resume_from / entry["file"]
        target = self.folder / entry["file"]
        if not source.is_file():
            return None
        if source.resolve() != target.resolve():
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)  # a result folder's staging copy sits beside it: same file system
            except OSError:
                shutil.copyfile(source, target)
        self.entries.append(dict(entry))
        self.counts["reused"] += len(p.targets)
        self.counts["passes_reused"] += 1
        return _read_pass(target, len(p.targets))

    def record(self, p: Pass, outputs: Iterator[PassOutput]) -> Iterator[PassOutput]:
        """Pass the outputs through, writing them to this pass's file (renamed into place when complete)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = self._name(p)
        tmp = self.folder / f"{TEMP_PREFIX}{name}"
        agreement = []
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                for i, (q, a) in enumerate(outputs):
                    _write_member(archive, f"{i:05d}", q)
                    agreement.append(a)
                    self.counts["computed"] += 1
                    yield q, a
                _write_member(archive, "agreement", np.asarray(agreement, dtype=np.float32))
            os.replace(tmp, self.folder / name)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.entries.append({"file": name, "source": p.source, "direction": direction(p),
                             "support_sha256": self.support_sha[p.source], "targets": len(agreement)})
        self.counts["passes_computed"] += 1

    def finish(self) -> None:
        """Write the manifest (last, atomically), then delete the pass files it no longer names."""
        write_json_atomic(self.folder / MANIFEST, {"version": CACHE_VERSION, "identity": self.identity,
                                                   "identity_sha256": self.identity_sha, "passes": self.entries})
        keep = {e["file"] for e in self.entries}
        for path in self.folder.iterdir():
            if PASS_FILE.fullmatch(path.name) and path.name not in keep:
                path.unlink(missing_ok=True)

    def steps(self) -> dict[str, Any]:
        return {**self.counts, "cache": self.status}


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
        np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def _read_pass(path: Path, count: int) -> Iterator[PassOutput]:
    """The first `count` outputs of a pass file, one frame at a time."""
    with np.load(path, allow_pickle=False) as archive:
        agreement = archive["agreement"]
        if len(agreement) < count:
            raise InputError(f"{path}: holds {len(agreement)} frames, the cache manifest promised {count}")
        for i in range(count):
            yield archive[f"{i:05d}"], agreement[i]


__all__ = ["CACHE_FOLDER", "CACHE_VERSION", "MANIFEST", "PassCache", "cine_digest", "mask_digest"]
