"""Multi-frame DICOM cines (XA, RF, any modality with NumberOfFrames > 1); shared DICOM helpers.

Pixels are decoded by pydicom 3's pixel handlers (pylibjpeg + -libjpeg / -openjpeg, pydicom's own RLE),
one frame at a time straight from the file: the header is parsed once here and pydicom seeks to the
frame asked for, so memory stays at one frame whatever the cine's length.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels, pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import InputError
from .types import (
    DICOM_SUFFIXES,
    Cine,
    IntensityMap,
    LazyFrames,
    even_times,
    require_frames,
    to_grey,
    warn_colour,
)

# Pip packages that give pydicom a decoder, named in the error when none is installed.
_JPEG = "pylibjpeg pylibjpeg-libjpeg"
_J2K = "pylibjpeg pylibjpeg-openjpeg"
_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": _JPEG,  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": _JPEG,  # JPEG Extended
    "1.2.840.10008.1.2.4.57": _JPEG,  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": _JPEG,  # JPEG Lossless SV1 (most XA)
    "1.2.840.10008.1.2.4.80": _JPEG,  # JPEG-LS (pyjpegls also works)
    "1.2.840.10008.1.2.4.81": _JPEG,
    "1.2.840.10008.1.2.4.90": _J2K,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": _J2K,
    "1.2.840.10008.1.2.4.201": _J2K,  # HTJ2K
    "1.2.840.10008.1.2.4.202": _J2K,
    "1.2.840.10008.1.2.4.203": _J2K,
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}

_TAG_KEYWORDS = (
    "Modality", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameTime", "CineRate",
    "RecommendedDisplayFrameRate", "PositionerPrimaryAngle", "PositionerSecondaryAngle", "PatientID",
    "BitsStored", "PhotometricInterpretation", "NumberOfFrames", "Manufacturer", "SeriesDescription",
    "PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor",
    "DistanceSourceToDetector", "DistanceSourceToPatient",
)  # fmt: skip


def is_dicom_file(path: Path) -> bool:
    """True where the file carries the DICM magic after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def looks_dicom(path: Path) -> bool:
    return is_dicom_file(path) or path.name.lower().endswith(DICOM_SUFFIXES)


def read_header(path: Path) -> Dataset:
    """Every element but the (deferred, never loaded) pixel data and other large values."""
    forced = not is_dicom_file(path)  # old preamble-less files that still say .dcm
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, defer_size="4 KB", force=forced)
        # A forced read "succeeds" on any bytes; a real dataset names its SOP class or image size.
        if forced and not any(k in ds for k in ("SOPClassUID", "Rows", "PixelData")):
            raise InvalidDicomError("no DICM preamble and no DICOM elements")
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a DICOM file ({exc})") from exc
    for warning in caught:
        # pydicom reads what it can of a cut file and only warns; the missing rest must not pass for
        # "no pixel data".
        if str(warning.message).startswith("End of file reached"):
            raise InputError(f"{path}: the file is truncated (it ends inside a DICOM element, e.g. the pixel "
                             "data); copy it again")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    _check_file_length(ds, path)
    return ds


def _check_file_length(ds: Dataset, path: Path) -> None:
    """A defined-length pixel value that runs past the end of the file (pydicom defers it without looking)."""
    if "PixelData" not in ds:
        return
    raw = ds.get_item("PixelData", keep_deferred=True)
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or not length or length == 0xFFFFFFFF:
        return
    size = path.stat().st_size
    if tell + length > size:
        raise InputError(f"{path}: the file is truncated: its pixel data needs {length} bytes but only "
                         f"{max(size - tell, 0)} are in the file; copy it again")


def frame_count(ds: Dataset, path: Path) -> int:
    """NumberOfFrames as a positive integer (1 where absent), or InputError quoting the value."""
    value = ds.get("NumberOfFrames", None)
    if value in (None, ""):
        return 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: NumberOfFrames {str(value)!r} is not a whole number") from None
    if n < 1:
        raise InputError(f"{path}: NumberOfFrames is {n}; a cine needs at least 1")
    return n


def _find(ds: Dataset, keyword: str) -> object | None:
    """A top-level element, else one from the shared functional groups of an enhanced multi-frame."""
    if keyword in ds:
        return ds.get(keyword)
    for group in ds.get("SharedFunctionalGroupsSequence", [])[:1]:
        for elem in group:
            if elem.VR == "SQ" and len(elem.value) and keyword in elem.value[0]:
                return elem.value[0].get(keyword)
    return None


def _float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _plain(value: object) -> object:
    """pydicom values as plain Python (float, int, str, list) so tags serialise anywhere."""
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    return str(value)


def dicom_tags(ds: Dataset, transfer_syntax: UID) -> dict[str, object]:
    tags: dict[str, object] = {}
    for keyword in _TAG_KEYWORDS:
        value = _find(ds, keyword)
        if value not in (None, ""):
            tags[keyword] = _plain(value)
    tags["TransferSyntaxUID"] = str(transfer_syntax)
    return tags


def _pair(value: object) -> tuple[float, float] | None:
    try:
        row, col = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def dicom_spacing(ds: Dataset, tags: dict[str, object]) -> tuple[float, float] | None:
    """(row, column) mm: PixelSpacing, else ImagerPixelSpacing, else None.

    ImagerPixelSpacing is kept as stored (detector plane), not divided by the
    EstimatedRadiographicMagnificationFactor: that factor is an estimate for one depth (isocentre)
    that fits no vessel exactly, and GDCM/ITK and Slicer's DICOM loader use ImagerPixelSpacing as
    stored, so our masks overlay the volume Slicer loads. The isocentre value is in the tags.
    """
    spacing = _pair(_find(ds, "PixelSpacing"))
    if spacing is not None:
        return spacing
    spacing = _pair(_find(ds, "ImagerPixelSpacing"))
    magnification = _float(_find(ds, "EstimatedRadiographicMagnificationFactor"))
    if spacing is not None and magnification and magnification > 0:
        tags["spacing_at_isocenter"] = [spacing[0] / magnification, spacing[1] / magnification]
    return spacing


def frame_times(ds: Dataset, n: int) -> tuple[np.ndarray, bool]:
    """Seconds from the first frame, and whether they were assumed (no timing in the file)."""
    frame_time = _float(_find(ds, "FrameTime"))  # ms between frames
    if frame_time and frame_time > 0:
        return np.arange(n, dtype=np.float64) * frame_time / 1000.0, False
    vector = _find(ds, "FrameTimeVector")  # ms since the previous frame; the first entry is 0
    if vector is not None:
        steps = np.asarray([float(v) for v in (vector if isinstance(vector, MultiValue) else [vector])])
        if len(steps) == n and np.all(steps[1:] > 0):
            return np.concatenate([[0.0], np.cumsum(steps[1:])]) / 1000.0, False
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):  # frames per second
        rate = _float(_find(ds, keyword))
        if rate and rate > 0:
            return np.arange(n, dtype=np.float64) / rate, False
    return even_times(n), True


def check_decoder(ds: Dataset, path: Path) -> UID:
    ts = (getattr(ds, "file_meta", None) or {}).get("TransferSyntaxUID")
    if not ts:  # no file meta (preamble-less file): the encoding pydicom detected while reading
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ts = UID(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise InputError(
            f"{path}: transfer syntax {ts.name} ({ts}) cannot be decoded by pydicom "
            "(video-encapsulated DICOM is not read; export the cine as JPEG/RLE/uncompressed DICOM or mp4)"
        ) from exc
    if not decoder.is_available:
        package = _PACKAGES.get(str(ts), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
        raise InputError(
            f"{path}: no decoder installed for transfer syntax {ts.name} ({ts}); "
            f"install it with `pip install {package}`"
        )
    return ts


class PixelValues:
    """Per-frame mapping of decoded values onto uint8/uint16 grey where vessels are dark.

    Decided once from the header (not from the data), so every frame maps the same way:
    - RescaleSlope/Intercept are applied only when not identity, integral, and the result fits
      0..65535 (after lifting signed data to non-negative); otherwise stored values are kept with a
      warning, since XA rescale is display-only and a fractional slope would need floats.
    - MONOCHROME1 is inverted within the stored range, so vessels are dark as in MONOCHROME2.
    - BitsStored > 8 (or a rescaled range > 255) gives uint16, else uint8.
    - Colour (RGB/YBR/palette) frames become BT.601 grey, with a warning naming the file.
    """

    def __init__(self, ds: Dataset, path: Path) -> None:
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        slope = _float(ds.get("RescaleSlope")) or 1.0
        intercept = _float(ds.get("RescaleIntercept")) or 0.0
        self.slope, self.intercept, self.rescaled = 1, 0, False
        if (slope, intercept) != (1.0, 0.0):
            a, b = sorted((lo * slope + intercept, hi * slope + intercept))
            if slope.is_integer() and intercept.is_integer() and b - min(a, 0) <= 65535:
                self.slope, self.intercept, self.rescaled = int(slope), int(intercept), True
                lo, hi = int(a), int(b)
            else:
                warnings.warn(
                    f"{path}: RescaleSlope/Intercept {slope:g}/{intercept:g} not applied (not an integer map)",
                    UserWarning,
                    stacklevel=4,
                )
        self.offset = -lo if lo < 0 else 0
        self.lo, self.hi = lo, hi  # value range before the offset
        self.top = hi + self.offset
        self.invert = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
        self.palette = str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR"
        self.colour = int(ds.get("SamplesPerPixel", 1) or 1) > 1 or self.palette
        if self.colour:
            self.top, self.lo, self.hi, self.offset = 255 if bits <= 8 else 65535, 0, 65535, 0
        # > 16 bits (e.g. 32-bit dose grids): int64 here, stretched onto uint16 by the caller.
        self.wide = self.top > 65535
        self.dtype = np.dtype(np.int64 if self.wide else np.uint8 if self.top <= 255 else np.uint16)
        self._ds = ds

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        if self.colour:
            if self.palette:
                arr = apply_color_lut(arr, self._ds)
                arr = (arr >> 8).astype(np.uint8) if self.dtype == np.uint8 and arr.dtype == np.uint16 else arr
            return to_grey(arr).astype(self.dtype, copy=False)
        trivial = self.slope == 1 and self.intercept == 0 and self.offset == 0 and not self.invert
        if trivial and arr.dtype == self.dtype and self.top == np.iinfo(self.dtype).max:
            return arr
        out = np.clip(arr.astype(np.int64) * self.slope + self.intercept, self.lo, self.hi) + self.offset
        if self.invert:
            out = self.top - out
        return out.astype(self.dtype)


def _require_pixels(ds: Dataset, path: Path) -> None:
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"{path}: DICOM has no pixel data (no image in this file; e.g. a report or DICOMDIR)")


def check_frames_present(ds: Dataset, ts: UID, n: int, path: Path) -> None:
    """The pixel data must hold the n frames the header claims: checked at open (no frame is decoded), so a
    short file is refused before any output exists rather than failing at its first missing frame."""
    raw = ds.get_item("PixelData", keep_deferred=True)
    if ts.is_encapsulated:
        present = _encapsulated_frames(ds, raw, n, path)
    else:
        length = raw.length if getattr(raw, "value", None) is None else len(raw.value)
        bits = int(ds.get("BitsAllocated", 8))
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frame_bits = int(ds.Rows) * int(ds.Columns) * samples * bits
        present = min(n, length * 8 // frame_bits) if frame_bits else 0
    if present < n:
        raise InputError(f"{path}: the header says {n} frames but the pixel data holds only {present}; "
                         "the file is cut short or its NumberOfFrames is wrong")


def _encapsulated_frames(ds: Dataset, raw: object, n: int, path: Path) -> int:
    """How many frames compressed pixel data holds, from its item headers only (pydicom.encaps). The
    offset table has one entry per frame; without one, each frame needs at least one fragment."""
    from io import BytesIO

    from pydicom.encaps import parse_basic_offsets, parse_fragments

    value = getattr(raw, "value", None)
    try:
        with open(path, "rb") if value is None else BytesIO(value) as handle:
            if value is None:
                handle.seek(raw.value_tell)  # type: ignore[attr-defined]
            offsets = parse_basic_offsets(handle)
            fragments, _ = parse_fragments(handle)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: corrupt compressed pixel data ({exc})") from None
    if "ExtendedOffsetTable" in ds:
        return min(n, len(ds.ExtendedOffsetTable) // 8, fragments)
    if offsets:
        return min(n, len(offsets), fragments)
    return min(n, fragments)


def decode_error(path: Path, index: int, exc: Exception) -> InputError:
    reason = " ".join(str(exc).split())  # pydicom lists each plugin's failure on its own line: keep one line
    return InputError(f"{path}: corrupt pixel data in frame {index} ({type(exc).__name__}: {reason})")


def read_multiframe(path: Path) -> Cine:
    ds = read_header(path)
    _require_pixels(ds, path)
    n = frame_count(ds, path)
    require_frames(n, path)
    ts = check_decoder(ds, path)
    check_frames_present(ds, ts, n, path)
    values = PixelValues(ds, path)
    if values.colour:
        warn_colour(path)
    shape = (int(ds.Rows), int(ds.Columns))

    def check(arr: np.ndarray, i: int) -> np.ndarray:
        if arr.shape[:2] != shape:
            raise InputError(f"{path}: corrupt pixel data in frame {i}: decoded {arr.shape} for {shape}")
        return values(arr)

    def read_frame(i: int) -> np.ndarray:
        try:
            arr = pixel_array(path, index=i, transfer_syntax_uid=ts)
        except Exception as exc:  # decoders raise many types; all mean the same to the user
            raise decode_error(path, i, exc) from exc
        return check(arr, i)

    def read_frames(indices: Sequence[int]) -> Iterator[np.ndarray]:
        # One header parse for the whole batch; pydicom seeks frame by frame.
        it = iter_pixels(path, indices=list(indices), transfer_syntax_uid=ts)
        for i in indices:
            try:
                arr = next(it)
            except Exception as exc:
                raise decode_error(path, i, exc) from exc
            yield check(arr, i)

    frames = LazyFrames(n, shape, values.dtype, read_frame, read_frames)
    frames[0]  # decode one frame now, so a missing plugin or corrupt stream fails here, not later
    if values.wide:
        wide = IntensityMap(frames, path)
        frames = frames.map(wide, wide.dtype)
    tags = dicom_tags(ds, ts)
    times, assumed = frame_times(ds, n)
    tags.update(frame_time_assumed=assumed, rescale_applied=values.rescaled)
    return Cine(frames, times, dicom_spacing(ds, tags), "dicom-multiframe", tags, path)
