"""A result segmentation sequence as a DICOM SEG of its cine's DICOM images, and such a SEG back as a sequence.

Where the cine's DICOM comes from (dicom_source):
- "Load cine file..." (sequences.load_cine_file) records the file or folder it read on the cine sequence
  (XRayVOS.SourcePath, XRayVOS.SourceKind);
- Slicer's DICOM module: DICOMImageSequencePlugin (Slicer 5.10 and 5.12) gives every frame volume the attribute
  DICOM.instanceUIDs, the same multi-frame SOP Instance UID on every frame (XA, RF, US), or one single-frame
  instance per frame (its cine-MRI path). ctkDICOMDatabase.fileForInstance(uid) finds each file.
The SEG itself is XRayVOSLib.seg's (docs/dicom_seg.md): support frames recorded as painted by a person,
segment names, colours and kinds from the segments. A SEG of a cine from the DICOM database is inserted into
that database (ctkDICOMDatabase.insert, as Slicer's DICOMSegmentationPlugin does), which exists only in
the Slicer application: slicer-core has no slicer.dicomDatabase.

XRayVOSLib.seg imports highdicom and pydicom, which Slicer does not ship: imported inside the functions,
as Slicer imports this package when it starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import slicer
import vtk

from XRayVOSLib.errors import InputError
from XRayVOSLib.settings import NETWORK_METHODS

from . import results
from . import segments as S
from .sequences import cine_of

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM plugins on each loaded volume
SOURCE_PATH_ATTRIBUTE, SOURCE_KIND_ATTRIBUTE = "XRayVOS.SourcePath", "XRayVOS.SourceKind"  # load_cine_file
DICOM_KINDS = ("dicom-multiframe", "dicom-folder")
SEG_ATTRIBUTE = "XRayVOS.DicomSeg"  # on a sequence read from a SEG: the file it was read from
SUPPORT_FRAMES_ATTRIBUTE = "XRayVOS.SupportFrames"  # results.write_sequence records it
KIND_TAG = "XRayVOS.Kind"  # segment tag: the SEG kind (XRayVOSLib.seg.KINDS) read back, kept for a re-export
TERMINOLOGY_TAG = "TerminologyEntry"  # Slicer's: context~category~type~..., each code scheme^value^meaning
# Result attributes (logic.result_attributes) -> RunSettings field names, for the algorithm identification.
SETTINGS_ATTRIBUTES = {"Method": "method", "Device": "device", "Window": "window", "MemoryEvery": "memory_every",
                       "Decision": "decision", "Threshold": "threshold", "TemporalBlend": "temporal_blend",
                       "SupportWarp": "support_warp"}


@dataclass(frozen=True)
class DicomSource:
    """The DICOM images of a cine: `path` (a multi-frame file or a folder read_cine reads) or `instances`
    (one single-frame file per cine frame, in cine order); uids: each frame's SOP Instance UID, where known."""

    cine_name: str
    path: Path | None
    instances: tuple[Path, ...] = ()
    from_database: bool = False
    uids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegExport:
    path: Path
    source: DicomSource
    frames: int
    segments: int
    in_database: bool  # inserted into Slicer's DICOM database


def open_dicom_database() -> Any:
    """Slicer's DICOM database (ctkDICOMDatabase) where the application has one open; None otherwise."""
    database = getattr(slicer, "dicomDatabase", None)  # set by the DICOM module; absent in slicer-core
    return database if database is not None and bool(getattr(database, "isOpen", False)) else None


def frame_instance_uids(cine: "slicer.vtkMRMLSequenceNode") -> list[list[str]]:
    """The SOP Instance UIDs Slicer's DICOM plugins recorded on each frame volume ([] where none)."""
    out = []
    for t in range(cine.GetNumberOfDataNodes()):
        value = cine.GetNthDataNode(t).GetAttribute(INSTANCE_UIDS_ATTRIBUTE)
        out.append(value.split() if value else [])
    return out


def dicom_source(cine: "slicer.vtkMRMLSequenceNode", database: Any = None) -> DicomSource:
    """Where the cine's DICOM images are; InputError, naming the cine, when it has none.

    database: what answers fileForInstance(uid) (default: Slicer's open DICOM database).
    """
    name = cine.GetName()
    path, kind = cine.GetAttribute(SOURCE_PATH_ATTRIBUTE), cine.GetAttribute(SOURCE_KIND_ATTRIBUTE)
    if path:
        if kind not in DICOM_KINDS:
            raise InputError(f"cine {name!r} was loaded from {path} ({kind}), not from DICOM; a DICOM SEG references "
                             "DICOM images: load the DICOM cine it came from")
        if not Path(path).exists():
            raise InputError(f"cine {name!r} was loaded from {path}, which no longer exists")
        return DicomSource(name, Path(path))
    uids = frame_instance_uids(cine)
    if not any(uids):
        raise InputError(f"cine {name!r} has no DICOM source: it was loaded neither from Slicer's DICOM database nor "
                         "with 'Load cine file...' from a DICOM file, and a DICOM SEG references DICOM images")
    bad = next((t for t, u in enumerate(uids) if len(u) != 1), None)
    if bad is not None:
        raise InputError(f"cine {name!r}: frame {bad} has {len(uids[bad])} DICOM instance UIDs; a DICOM SEG of a "
                         "cine needs one instance per frame or one multi-frame instance")
    database = database if database is not None else open_dicom_database()
    if database is None:
        raise InputError(f"cine {name!r} came from Slicer's DICOM database, which is not open: open the DICOM "
                         "module and try again")
    flat = tuple(u[0] for u in uids)
    distinct = list(dict.fromkeys(flat))
    if 1 < len(distinct) < len(flat):
        raise InputError(f"cine {name!r}: its {len(flat)} frames come from {len(distinct)} DICOM instances; a DICOM "
                         "SEG of a cine needs one instance per frame or one multi-frame instance")
    files = []
    for uid in distinct:
        found = str(database.fileForInstance(uid) or "")
        if not found or not Path(found).is_file():
            raise InputError(f"cine {name!r}: Slicer's DICOM database has no file for SOP Instance UID {uid} "
                             f"(frame {flat.index(uid)}){f', {found} is missing' if found else ''}")
        files.append(Path(found))
    if len(distinct) == 1:
        return DicomSource(name, files[0], (), True, flat)
    return DicomSource(name, None, tuple(files), True, flat)


@contextlib.contextmanager
def source_path(source: DicomSource) -> Iterator[Path]:
    """The path XRayVOSLib.seg takes (a file or a folder); single-frame instances from the database are linked
    into a temporary folder for the time of the call, and their order is checked against the cine's."""
    if source.path is not None:
        _check_order(source.path, source)
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="xrayvos-dicom-") as tmp:
        for t, file in enumerate(source.instances):
            link = Path(tmp) / f"{t:05d}.dcm"
            try:
                os.symlink(file, link)
            except OSError:  # no symlinks (Windows without the privilege): a copy
                shutil.copyfile(file, link)
        _check_order(Path(tmp), source)
        yield Path(tmp)


def _check_order(path: Path, source: DicomSource) -> None:
    """The frames XRayVOSLib.seg references are the cine's frames, in the cine's order (where Slicer knows them)."""
    if not source.uids:
        return
    from XRayVOSLib.seg.source import open_source

    read = tuple(f.sop_instance_uid for f in open_source(path).frames)
    if read != source.uids:
        t = next((i for i, (a, b) in enumerate(zip(read, source.uids)) if a != b), min(len(read), len(source.uids)))
        raise InputError(f"cine {source.cine_name!r}: its DICOM files ({path}) give {len(read)} frames whose order "
                         f"differs from the cine's {len(source.uids)} frames at frame {t}")


# -- export ----------------------------------------------------------------------------------------------------
def export_result(browser: "slicer.vtkMRMLSequenceBrowserNode", result: "slicer.vtkMRMLSequenceNode",
                  out_path: str | Path, database: Any = None,
                  series_description: str = "XRayVOS segmentation") -> SegExport:
    """Write a result sequence as a DICOM SEG of its cine's DICOM at out_path (atomically); insert it into
    Slicer's DICOM database when the cine came from there. InputError for a cine without DICOM."""
    from XRayVOSLib.seg import write_dicom_seg

    cine = cine_of(browser, result)
    source = dicom_source(cine, database)
    labels, ids = results.result_labelmaps(browser, result)
    specs = segment_specs(result, ids)
    supports = support_frames(result)
    with source_path(source) as path:
        out = write_dicom_seg(labels, path, out_path, segments=specs, supports=supports,
                              algorithm=algorithm_of(result), series_description=series_description)
    present = {int(v) for v in np.unique(labels) if v}
    in_database = False
    if source.from_database:
        target = database if database is not None else open_dicom_database()
        if target is not None and hasattr(target, "insert"):
            target.insert(str(out))  # ctkDICOMDatabase.insert(filePath): stores a copy, indexes it
            in_database = True
    return SegExport(Path(out), source, labels.shape[0], len(present), in_database)


def support_frames(sequence: "slicer.vtkMRMLSequenceNode") -> list[int]:
    value = sequence.GetAttribute(SUPPORT_FRAMES_ATTRIBUTE) or ""
    return [int(t) for t in value.split(",") if t.strip()]


def segment_specs(sequence: "slicer.vtkMRMLSequenceNode", ids: Sequence[str]) -> dict[int, Any]:
    """Label value (ids[k] -> k + 1) -> XRayVOSLib.seg.SegmentSpec: the segment's name and colour (first item),
    and its kind from the first item whose segment carries one (terminology is kept per item)."""
    from XRayVOSLib.seg import SegmentSpec

    out = {}
    for value, segment_id in enumerate(ids, start=1):
        found = [item.GetSegmentation().GetSegment(segment_id)
                 for item in (sequence.GetNthDataNode(i) for i in range(sequence.GetNumberOfDataNodes()))]
        found = [segment for segment in found if segment is not None]
        colour = tuple(int(round(min(max(c, 0.0), 1.0) * 255)) for c in found[0].GetColor())
        kind = next((k for k in map(segment_kind, found) if k), "")
        out[value] = SegmentSpec(found[0].GetName(), kind, colour)
    return out


def _tag(segment: "slicer.vtkSegment", key: str) -> str:
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else ""


def segment_kind(segment: "slicer.vtkSegment") -> str:
    """The SEG kind: one read from a SEG, else the one whose codes the segment's terminology carries, else ""
    (the library then takes it from the name's words)."""
    from XRayVOSLib.seg.terms import KIND_CODES, KINDS

    kept = _tag(segment, KIND_TAG)
    if kept in KINDS:
        return kept
    fields = _tag(segment, TERMINOLOGY_TAG).split("~")
    if len(fields) < 3:
        return ""
    codes = tuple(f.split("^")[1] if f.count("^") >= 2 else "" for f in fields[1:3])  # (category, type) values
    return next((kind for kind, (category, kind_type) in KIND_CODES.items()
                 if codes == (category.value, kind_type.value)), "")


def algorithm_of(result: "slicer.vtkMRMLSequenceNode") -> Any:
    """The algorithm identification of a result: its method, model file (hashed) and settings, from the
    attributes the run recorded (logic.result_attributes)."""
    from XRayVOSLib.model_files import default_model_path
    from XRayVOSLib.seg import algorithm_for_run

    settings = {field: result.GetAttribute(f"XRayVOS.{key}") for key, field in SETTINGS_ATTRIBUTES.items()
                if result.GetAttribute(f"XRayVOS.{key}") not in (None, "")}
    method = settings.get("method", "local")
    model = result.GetAttribute("XRayVOS.Model") if method in NETWORK_METHODS else None
    if model == "bundled":
        model = default_model_path()
    return algorithm_for_run(method, model, settings)


# -- import ----------------------------------------------------------------------------------------------------
def load_seg(scene: "slicer.vtkMRMLScene", browser: "slicer.vtkMRMLSequenceBrowserNode",
             cine: "slicer.vtkMRMLSequenceNode", seg_path: str | Path, database: Any = None,
             name: str | None = None) -> "slicer.vtkMRMLSequenceNode":
    """A DICOM SEG of the cine's DICOM -> a new result-role segmentation sequence synchronised with the cine,
    written like a propagated result (results.write_sequence). InputError for a SEG of another cine."""
    from XRayVOSLib.seg import read_dicom_seg

    seg_path = Path(seg_path).expanduser()
    source = dicom_source(cine, database)
    with source_path(source) as path:
        seg = read_dicom_seg(seg_path, path)
    frames = cine.GetNumberOfDataNodes()
    if seg.labels.shape[0] != frames:
        raise InputError(f"{seg_path}: its cine has {seg.labels.shape[0]} frames, {cine.GetName()!r} has {frames}")
    ids = sorted(seg.objects)
    if len(ids) > 255:
        raise InputError(f"{seg_path}: {len(ids)} segments; XRayVOS handles at most 255 objects")
    lookup = np.zeros(int(seg.labels.max(initial=0)) + 1, np.uint8)
    for value, object_id in enumerate(ids, start=1):
        if object_id < lookup.size:
            lookup[object_id] = value
    colours, method = seg_display(seg_path)
    infos = _infos(ids, seg.objects, seg.kinds, colours)
    attributes = {SUPPORT_FRAMES_ATTRIBUTE: ",".join(str(t) for t in seg.supports), SEG_ATTRIBUTE: str(seg_path),
                  "XRayVOS.Method": method}
    return results.write_sequence(scene, browser, cine, lookup[seg.labels], infos, {}, attributes,
                                  name or f"{cine.GetName()} {seg_path.stem}")


def _infos(ids: list[int], names: dict[int, str], kinds: dict[int, str],
           colours: dict[int, tuple[float, float, float]]) -> list[S.SegmentInfo]:
    """Segment metadata in object id order; IDs from the names, as supports.paint_frame makes them."""
    infos, used = [], set()
    for k, object_id in enumerate(ids):
        base = re.sub(r"\s+", "_", names[object_id].strip()) or f"Segment_{object_id}"
        segment_id, n = base, 1
        while segment_id in used:
            n += 1
            segment_id = f"{base}_{n}"
        used.add(segment_id)
        info = S.new_info(segment_id, names[object_id], colours.get(object_id), k)
        if kinds.get(object_id):
            info.template.SetTag(KIND_TAG, kinds[object_id])
        infos.append(info)
    return infos


def seg_display(seg_path: Path) -> tuple[dict[int, tuple[float, float, float]], str | None]:
    """({object id: RGB 0..1} from each segment's Recommended Display CIELab Value, the method in its algorithm
    parameters) of a SEG; XRayVOSLib.seg.read_dicom_seg returns neither."""
    import highdicom as hd
    import pydicom

    from XRayVOSLib.seg.terms import TRACKING_PREFIX

    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    colours, method = {}, None
    for item in ds.get("SegmentSequence", []):
        tracking = re.fullmatch(re.escape(TRACKING_PREFIX) + r"(\d+)", str(item.get("TrackingID", "")))
        object_id = int(tracking.group(1)) if tracking else int(item.SegmentNumber)  # as read_dicom_seg does
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            rgb = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in lab)).to_rgb()
            colours[object_id] = tuple(float(c) / 255.0 for c in rgb)
        for algorithm in item.get("SegmentationAlgorithmIdentificationSequence", []):
            found = re.search(r"(?:^|,)\s*method=([^,]+)", str(algorithm.get("AlgorithmParameters", "")))
            method = method or (found.group(1).strip() if found else None)
    return colours, method
