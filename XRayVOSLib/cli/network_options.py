"""Options that shape how the network's probabilities become masks, shared by `propagate` and `evaluate`."""

from __future__ import annotations

import argparse
from typing import Any


def add_network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="object probability that beats the background (network methods; default: the "
                             "model's calibrated value from `xrayvos calibrate`, or 0.5); giving it turns the "
                             "area prior off unless --area-prior is also given")
    parser.add_argument("--flip-average", action="store_true",
                        help="also propagate the left-right mirrored cine and average (network methods; twice the time)")
    parser.add_argument("--temporal-blend", type=float, metavar="A",
                        help="weight in [0, 1) of the previous frame's result, warped by optical flow, in each "
                             "frame (network methods; default: the model's value, 0.85 for the shipped models; "
                             "0 turns it off)")
    parser.add_argument("--support-warp", type=float, metavar="D",
                        help="weight in [0, 1] of the support mask warped straight onto each frame by optical "
                             "flow (network methods; default: the model's value, 0.15 for the shipped models)")
    parser.add_argument("--area-prior", action=argparse.BooleanOptionalAction, default=None,
                        help="per-object thresholds that keep each object's area at its support's (network "
                             "methods; default: the model's setting, on for the shipped models)")


def network_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """make_method keyword arguments from add_network_options' flags."""
    return {"object_threshold": args.threshold, "flip_average": args.flip_average,
            "temporal_blend": args.temporal_blend, "support_warp": args.support_warp, "area_prior": args.area_prior}
