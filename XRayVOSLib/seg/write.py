"""`write_dicom_seg`: a propagated cine as a DICOM Segmentation (PS3.3 A.51, C.8.20), BINARY, one segment per object.

Who builds what. highdicom builds the parts it can express for this case: the SOP base (`highdicom.SOPClass`:
file meta, SOP Common, General Series/Equipment), the copy of the source's Patient and Study modules
(`copy_patient_and_study_information`), each Segment Sequence item (`highdicom.seg.SegmentDescription`:
coded terminology, CIELab colour, algorithm identification, tracking id) and the source's acquisition
equipment (`highdicom.ContributingEquipment.for_image_acquisition`). highdicom's `Segmentation` itself
refuses a multi-frame source without a Frame of Reference (highdicom issues 200, 284, 369: it indexes frames
by position only), and XA/RF images carry no Frame of Reference, so pydicom writes the rest as the standard
asks for that case (A.51.5.1, and D. Clunie in highdicom issue 159): per-frame Derivation Image references
(Referenced SOP Instance UID + Referenced Frame Number, Spatial Locations Preserved YES) give the 1:1 pixel
correspondence; no Pixel Measures / Plane Position / Orientation (they need a Frame of Reference); the
Multi-frame Dimension module indexes frames by (Referenced Segment Number, Temporal Position Index = cine
frame + 1).

Who painted what: the standard has no coded frame-level "manual" flag (CID 7203 has no such derivation),
so a support frame's Derivation Image item says so in its Derivation Description, and each segment's
Segment Algorithm Type is MANUAL (all its frames painted), SEMIAUTOMATIC (painted frames + computed ones:
the usual case) or AUTOMATIC (no support), with the algorithm (XRayVOS, version, method, model file
sha256, settings, support frames) in its Segmentation Algorithm Identification.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage

from XRayVOSLib import __version__
from XRayVOSLib.errors import InputError
from XRayVOSLib.outputs import atomic_open, check_file_target

from .pixels import FrameStore
from .source import SourceImages, open_source
from .terms import TRACKING_PREFIX, AlgorithmInfo, SegmentSpec, resolve_segments

MANUAL_DESCRIPTION = "Support frame: painted by a person"
COMPUTED_DESCRIPTION = "Computed by XRayVOS from the support frames"
TEMPORAL_POSITION_INDEX = 0x00209128
FRAME_CONTENT_SEQUENCE = 0x00209111
REFERENCED_SEGMENT_NUMBER = 0x0062000B
SEGMENT_IDENTIFICATION_SEQUENCE = 0x0062000A


def write_dicom_seg(labels: Any, source: str | Path, out_path: str | Path, *,
                    segments: Mapping[int, SegmentSpec | str] | None = None, supports: Sequence[int] = (),
                    algorithm: AlgorithmInfo | None = None, series_number: int = 901,
                    series_description: str = "XRayVOS segmentation") -> Path:
    """Write `labels` (cine label maps) as a DICOM SEG referencing the DICOM cine `source`; returns out_path.

    labels: a [T, H, W] array-like (ndarray, memmap, LazyFrames) or an iterable of (t, [H, W]) pairs in any
    order (e.g. a propagation's frames as they finish); frames absent from the iterable are empty. Each
    frame is packed as it comes, so only one frame of labels is held here. segments: object id -> label (or
    SegmentSpec) for named objects. supports: the 0-based frames a person painted. algorithm: what computed
    the other frames (default: XRayVOS `local`, no model named). The file is written atomically
    (XRayVOSLib.outputs.atomic_open: a temporary file beside out_path, then os.replace).
    """
    out = check_file_target(out_path, "SEG")  # before any work: a folder, or a folder we cannot write
    src = open_source(source)
    supports = sorted({int(t) for t in supports})
    if any(not 0 <= t < src.num_frames for t in supports):
        raise InputError(f"supports {supports}: outside the {src.num_frames} frames of {src.path}")
    with tempfile.TemporaryDirectory(prefix="xrayvos-seg-") as tmp:  # staged 1-bit frames
        store = FrameStore(Path(tmp), (src.rows, src.columns))
        try:
            for t, frame in _frames(labels, src):
                store.add(t, frame)
        finally:
            store.close()
        ids = sorted({object_id for object_id, _ in store.index})
        if not ids:
            raise InputError(f"nothing to write to {out}: every frame of the segmentation is empty")
        numbers = {object_id: k + 1 for k, object_id in enumerate(ids)}
        order = sorted(store.index, key=lambda key: (numbers[key[0]], key[1]))  # segment, then time
        ds = _dataset(src, resolve_segments(ids, segments), numbers, order, supports,
                      algorithm or AlgorithmInfo(), series_number, series_description)
        pixels = Path(tmp) / "pixels.bin"
        store.assemble(order, pixels)
        with open(pixels, "rb") as buffer, atomic_open(out) as handle:  # out: the old file or the whole new one
            ds.PixelData = buffer  # pydicom 3 streams a buffered value into the file: no copy in memory
            dcmwrite(handle, ds, enforce_file_format=True)
    return out


def _frames(labels: Any, src: SourceImages) -> Iterator[tuple[int, np.ndarray]]:
    """(t, [H, W] integer labels) checked against the source; a 3-D array-like is read frame by frame."""
    shape = getattr(labels, "shape", None)
    pairs: Iterable[tuple[int, Any]]
    if shape is not None and len(shape) == 3:
        if shape[0] != src.num_frames:
            raise InputError(f"the segmentation has {shape[0]} frames but {src.path} has {src.num_frames}")
        pairs = ((t, labels[t]) for t in range(shape[0]))
    else:
        pairs = labels
    seen: set[int] = set()
    for t, frame in pairs:
        t, frame = int(t), np.asarray(frame)
        if not 0 <= t < src.num_frames or t in seen:
            raise InputError(f"segmentation frame {t}: {'given twice' if t in seen else 'out of range'} "
                             f"for the {src.num_frames} frames of {src.path}")
        if frame.shape != (src.rows, src.columns) or not np.issubdtype(frame.dtype, np.integer):
            raise InputError(f"segmentation frame {t} is {frame.dtype} {frame.shape}; {src.path} needs integer "
                             f"labels of {src.rows}x{src.columns}")
        seen.add(t)
        yield t, frame


def _dataset(src: SourceImages, specs: dict[int, SegmentSpec], numbers: dict[int, int],
             order: list[tuple[int, int]], supports: list[int], algorithm: AlgorithmInfo,
             series_number: int, series_description: str) -> Dataset:
    header = src.header
    ds = hd.SOPClass(
        study_instance_uid=header.StudyInstanceUID, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), sop_class_uid=SegmentationStorage, instance_number=1, modality="SEG",
        manufacturer="XRayVOS", manufacturer_model_name="XRayVOS", software_versions=__version__,
        device_serial_number=__version__, transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=series_description,
    )
    if "SpecificCharacterSet" in header:  # the copied names keep their encoding
        ds.SpecificCharacterSet = header.SpecificCharacterSet
    ds.copy_patient_and_study_information(header)
    ds.ContributingEquipmentSequence = [hd.ContributingEquipment.for_image_acquisition(header)]
    _image_modules(ds, src)
    frames_of: dict[int, set[int]] = {}
    for object_id, t in order:
        frames_of.setdefault(object_id, set()).add(t)
    ds.SegmentSequence = [_segment(object_id, numbers[object_id], specs[object_id], frames_of[object_id],
                                   supports, algorithm) for object_id in numbers]
    _dimensions(ds)
    ds.NumberOfFrames = len(order)
    ds.SharedFunctionalGroupsSequence = [Dataset()]
    ds.PerFrameFunctionalGroupsSequence = [_frame_group(src, numbers[object_id], t, t in supports)
                                           for object_id, t in order]
    _references(ds, src)
    return ds


def _image_modules(ds: Dataset, src: SourceImages) -> None:
    """General Image, Image Pixel and Segmentation Image modules (C.7.6.1, C.7.6.3, C.8.20.2)."""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    # Type 2C (no Image Orientation/Position here): the source's, as the frames keep its pixel grid.
    ds.PatientOrientation = src.header.get("PatientOrientation", None)
    ds.ContentLabel = "XRAYVOS"
    ds.ContentDescription = "Objects segmented on every frame of the cine"
    ds.ContentCreatorName = None
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = src.rows, src.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.LossyImageCompression = "00"
    ds.SegmentationType = "BINARY"
    ds.SegmentsOverlap = "NO"  # one label map per frame: an object's pixel belongs to no other


def _segment(object_id: int, number: int, spec: SegmentSpec, frames: set[int], supports: list[int],
             algorithm: AlgorithmInfo) -> Dataset:
    painted = frames & set(supports)
    kind = "MANUAL" if painted == frames else "SEMIAUTOMATIC" if painted else "AUTOMATIC"
    identification = None
    if kind != "MANUAL":  # C.8.20.2: the algorithm is named for every segment not wholly manual
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=algorithm.family, version=algorithm.version,
            parameters=algorithm.parameters(supports))
    category, property_type = spec.codes
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=spec.label, segmented_property_category=category,
        segmented_property_type=property_type, algorithm_type=kind, algorithm_identification=identification,
        tracking_id=f"{TRACKING_PREFIX}{object_id}", tracking_uid=hd.UID(),
        display_color=hd.color.CIELabColor.from_rgb(*spec.colour))


def _dimensions(ds: Dataset) -> None:
    """Multi-frame Dimension module (C.7.6.17): frames indexed by segment, then cine frame."""
    uid = hd.UID()
    ds.DimensionOrganizationSequence = [Dataset()]
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = uid
    ds.DimensionIndexSequence = []
    for pointer, group, label in ((REFERENCED_SEGMENT_NUMBER, SEGMENT_IDENTIFICATION_SEQUENCE, "Segment"),
                                  (TEMPORAL_POSITION_INDEX, FRAME_CONTENT_SEQUENCE, "Cine frame")):
        item = Dataset()
        item.DimensionOrganizationUID = uid
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = group
        item.DimensionDescriptionLabel = label
        ds.DimensionIndexSequence.append(item)


def _frame_group(src: SourceImages, number: int, t: int, painted: bool) -> Dataset:
    """Per-frame functional groups of one SEG frame: its source frame, segment and cine position."""
    ref = src.frames[t]
    source_item = Dataset()
    source_item.ReferencedSOPClassUID = ref.sop_class_uid
    source_item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if ref.frame_number is not None:  # Type 1C: only for a multi-frame source
        source_item.ReferencedFrameNumber = ref.frame_number
    source_item.PurposeOfReferenceCodeSequence = [hd.sr.CodedConcept.from_code(
        codes.DCM.SourceImageForImageProcessingOperation)]
    source_item.SpatialLocationsPreserved = "YES"
    derivation = Dataset()
    derivation.DerivationDescription = MANUAL_DESCRIPTION if painted else COMPUTED_DESCRIPTION
    derivation.DerivationCodeSequence = [hd.sr.CodedConcept.from_code(codes.DCM.SegmentationImageDerivation)]
    derivation.SourceImageSequence = [source_item]
    content = Dataset()
    content.DimensionIndexValues = [number, t + 1]
    content.TemporalPositionIndex = t + 1
    segment = Dataset()
    segment.ReferencedSegmentNumber = number
    group = Dataset()
    group.DerivationImageSequence = [derivation]
    group.FrameContentSequence = [content]
    group.SegmentIdentificationSequence = [segment]
    return group


def _references(ds: Dataset, src: SourceImages) -> None:
    """General Reference (Source Image Sequence) and Common Instance Reference (Referenced Series)."""
    refs = []
    for sop_instance, sop_class in src.instances.items():
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_instance
        refs.append(ref)
    ds.SourceImageSequence = refs
    series = Dataset()
    series.SeriesInstanceUID = src.series_uid
    series.ReferencedInstanceSequence = refs
    ds.ReferencedSeriesSequence = [series]
