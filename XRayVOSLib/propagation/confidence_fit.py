"""Fitted confidence estimators (confidence.Estimator), one per method profile. Written by tools/fit_confidence.py."""

FITS: dict = {}
