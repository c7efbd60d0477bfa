"""`read_cine`, which picks a reader by what the path holds.

Readers live beside this file: `dicom.py` (multi-frame DICOM), `dicom_folder.py` (folders of
single-frame DICOMs), `video.py` (mp4/avi through PyAV) and `images.py` (image folders, NRRD/NIfTI
through SimpleITK, .npy). The types they share are in `types.py`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .types import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES, NRRD_SUFFIXES, VIDEO_SUFFIXES, Cine


def read_cine(path: str | Path) -> Cine:
    """Read a cine from a multi-frame DICOM, a folder of DICOMs or images, a video, NRRD/NIfTI or .npy.

    Raises InputError naming the file and the problem for anything that is not a cine of >= 2 frames.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    from . import dicom, dicom_folder, images, video  # deferred: pydicom and PyAV load only when a cine is read

    if path.is_dir():
        if dicom_folder.folder_has_dicom(path):
            return dicom_folder.read_folder(path)
        return images.read_image_folder(path)
    name = path.name.lower()
    if dicom.is_dicom_file(path) or name.endswith(DICOM_SUFFIXES):
        return dicom.read_multiframe(path)
    if name.endswith(VIDEO_SUFFIXES):
        return video.read_video(path)
    if name.endswith(NRRD_SUFFIXES) or name.endswith(NIFTI_SUFFIXES):
        return images.read_volume(path)
    if name.endswith(".npy"):
        return images.read_npy(path)
    if name.endswith(IMAGE_SUFFIXES):
        raise InputError(f"{path}: a single image holds 1 frame; XRayVOS needs at least 2 frames (give the folder)")
    raise InputError(
        f"{path}: not a cine (unknown suffix {path.suffix!r}); expected DICOM, a folder of DICOM or image "
        f"frames, {'/'.join(VIDEO_SUFFIXES[:2])} video, NRRD, NIfTI or .npy"
    )
