"""Training cases from the scene, for fine-tuning: collect, check segment names, export as DAVIS.

A case is a cine with its support segmentation sequence. Its labels are the frames the user painted
(support frames) and the result frames the user marked as reviewed (XRayVOS.ReviewedFrames on the
result sequence); a painted frame wins over a reviewed result at the same frame. Nothing else counts.

Export layout (what `xrayvos finetune --data` reads):

    JPEGImages/<case>/%05d.png   every frame (8- or 16-bit grey)
    Annotations/<case>/%05d.png  training labels only (DAVIS palette; ids by segment name, the same in every case)
    Validation/<case>/%05d.png   held-out labelled frames, scored before and after fine-tuning
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import slicer

from . import results, supports
from .sequences import ROLE_ATTRIBUTE, browsers, cine_frames, cine_of, synchronized_sequences

REVIEWED_ATTRIBUTE = results.REVIEWED_ATTRIBUTE
IMAGES, ANNOTATIONS, VALIDATION = "JPEGImages", "Annotations", "Validation"


class SegmentNameMismatch(ValueError):
    """Cases name their segments differently; carries the names per case and a suggested mapping."""

    def __init__(self, names_by_case: Mapping[str, Sequence[str]], suggestion: Mapping[str, str]) -> None:
        self.names_by_case = {k: list(v) for k, v in names_by_case.items()}
        self.suggestion = dict(suggestion)
        listing = "; ".join(f"{case}: {', '.join(names) or '(none)'}" for case, names in self.names_by_case.items())
        hint = (" Suggested mapping: " + ", ".join(f"{a!r} -> {b!r}" for a, b in self.suggestion.items())
                if self.suggestion else " Rename segments, or pass a name mapping.")
        super().__init__(f"segment names differ between cases ({listing}).{hint}")


@dataclass
class TrainingCase:
    """One cine's labelled frames. labels: {frame: uint8 [H, W]}, value k = names[k - 1]."""

    name: str
    frames: np.ndarray  # [T, H, W]
    labels: dict[int, np.ndarray]
    names: list[str]
    painted_frames: list[int] = field(default_factory=list)
    reviewed_frames: list[int] = field(default_factory=list)

    @property
    def labelled_frames(self) -> list[int]:
        return sorted(self.labels)


# -- reviewed result frames ------------------------------------------------------------------------------------
def reviewed_frames(result: "slicer.vtkMRMLSequenceNode | None") -> list[int]:
    text = result.GetAttribute(REVIEWED_ATTRIBUTE) if result is not None else None
    return sorted({int(v) for v in (text or "").split(",") if v.strip().isdigit()})


def set_reviewed(result: "slicer.vtkMRMLSequenceNode", frames: Sequence[int], reviewed: bool = True) -> list[int]:
    """Mark (or unmark) result frames as reviewed; returns all reviewed frames."""
    total = result.GetNumberOfDataNodes()
    bad = [t for t in frames if not 0 <= int(t) < total]
    if bad:
        raise ValueError(f"frame(s) {bad} outside the result of {total} frames")
    current = set(reviewed_frames(result))
    current = current | {int(t) for t in frames} if reviewed else current - {int(t) for t in frames}
    result.SetAttribute(REVIEWED_ATTRIBUTE, ",".join(str(t) for t in sorted(current)))
    return sorted(current)


# -- collecting ------------------------------------------------------------------------------------------------
def support_sequences(scene: "slicer.vtkMRMLScene") -> list[tuple["slicer.vtkMRMLSequenceBrowserNode",
                                                                   "slicer.vtkMRMLSequenceNode"]]:
    """(browser, support sequence) for every support segmentation sequence in the scene."""
    return [(browser, sequence) for browser in browsers(scene) for sequence in synchronized_sequences(browser)
            if sequence.GetAttribute(ROLE_ATTRIBUTE) == supports.ROLE]


def collect_case(browser: "slicer.vtkMRMLSequenceBrowserNode", support: "slicer.vtkMRMLSequenceNode",
                 name: str | None = None) -> TrainingCase:
    """The case's frames and labelled frames; raises ValueError when it has none."""
    cine = cine_of(browser, support)
    name = name or cine.GetName()
    infos = supports.sync_segments(browser, support)
    names = [info.name for info in infos]
    labels = supports.support_labelmaps(cine, support, infos)
    painted = sorted(labels)
    result = results.find_result_sequence(browser, support)
    reviewed = [t for t in reviewed_frames(result) if t not in labels]
    if reviewed:
        result_maps, result_ids = results.result_labelmaps(browser, result)
        first = result.GetNthDataNode(0).GetSegmentation()
        lut = np.zeros(256, np.uint8)  # result label values -> support label values, by segment name
        for k, segment_id in enumerate(result_ids):
            segment_name = first.GetSegment(segment_id).GetName()
            if segment_name not in names:
                names.append(segment_name)
            lut[k + 1] = names.index(segment_name) + 1
        for t in reviewed:
            labels[t] = lut[result_maps[t]]
    if not any(m.any() for m in labels.values()):
        raise ValueError(f"case {name!r} has no annotations: paint support frames in the Segment Editor, "
                         "or mark result frames as reviewed")
    return TrainingCase(name, cine_frames(cine), labels, names, painted, reviewed)


# -- segment names ---------------------------------------------------------------------------------------------
def unify_segment_names(cases: Sequence[TrainingCase], mapping: Mapping[str, str] | None = None,
                        allow_missing: bool = False) -> list[str]:
    """Apply `mapping` (old name -> new name; "" drops the segment) and return the common names in label order.

    Every case must then have the same names, unless allow_missing (a case may lack some objects).
    Raises SegmentNameMismatch otherwise, with a suggested mapping from close names.
    """
    mapping = dict(mapping or {})
    mapped = {case.name: [mapping.get(n, n) for n in case.names] for case in cases}
    order: list[str] = []
    for names in mapped.values():
        order += [n for n in names if n and n not in order]
    sets = {case: {n for n in names if n} for case, names in mapped.items()}
    if not allow_missing and len(cases) > 1 and any(s != set(order) for s in sets.values()):
        raise SegmentNameMismatch({c: sorted(s) for c, s in sets.items()}, suggest_mapping(sets, order))
    return order


def suggest_mapping(sets: Mapping[str, set[str]], order: Sequence[str]) -> dict[str, str]:
    """Names missing from some case -> the closest name found in more cases (or as many, but earlier in
    `order`); equal ignoring case and spacing first, then difflib's closest."""
    counts = {n: sum(n in names for names in sets.values()) for n in order}
    suggestion: dict[str, str] = {}
    for rank, name in enumerate(order):
        if counts[name] == len(sets):
            continue
        candidates = [c for i, c in enumerate(order) if c != name and c not in suggestion
                      and (counts[c] > counts[name] or (counts[c] == counts[name] and i < rank))]
        same = [c for c in candidates if _normal(c) == _normal(name)]
        close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        if close:
            suggestion[name] = close[0]
    return suggestion


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def relabel(case: TrainingCase, names: Sequence[str],
            mapping: Mapping[str, str] | None = None) -> dict[int, np.ndarray]:
    """The case's labels with value = 1 + index of its (mapped) segment name in `names`; dropped names -> 0."""
    mapping = dict(mapping or {})
    lut = np.zeros(256, np.uint8)
    for k, name in enumerate(case.names):
        target = mapping.get(name, name)
        lut[k + 1] = names.index(target) + 1 if target in names else 0
    return {t: lut[m] for t, m in case.labels.items()}


# -- export ----------------------------------------------------------------------------------------------------
def validation_frames(labelled: Sequence[int], painted: Sequence[int] | None = None) -> list[int]:
    """Labelled frames held out for validation: every other interior *painted* one, so the first and last
    labelled frames (and at least two) always train. Reviewed result frames are never held out: they are
    the base model's own predictions and would favour it. Fewer than 3 labelled frames: none held out."""
    frames = sorted(labelled)
    if len(frames) < 3:
        return []
    candidates = [t for t in frames[1:-1] if painted is None or t in set(painted)]
    return candidates[::2]


def folder_names(cases: Sequence[TrainingCase]) -> list[str]:
    """Unique, file-system-safe folder names from the case names."""
    out: list[str] = []
    for case in cases:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", case.name).strip("._") or "case"
        name, k = base, 2
        while name.lower() in {o.lower() for o in out}:  # one folder on case-insensitive file systems
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def frames_for_png(frames: np.ndarray, case: str) -> np.ndarray:
    """uint8 / uint16 frames as they are; other types rescaled linearly to uint16 (PNG holds no more)."""
    if frames.dtype in (np.uint8, np.uint16):
        return frames
    values = frames.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"case {case!r}: the cine holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    scale = 65535.0 / (high - low) if high > low else 0.0
    return np.round((values - low) * scale).astype(np.uint16)


def export_bytes(cases: Sequence[TrainingCase]) -> int:
    """Upper bound of what export_cases writes (raw frame bytes plus one label byte per labelled pixel)."""
    return sum(case.frames.nbytes + sum(m.nbytes for m in case.labels.values()) for case in cases)


def export_cases(cases: Sequence[TrainingCase], out_root: Path, names: Sequence[str],
                 mapping: Mapping[str, str] | None = None, holdout: bool = True) -> list[dict]:
    """Write the DAVIS layout described above; returns one summary per case (for the model card)."""
    import cv2  # installed on first use in Slicer: not needed to load the module

    from XRayVOSLib.io import write_mask

    summaries = []
    for case, folder in zip(cases, folder_names(cases)):
        labels = {t: m for t, m in relabel(case, names, mapping).items() if m.any()}
        if not labels:
            raise ValueError(f"case {case.name!r} has no annotations left after the segment name mapping")
        held = validation_frames(sorted(labels), case.painted_frames) if holdout else []
        frames = frames_for_png(case.frames, case.name)
        image_dir = out_root / IMAGES / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(frames):
            if not cv2.imwrite(str(image_dir / f"{t:05d}.png"), np.ascontiguousarray(frame)):
                raise OSError(f"could not write {image_dir / f'{t:05d}.png'}")
        for t, m in labels.items():
            write_mask(out_root / (VALIDATION if t in held else ANNOTATIONS) / folder / f"{t:05d}.png", m)
        summaries.append({"name": case.name, "folder": folder, "frames": int(frames.shape[0]),
                          "painted_frames": case.painted_frames, "reviewed_frames": case.reviewed_frames,
                          "train_frames": sorted(set(labels) - set(held)), "validation_frames": held})
    return summaries


__all__ = ["TrainingCase", "SegmentNameMismatch", "collect_case", "export_cases", "reviewed_frames",
           "set_reviewed", "support_sequences", "unify_segment_names", "validation_frames"]
