"""The memory bank: raw key/value maps of support frames (always kept) and keyframes (capped).

Only the raw maps are stored (keys N x Ck x h x w, values N x K x Cv x h x w); local windows are gathered
at read time by XRayVOSLib.model.matching, so memory grows by one map per keyframe, never by k^2 copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from XRayVOSLib.model.matching import value_rows


@dataclass
class MemoryEntry:
    frame: int
    key: torch.Tensor  # Ck, h, w
    value: torch.Tensor  # K, Cv, h, w
    is_support: bool


@dataclass
class MemoryBank:
    """Supports are permanent; when the keyframes exceed `max_keyframes`, the oldest are dropped first."""

    max_keyframes: int = 5
    entries: list[MemoryEntry] = field(default_factory=list)
    _stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add(self, frame: int, key: torch.Tensor, value: torch.Tensor, is_support: bool = False) -> None:
        self.entries.append(MemoryEntry(frame, key, value, is_support))
        keyframes = [e for e in self.entries if not e.is_support]
        while len(keyframes) > self.max_keyframes:
            oldest = keyframes.pop(0)
            self.entries.remove(oldest)
        self._stacked = None

    def clear_keyframes(self) -> None:
        self.entries = [e for e in self.entries if e.is_support]
        self._stacked = None

    @property
    def frames(self) -> list[int]:
        return [e.frame for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys 1, N, Ck, h, w; values 1, N, K, Cv, h, w), cached until the bank changes."""
        keys, values, _ = self._stack()
        return keys, values

    def value_rows(self) -> torch.Tensor:
        """The values as matching.value_rows lays them out (1, N*M, K*Cv), cached with the stack."""
        return self._stack()[2]

    def _stack(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.entries:
            raise RuntimeError("memory is empty: add the support frames first")
        if self._stacked is None:
            keys = torch.stack([e.key for e in self.entries]).unsqueeze(0)
            values = torch.stack([e.value for e in self.entries]).unsqueeze(0)
            self._stacked = (keys, values, value_rows(values).contiguous())
        return self._stacked

    def nbytes(self) -> int:
        return sum(e.key.numel() * e.key.element_size() + e.value.numel() * e.value.element_size()
                   for e in self.entries)
