"""A cine stored as a folder of single-frame DICOMs of one series (one file per frame)."""

from __future__ import annotations

import warnings
from datetime import date, datetime, time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.valuerep import DA, DT, TM

from ..errors import InputError
from .dicom import (
    PixelValues,
    check_decoder,
    check_frames_present,
    decode_error,
    dicom_spacing,
    dicom_tags,
    frame_count,
    frame_times,
    is_dicom_file,
    looks_dicom,
    read_header,
    read_multiframe,
)
from .types import Cine, IntensityMap, LazyFrames, natural_key, require_frames, warn_colour


def folder_has_dicom(folder: Path) -> bool:
    return any(p.is_file() and looks_dicom(p) for p in folder.iterdir())


def _acquired_at(ds: Dataset) -> float | None:
    """Seconds since 0001-01-01 from AcquisitionDateTime, else Acquisition/Content Date+Time."""
    try:
        if ds.get("AcquisitionDateTime"):
            stamp = DT(ds.AcquisitionDateTime)
            return (stamp.replace(tzinfo=None) - datetime(1, 1, 1)).total_seconds()
        for date_kw, time_kw in (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime")):
            if ds.get(time_kw):
                day = DA(ds.get(date_kw)) if ds.get(date_kw) else date(1, 1, 1)
                clock: time = TM(ds.get(time_kw))
                return (datetime.combine(day, clock) - datetime(1, 1, 1)).total_seconds()
    except (ValueError, TypeError, OverflowError):
        return None
    return None


_LAYOUT = ("BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation")


def _check_frame_headers(headers: list[tuple[Path, Dataset]]) -> dict[Path, object]:
    """Every file's header against the first (size, bit depth, pixel layout) and its pixel data against its
    length, before any frame is decoded; returns each file's transfer syntax."""
    first_path, first = headers[0]
    layout = [first.get(k) for k in _LAYOUT]
    syntaxes = {}
    shape = (int(first.Rows), int(first.Columns))
    for p, ds in headers:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise InputError(f"{p}: frame is {ds.Columns}x{ds.Rows} but {first_path.name} is {shape[1]}x{shape[0]}")
        for key, wanted in zip(_LAYOUT, layout):
            if ds.get(key) != wanted:
                raise InputError(f"{p}: {key} is {ds.get(key)} but {first_path.name} has {wanted}; "
                                 "every frame of a cine must have the same size and pixel format")
        syntaxes[p] = check_decoder(ds, p)
        check_frames_present(ds, syntaxes[p], 1, p)
    return syntaxes


def read_folder(folder: Path) -> Cine:
    """A folder of single-frame DICOMs of one series, in InstanceNumber order (else acquisition time)."""
    headers: list[tuple[Path, Dataset]] = []
    for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if p.is_file() and not p.name.startswith(".") and looks_dicom(p):
            try:
                ds = read_header(p)
            except InputError:
                if is_dicom_file(p):
                    raise  # a DICOM frame that cannot be read (e.g. truncated) is not skipped
                continue  # a stray non-DICOM file beside the frames
            if "PixelData" in ds and "Rows" in ds:  # skip DICOMDIR, reports, presentation states
                headers.append((p, ds))
    if not headers:
        raise InputError(f"{folder}: folder holds no DICOM file with pixel data")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        raise InputError(f"{folder}: folder mixes {len(series)} series; put one series per folder")
    multi = [p for p, ds in headers if frame_count(ds, p) > 1]
    if multi:
        if len(headers) == 1:
            return read_multiframe(multi[0])
        raise InputError(f"{folder}: folder holds multi-frame DICOMs ({multi[0].name}, ...); pass one file")
    require_frames(len(headers), folder)

    numbers = [ds.get("InstanceNumber") for _, ds in headers]
    stamps = [_acquired_at(ds) for _, ds in headers]
    if all(v not in (None, "") for v in numbers) and len({int(v) for v in numbers}) == len(numbers):
        order = np.argsort([int(v) for v in numbers], kind="stable")
    elif all(s is not None for s in stamps) and len(set(stamps)) == len(stamps):
        order = np.argsort(stamps, kind="stable")
    else:
        order = np.arange(len(headers))  # natural file-name order
        warnings.warn(
            f"{folder}: no unique InstanceNumber or acquisition time; frames in file-name order",
            UserWarning,
            stacklevel=3,
        )
    headers = [headers[i] for i in order]
    stamps = [stamps[i] for i in order]

    first_path, first = headers[0]
    syntaxes = _check_frame_headers(headers)
    shape = (int(first.Rows), int(first.Columns))
    values = PixelValues(first, first_path)
    if values.colour:
        warn_colour(folder)

    def read_frame(i: int) -> np.ndarray:
        p = headers[i][0]
        try:
            arr = pixel_array(p, transfer_syntax_uid=syntaxes[p])
        except Exception as exc:
            raise decode_error(p, 0, exc) from exc
        if arr.shape[:2] != shape:
            raise InputError(f"{p}: corrupt pixel data: decoded {arr.shape} for {shape}")
        return values(arr)

    frames = LazyFrames(len(headers), shape, values.dtype, read_frame)
    frames[0]
    if values.wide:
        wide = IntensityMap(frames, folder)
        frames = frames.map(wide, wide.dtype)
    tags = dicom_tags(first, syntaxes[first_path])
    tags["NumberOfFrames"] = len(headers)
    if all(s is not None for s in stamps) and np.all(np.diff(stamps) > 0):
        times, assumed = np.asarray(stamps, dtype=np.float64) - stamps[0], False
    else:
        times, assumed = frame_times(first, len(headers))
    tags.update(frame_time_assumed=assumed, rescale_applied=values.rescaled)
    tags["files"] = [p.name for p, _ in headers]
    return Cine(frames, times, dicom_spacing(first, tags), "dicom-folder", tags, folder)
