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


# No setting needs a whole number beyond 64 bits; past it torch, numpy and JSON readers fail
# (a seed of 2**70 would pass pydantic and crash the trainer's generator).
MAX_INT = 2**63 - 1


class Section(BaseModel):
    """Unknown keys are errors, numbers must be finite, whole numbers must fit in 64 bits, and
    ``true``/``false`` is not a number (pydantic would read ``batch_size = true`` as 1)."""

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

    @model_validator(mode="after")
    def _ints_fit_in_64_bits(self) -> Any:
        """Fields with their own range have refused such values already; this holds the rest."""
        for key, value in self.__dict__.items():
            if _has_huge_int(value):
                raise ValueError(f"{key}: whole numbers must lie within +-{MAX_INT}")
        return self


def _has_huge_int(value: Any) -> bool:
    """Whether ``value`` is, or directly holds (a list, a tuple, a table), an int past 64 bits."""
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, list | tuple | dict):
        return any(isinstance(v, int) and abs(v) > MAX_INT for v in items)
    return isinstance(value, int) and abs(value) > MAX_INT
