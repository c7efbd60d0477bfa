"""Qt parts of the XRayVOS module (need real Slicer): the Fine-tune section, the self-test."""
