"""XRayVOS engine: cine and mask IO, local-matching memory network, inference, training, metrics.

This package imports no Slicer or Qt, so it runs from a terminal, a batch script, or Slicer's Python.
"""

__version__ = "0.1.0"
