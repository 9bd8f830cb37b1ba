"""The base of every validated config section (recipes, augmentation): what a typo in a TOML
file must not get through."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool (or anything): ``bool``, ``bool | None``, ``Any``."""
    if annotation is bool or annotation is Any:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_bool(a) for a in typing.get_args(annotation))
    return False


class Section(BaseModel):
    """Unknown keys are errors, numbers must be finite, and ``true``/``false`` is not a number
    (pydantic would read ``batch_size = true`` as 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools_as_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field and not _takes_bool(field.annotation):
                    raise ValueError(f"{key}: expected {field.annotation}, got {value}")
        return data
