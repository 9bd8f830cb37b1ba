"""digitlab: handwritten-digit recognition from download to served model."""

__version__ = "0.1.0"
