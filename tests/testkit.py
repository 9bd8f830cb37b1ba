"""Helpers that test modules import (``pythonpath = ["tests"]``; conftest is not importable).

One small training recipe for every test that trains briefly: each test names only what it
needs to differ, so a field added to the recipe schema is set in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

SMALL_RECIPE: dict[str, Any] = {
    "name": "small",
    "seed": 0,
    "model": {"name": "softmax"},
    "data": {"train_split": "train50k", "val_split": "val", "batch_size": 64},
    "solver": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
    "train": {"iters": 60, "val_interval": 20, "checkpoint_interval": 20, "log_interval": 10},
}


def write_recipe(path: Path, **fields: Any) -> Path:
    """:data:`SMALL_RECIPE` with ``fields`` (a table given as a dict updates that table, and
    ``None`` drops a key) written as TOML to ``path``."""
    recipe: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in SMALL_RECIPE.items()
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
            recipe[key] = {k: v for k, v in recipe[key].items() if v is not None}
        elif value is None:
            recipe.pop(key, None)
        else:
            recipe[key] = value
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    return path
