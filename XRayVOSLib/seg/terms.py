"""What a DICOM SEG says about each object and about the algorithm: coded terminology, colour, names.

Codes come from pydicom's code dictionary (the DICOM CIDs' SNOMED CT and DCM concepts), not typed here:
- coronary artery: category Anatomical Structure (SCT 91723000), type Coronary artery (SCT 41801008);
- catheter (SCT 19923001), guidewire (SCT 272224001 "Guide Wire"), balloon (SCT 102319006 "Percutaneous
  transluminal angioplasty balloon"), stent (SCT 65818007): category Physical object (SCT 260787004);
- anything else: category and type Physical object (SCT 260787004).
The user's name for an object is kept as it is in the Segment Label; the kind only picks the codes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.sr.codedict import codes

from XRayVOSLib import __version__
from XRayVOSLib.errors import InputError

KINDS = ("artery", "catheter", "guidewire", "balloon", "stent", "object")
KIND_CODES = {  # kind -> (segmented property category, segmented property type)
    "artery": (codes.SCT.AnatomicalStructure, codes.SCT.CoronaryArtery),
    "catheter": (codes.SCT.PhysicalObject, codes.SCT.Catheter),
    "guidewire": (codes.SCT.PhysicalObject, codes.SCT.GuideWire),
    "balloon": (codes.SCT.PhysicalObject, codes.SCT.PercutaneousTransluminalAngioplastyBalloon),
    "stent": (codes.SCT.PhysicalObject, codes.SCT.Stent),
    "object": (codes.SCT.PhysicalObject, codes.SCT.PhysicalObject),
}
# Words in a user's object name that say its kind (first match wins; "balloon catheter" is a balloon).
_NAME_WORDS = (
    ("balloon", r"balloon"),
    ("stent", r"stent"),
    ("guidewire", r"guide.?wire|\bwire\b"),
    ("catheter", r"catheter|\bcath\b"),
    ("artery", r"arter|vessel|coronar|\b(lad|lcx|rca|lm|om|d1|d2|pda|cx)\b"),
)
TRACKING_PREFIX = "xrayvos object "  # Tracking ID of a segment: how the object id survives the round trip
# Algorithm families (CID 7162) by method: the network is AI; DIS optical flow compares neighbourhoods.
_FAMILIES = {"local": "ArtificialIntelligence", "global": "ArtificialIntelligence", "flow": "NeighborhoodAnalysis",
             "flow-support": "NeighborhoodAnalysis", "copy": "ManualProcessing"}


def kind_from_name(name: str) -> str:
    """The kind an object's name suggests ("LAD" -> artery, "guide wire" -> guidewire), else "object"."""
    lowered = name.lower()
    return next((kind for kind, pattern in _NAME_WORDS if re.search(pattern, lowered)), "object")


def default_colour(object_id: int) -> tuple[int, int, int]:
    """The DAVIS palette colour of an id: the colour the PNG masks and the Slicer module show it in."""
    from XRayVOSLib.io.masks import DAVIS_PALETTE

    i = 3 * (object_id % 256)
    return DAVIS_PALETTE[i], DAVIS_PALETTE[i + 1], DAVIS_PALETTE[i + 2]


@dataclass(frozen=True)
class SegmentSpec:
    """One object as the SEG describes it: its label, kind (picks the codes) and RGB display colour."""

    label: str
    kind: str = ""  # one of KINDS; "" = from the label's words
    colour: tuple[int, int, int] | None = None  # None = the DAVIS palette colour of the object id

    def resolved(self, object_id: int) -> SegmentSpec:
        label = self.label.strip() or f"object {object_id}"
        kind = self.kind or kind_from_name(label)
        if kind not in KINDS:
            raise InputError(f"object {object_id} ({label!r}): kind {kind!r} is not one of {', '.join(KINDS)}")
        if len(label) > 64:  # Segment Label is an LO
            raise InputError(f"object {object_id}: label {label!r} is longer than DICOM's 64 characters")
        return SegmentSpec(label, kind, self.colour or default_colour(object_id))

    @property
    def codes(self) -> tuple[object, object]:
        return KIND_CODES[self.kind or kind_from_name(self.label)]


def parse_segment(text: str) -> tuple[int, SegmentSpec]:
    """'ID=NAME' or 'ID=NAME:KIND' (the CLI's --name) -> (id, SegmentSpec)."""
    ident, sep, rest = text.partition("=")
    name, colon, kind = rest.rpartition(":")
    kind = kind.strip().lower()
    if not colon or kind not in KINDS:  # a colon that names no kind belongs to the name
        name, kind = rest, ""
    if not sep or not ident.strip().isdigit() or not name.strip():
        raise InputError(f"--name {text!r}: expected ID=NAME or ID=NAME:KIND (KIND one of {', '.join(KINDS)})")
    return int(ident), SegmentSpec(name.strip(), kind)


def resolve_segments(ids: list[int], segments: Mapping[int, SegmentSpec | str] | None) -> dict[int, SegmentSpec]:
    """A resolved SegmentSpec for each object id (a str is a label); unnamed objects are "object ID"."""
    given = dict(segments or {})
    out: dict[int, SegmentSpec] = {}
    for i in ids:
        spec = given.get(i, SegmentSpec(""))
        out[i] = (SegmentSpec(spec) if isinstance(spec, str) else spec).resolved(i)
    return out


@dataclass(frozen=True)
class AlgorithmInfo:
    """The Segmentation Algorithm Identification of computed segments: name, version, family, parameters."""

    method: str = "local"
    model: str | None = None  # the model file's name (the path stays on the machine that ran it)
    model_sha256: str | None = None
    name: str = "XRayVOS"
    version: str = __version__
    settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def family(self) -> object:
        return getattr(codes.DCM, _FAMILIES.get(self.method, "ArtificialIntelligence"))

    def parameters(self, supports: list[int]) -> dict[str, str]:
        """Algorithm Parameters (key=value pairs; values hold no ',' since highdicom joins pairs with ',')."""
        params = {"method": self.method, "support_frames": " ".join(str(t) for t in supports) or "none"}
        if self.model is not None:
            params["model"] = self.model
            params["model_sha256"] = self.model_sha256 or "unavailable"
        for key, value in self.settings.items():
            if key != "method" and isinstance(value, (str, int, float, bool)):
                params[key] = str(value).replace(",", " ")
        return params


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def algorithm_for_run(method: str, model: str | Path | None, settings: Mapping[str, object] | None = None,
                      ) -> AlgorithmInfo:
    """AlgorithmInfo for a run: the model file is hashed where it exists (None or "untrained": no file)."""
    name = digest = None
    if model not in (None, "", "untrained"):
        path = Path(str(model)).expanduser()
        name = path.name
        digest = file_sha256(path) if path.is_file() else None
    elif model == "untrained":
        name = "untrained"
    return AlgorithmInfo(method=method, model=name, model_sha256=digest, settings=dict(settings or {}))
