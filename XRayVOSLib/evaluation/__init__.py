"""Evaluation: run methods on a DAVIS-layout data set (`evaluate_methods`), score prediction folders
against ground truth (`evaluate_folders`), write results.json / results.csv / plots.

The research diagnostics built on it (model card, drift, confusion, resolution bound) are scripts in the
repository's tools/, not part of the package."""

from XRayVOSLib.evaluation.runner import (
    choose_support_frames,
    evaluate_folders,
    evaluate_methods,
    list_videos,
    load_support_frames,
    read_frames,
    write_csv,
)

__all__ = [
    "choose_support_frames",
    "evaluate_folders",
    "evaluate_methods",
    "list_videos",
    "load_support_frames",
    "read_frames",
    "write_csv",
]
