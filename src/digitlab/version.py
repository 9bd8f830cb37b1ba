"""The package version, in a module of its own so that any layer may read it without
importing the package root (whose lazy API sits above every layer)."""

__version__ = "0.1.0"
