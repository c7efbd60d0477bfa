"""Support-frame files of the hard v2 held-out protocol, written next to a v2 data set.

`xrayvos evaluate --supports FILE.json` reads `{video: [t, ...]}`. Three files cover the protocol:
- supports_first.json: frame 0 (often mid-injection: parts of the tree fill after the support);
- supports_max_opacification.json: the frame where the injected tree is most opacified;
- supports_two.json: frame 0 and the frame of maximal opacification (the middle frame when that is 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from XRayVOSLib.errors import InputError

SUPPORT_FILES = ("supports_first.json", "supports_max_opacification.json", "supports_two.json")


def protocol_supports(meta: dict) -> dict[str, dict[str, list[int]]]:
    """File name -> {video: [support frames]} from a v2 data set's meta.json content."""
    videos = meta.get("videos", {})
    missing = [v for v, m in videos.items() if "max_opacification_frame" not in m]
    if not videos or missing:
        raise InputError(f"meta.json: no v2 videos with a max_opacification_frame ({', '.join(missing[:3]) or 'none'})")
    first, peak, two = {}, {}, {}
    for video, m in sorted(videos.items()):
        t = int(m["max_opacification_frame"])
        first[video], peak[video] = [0], [t]
        two[video] = sorted({0, t if t > 0 else int(m["num_frames"]) // 2})
    return dict(zip(SUPPORT_FILES, (first, peak, two), strict=True))


def write_protocol_supports(root: str | Path) -> list[Path]:
    """Write the three supports files into `root` (atomically); returns their paths."""
    root = Path(root)
    meta_path = root / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: cannot read the data set's metadata ({exc})") from exc
    written = []
    for name, supports in protocol_supports(meta).items():
        path = root / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(supports, indent=1))
        os.replace(tmp, path)
        written.append(path)
    return written
