"""Exception types. Every bad-input error names the file (or argument) and the problem."""

from __future__ import annotations


class XRayVOSError(Exception):
    """Base class of every error XRayVOS raises on purpose."""


class InputError(XRayVOSError, ValueError):
    """Bad user input: not a cine, a single frame, an unreadable transfer syntax, a bad mask, NaNs, ..."""


class ModelError(XRayVOSError, ValueError):
    """A checkpoint that is missing, corrupt, or whose config does not match the code."""


class CancelledError(XRayVOSError):
    """The run was cancelled by the user (cancel event set)."""
