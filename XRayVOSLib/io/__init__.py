"""Cine and mask IO: DICOM (multi-frame or folder), image folders, video, NRRD/NIfTI, .npy; label-map masks."""

from .cine import Cine, LazyFrames, read_cine
from .masks import DAVIS_PALETTE, check_mask, read_mask, read_mask_folder, write_mask, write_mask_sequence

__all__ = [
    "Cine",
    "DAVIS_PALETTE",
    "LazyFrames",
    "check_mask",
    "read_cine",
    "read_mask",
    "read_mask_folder",
    "write_mask",
    "write_mask_sequence",
]
