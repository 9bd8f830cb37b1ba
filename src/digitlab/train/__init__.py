"""Training: the loop, learning-rate policies and checkpoints."""
