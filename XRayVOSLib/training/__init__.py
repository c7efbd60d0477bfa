"""Training: clip datasets, augmentation, losses, the training step and loop."""
