"""digitlab: handwritten-digit recognition from download to served model.

Reading is importable from here: ``digitlab.read(image)``, ``digitlab.read_number(image)``,
``digitlab.load_model(folder)``, ``digitlab.recipe(name, **fields)``; the rest of the Python
API is :mod:`digitlab.api` (``api.train``, ``api.evaluate``, ``api.export``, ``api.serve``:
their names are also subpackages here, which Python would bind over them). It is loaded on
first use, so ``import digitlab`` (and ``digitlab --help``) stays instant.
"""

from typing import Any

from digitlab.version import __version__

API = (
    "DigitReading",
    "Evaluation",
    "NumberDigit",
    "NumberReading",
    "load_model",
    "read",
    "read_number",
    "recipe",
)
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from digitlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'digitlab' has no attribute {name!r}")
