"""Where digitlab keeps its files: one home, overridable by ``DIGITLAB_HOME``."""

from __future__ import annotations

import os
from pathlib import Path


def digitlab_home() -> Path:
    """The root for caches; ``DIGITLAB_HOME`` wins, else the platform's user cache dir."""
    env = os.environ.get("DIGITLAB_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("digitlab", appauthor=False))


def mnist_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds the four verified MNIST files."""
    return Path(cache_dir).expanduser() if cache_dir else digitlab_home() / "mnist"


FONTS_ENV = "DIGITLAB_FONTS"


def fonts_dir() -> Path:
    """The handwriting fonts ``make fonts`` installs (:mod:`digitlab.synth.fonts`):
    ``$DIGITLAB_FONTS``, else ``.fonts`` in the source checkout digitlab runs from (where the
    Makefile puts them, so a test's private ``DIGITLAB_HOME`` still finds them), else
    ``fonts`` in the cache home."""
    env = os.environ.get(FONTS_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "digitlab").is_dir():
        return checkout / ".fonts"
    return digitlab_home() / "fonts"
