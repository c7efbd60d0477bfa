"""`read_dicom_seg`: a DICOM SEG back into per-frame label maps [T, H, W] of the cine it was drawn on.

highdicom reads the SEG (`highdicom.seg.segread`) and maps its frames onto the source's frames through the
per-frame Derivation Image references (`get_pixels_by_source_frame` / `_by_source_instance`), which is how
the standard says a SEG without a Frame of Reference lines up with its images. Object ids come back from
each segment's Tracking ID ("xrayvos object N", written by `write_dicom_seg`); a SEG from elsewhere has
none, and its segment numbers are the ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from XRayVOSLib.errors import InputError

from .source import SourceImages, open_source
from .terms import KIND_CODES, TRACKING_PREFIX
from .write import MANUAL_DESCRIPTION

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_CHUNK = 32  # source frames decoded per highdicom call: bounds its [frames, H, W, segments] working array


@dataclass
class SegLabels:
    """A SEG read onto its cine: label maps, and what each object id is."""

    labels: np.ndarray  # [T, H, W] uint8 (uint16 where an id exceeds 255); 0 = background
    objects: dict[int, str]  # object id -> Segment Label
    kinds: dict[int, str] = field(default_factory=dict)  # object id -> terms.KINDS entry from its coded type
    supports: tuple[int, ...] = ()  # frames whose SEG frames say a person painted them
    source_uids: tuple[str, ...] = ()  # the SOP Instance UIDs the SEG references


def read_dicom_seg(seg_path: str | Path, source: str | Path) -> SegLabels:
    """Read the SEG at seg_path onto the DICOM cine `source`; InputError if it references another source."""
    import highdicom as hd

    seg_path = Path(seg_path).expanduser()
    src = open_source(source)
    try:
        # Lazy: frames are read from the file as they are mapped, not all at once. highdicom 0.28's lazy
        # reader mis-slices 1-bit frames that start mid-byte (H*W not a multiple of 8), so those load eagerly.
        seg = hd.seg.segread(seg_path, lazy_frame_retrieval=(src.rows * src.columns) % 8 == 0)
    except Exception as exc:  # pydicom and highdicom raise many types for a file that is not a valid SEG
        if not seg_path.is_file():
            raise InputError(f"{seg_path}: no such file") from exc
        raise InputError(f"{seg_path}: not a readable DICOM Segmentation ({type(exc).__name__}: {exc})") from exc
    referenced = tuple(str(uid) for _, _, uid in seg.get_source_image_uids())
    foreign = [uid for uid in referenced if uid not in src.instances]
    if foreign or not referenced:
        theirs = foreign[0] if foreign else "no image"
        raise InputError(f"{seg_path}: references SOP Instance UID {theirs}, but {src.path} is "
                         f"{next(iter(src.instances))}: this SEG belongs to another cine")
    ids = _object_ids(seg)
    lookup = np.zeros(max(ids) + 1, np.uint8 if max(ids.values()) <= 255 else np.uint16)
    for number, object_id in ids.items():
        lookup[number] = object_id
    labels = np.zeros((src.num_frames, src.rows, src.columns), lookup.dtype)
    try:
        for start in range(0, src.num_frames, _CHUNK):
            stop = min(start + _CHUNK, src.num_frames)
            labels[start:stop] = lookup[_segment_numbers(seg, src, start, stop)]
    except (ValueError, KeyError, IndexError) as exc:
        raise InputError(f"{seg_path}: its frames do not map onto {src.path} ({exc})") from exc
    return SegLabels(labels, {ids[n]: str(seg.get_segment_description(n).segment_label) for n in ids},
                     {ids[n]: _kind(seg.get_segment_description(n)) for n in ids}, _supports(seg, src), referenced)


def _segment_numbers(seg: object, src: SourceImages, start: int, stop: int) -> np.ndarray:
    """[stop - start, H, W] segment numbers of cine frames start..stop-1 (0 where no segment)."""
    options = dict(combine_segments=True, assert_missing_frames_are_empty=True, dtype=np.uint16)
    refs = src.frames[start:stop]
    if refs[0].frame_number is not None:  # one multi-frame instance
        return seg.get_pixels_by_source_frame(refs[0].sop_instance_uid, [r.frame_number for r in refs], **options)
    return seg.get_pixels_by_source_instance([r.sop_instance_uid for r in refs], **options)


def _object_ids(seg: object) -> dict[int, int]:
    """Segment number -> object id (from the Tracking ID we write, else the segment number itself)."""
    ids: dict[int, int] = {}
    for number in seg.segment_numbers:
        tracking = seg.get_segment_description(number).get("TrackingID", "")
        match = re.fullmatch(re.escape(TRACKING_PREFIX) + r"(\d+)", str(tracking))
        ids[number] = int(match.group(1)) if match else number
    if len(set(ids.values())) != len(ids) or max(ids.values()) > 65535:
        return {number: number for number in ids}  # ids that cannot be kept apart: fall back to numbers
    return ids


def _kind(description: object) -> str:
    """The terms.KINDS entry whose (category, type) codes the segment carries; "" for other codes."""
    category = description.segmented_property_category
    property_type = description.segmented_property_type
    for kind, (cat, typ) in KIND_CODES.items():
        if (category.value, property_type.value) == (cat.value, typ.value):
            return kind
    return ""


def _supports(seg: object, src: SourceImages) -> tuple[int, ...]:
    """Cine frames that any SEG frame marks as painted by a person (its Derivation Description)."""
    where = {(f.sop_instance_uid, f.frame_number): t for t, f in enumerate(src.frames)}
    painted: set[int] = set()
    for group in seg.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in group.get("DerivationImageSequence", []):
            if derivation.get("DerivationDescription") != MANUAL_DESCRIPTION:
                continue
            for ref in derivation.get("SourceImageSequence", []):
                number = ref.get("ReferencedFrameNumber")
                t = where.get((str(ref.ReferencedSOPInstanceUID), int(number) if number is not None else None))
                if t is not None:
                    painted.add(t)
    return tuple(sorted(painted))
