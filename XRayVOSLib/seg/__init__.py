"""DICOM Segmentation (SEG) for cine segmentations: `write_dicom_seg` and `read_dicom_seg`.

    from XRayVOSLib.seg import write_dicom_seg, read_dicom_seg, SegmentSpec, algorithm_for_run
    write_dicom_seg(labels, "run.dcm", "run_seg.dcm", segments={1: "LAD", 2: SegmentSpec("JR4", "catheter")},
                    supports=[0], algorithm=algorithm_for_run("local", "models/xrayvos_default.safetensors"))
    seg = read_dicom_seg("run_seg.dcm", "run.dcm")   # seg.labels [T, H, W], seg.objects {id: label}

Modules: `terms` (codes, colours, names, algorithm identification), `source` (the DICOM frames referenced),
`pixels` (1-bit frames staged on disk), `write`, `read`. See docs/dicom_seg.md.
"""

from .read import SegLabels, read_dicom_seg
from .terms import KINDS, AlgorithmInfo, SegmentSpec, algorithm_for_run, kind_from_name
from .write import write_dicom_seg

__all__ = ["KINDS", "AlgorithmInfo", "SegLabels", "SegmentSpec", "algorithm_for_run", "kind_from_name",
           "read_dicom_seg", "write_dicom_seg"]
