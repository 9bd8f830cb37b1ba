"""The data layer: fetch and verify MNIST, read every common format, split, export."""
