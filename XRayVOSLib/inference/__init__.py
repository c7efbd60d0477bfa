"""Inference: the memory bank, the propagation engine, the merge rule and the public Propagator API."""
