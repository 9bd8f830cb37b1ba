"""digitlab: handwritten-digit recognition from download to served model."""

from digitlab.version import __version__

__all__ = ["__version__"]
