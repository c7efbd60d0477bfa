"""The DICOM images a SEG is drawn on: one reference (SOP instance, frame number) per cine frame.

A multi-frame XA/RF object gives (its SOP Instance UID, frame t + 1) for cine frame t; a folder of
single-frame instances gives (the t-th instance, no frame number) in the order `read_cine` plays them, so a
SEG written from a propagation of that folder lines up with the frames the propagation saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from XRayVOSLib.errors import InputError


@dataclass(frozen=True)
class FrameRef:
    """One source frame: the instance it lies in and its 1-based frame number (None: a single-frame image)."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None


@dataclass(frozen=True)
class SourceImages:
    path: Path
    header: Dataset  # the (first) instance's header: patient, study and equipment are copied from it
    frames: tuple[FrameRef, ...]  # one per cine frame, in cine order
    rows: int
    columns: int

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def series_uid(self) -> str:
        return str(self.header.SeriesInstanceUID)

    @property
    def instances(self) -> dict[str, str]:
        """SOP Instance UID -> SOP Class UID of every referenced instance, in cine order."""
        return {f.sop_instance_uid: f.sop_class_uid for f in self.frames}


def _uids(ds: Dataset, path: Path) -> tuple[str, str]:
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not ds.get(k)]
    if missing:
        raise InputError(f"{path}: DICOM source has no {', '.join(missing)}; a SEG cannot reference it")
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def open_source(path: str | Path) -> SourceImages:
    """The frame references of a DICOM cine (multi-frame file or folder of single-frame instances)."""
    from XRayVOSLib.io import read_cine
    from XRayVOSLib.io.dicom import read_header

    cine = read_cine(path)
    if cine.source_kind == "dicom-multiframe":
        header = read_header(cine.path)
        sop_class, sop_instance = _uids(header, cine.path)
        frames = tuple(FrameRef(sop_class, sop_instance, t + 1) for t in range(cine.num_frames))
    elif cine.source_kind == "dicom-folder":
        headers = [read_header(cine.path / name) for name in cine.tags["files"]]
        header = headers[0]
        frames = tuple(FrameRef(*_uids(ds, cine.path / name), None) for ds, name in zip(headers, cine.tags["files"]))
    else:
        raise InputError(f"{cine.path}: a DICOM SEG references DICOM images, and this cine is {cine.source_kind} "
                         "(give the multi-frame DICOM or the folder of DICOM frames it came from)")
    _, rows, columns = cine.shape
    return SourceImages(Path(cine.path), header, frames, rows, columns)
