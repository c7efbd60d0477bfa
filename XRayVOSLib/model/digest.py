"""Content digests of model and data files: what a resumed training state is matched against, and how
the one accepted ImageNet .pth is recognised before it is opened. Standard library only."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_BLOCK = 1 << 20


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()  # hashlib.file_digest is Python 3.11+; the package supports 3.10
    for block in iter(lambda: handle.read(_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return _sha256(handle)


def weights_sha256(path: str | Path) -> str:
    """sha256 of a safetensors file's tensor bytes alone (past its 8-byte length and JSON header): the same
    weights under other metadata (steps, paths, carried settings) give the same digest."""
    with open(path, "rb") as handle:
        handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        return _sha256(handle)
