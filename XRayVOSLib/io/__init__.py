"""Cine and mask IO: DICOM (multi-frame or folder), image folders, video, NRRD/NIfTI, .npy; label-map masks.

Modules: `types` (Cine, LazyFrames, shared helpers), readers (`dicom`, `dicom_folder`, `images`, `video`),
`cine` (`read_cine`, which dispatches to them) and `masks`.
"""

from .cine import read_cine
from .masks import DAVIS_PALETTE, check_mask, read_mask, read_mask_folder, write_mask, write_mask_sequence
from .types import Cine, LazyFrames

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
