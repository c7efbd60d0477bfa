"""BINARY segmentation frames on disk, one cine frame at a time, never the whole cine's masks in memory.

Each (object, cine frame) with content is packed to 1 bit per pixel and appended to a staging file as it
arrives (frames may come in any order, e.g. as a propagation finishes them). `assemble` then writes Pixel
Data in the SEG's frame order. PS3.5 8.1.1 (Bits Allocated 1): bits are packed little-endian within each
byte and frames follow each other with no padding, so a frame of H*W pixels starts mid-byte when H*W is not
a multiple of 8; only the end of Pixel Data is padded (to an even length, PS3.5 8.2). numpy packs the bits
(np.packbits, bitorder="little", as pydicom.pixels.pack_bits does); the carry between frames is ours,
because pack_bits packs one array and we never hold all frames at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np


class FrameStore:
    """Packed binary frames of every object, staged in `folder`; `index[(object_id, t)]` = (offset, size)."""

    def __init__(self, folder: Path, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.path = folder / "frames.bin"
        self._handle: BinaryIO = open(self.path, "wb")
        self.index: dict[tuple[int, int], tuple[int, int]] = {}
        self._offset = 0

    def add(self, t: int, labels: np.ndarray) -> list[int]:
        """Stage every object of cine frame t (a [H, W] label map); returns the object ids it holds."""
        ids = [int(i) for i in np.unique(labels) if i != 0]
        for object_id in ids:
            packed = np.packbits(labels == object_id, axis=None, bitorder="little").tobytes()
            self._handle.write(packed)
            self.index[(object_id, t)] = (self._offset, len(packed))
            self._offset += len(packed)
        return ids

    def close(self) -> None:
        self._handle.close()

    def assemble(self, order: Iterable[tuple[int, int]], out: Path) -> int:
        """Write the frames (object_id, t) in `order` as one Pixel Data bit stream; returns its length in bytes."""
        self.close()
        pixels = self.shape[0] * self.shape[1]
        carry = np.zeros(0, np.uint8)  # bits of the last partial byte, waiting for the next frame
        written = 0
        with open(self.path, "rb") as staged, open(out, "wb") as sink:
            for key in order:
                offset, size = self.index[key]
                staged.seek(offset)
                raw = np.frombuffer(staged.read(size), np.uint8)
                if pixels % 8 == 0 and carry.size == 0:  # byte-aligned: copy as staged
                    sink.write(raw.tobytes())
                    written += size
                    continue
                bits = np.concatenate([carry, np.unpackbits(raw, bitorder="little")[:pixels]])
                whole = bits.size - bits.size % 8
                sink.write(np.packbits(bits[:whole], bitorder="little").tobytes())
                written += whole // 8
                carry = bits[whole:]
            if carry.size:
                sink.write(np.packbits(carry, bitorder="little").tobytes())
                written += 1
            if written % 2:
                sink.write(b"\x00")
                written += 1
        return written
