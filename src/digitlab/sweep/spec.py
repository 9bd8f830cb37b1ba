"""A sweep's settings as one plain object, and the checks that refuse a sweep before any
training: bad fields, bad values, and any objective that would choose on the test split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from digitlab.errors import DigitlabError
from digitlab.recipes import load_recipe
from digitlab.sweep.space import MAX_TRIALS, Axis, grid_points, overrides_for

if TYPE_CHECKING:
    from digitlab.recipes import Recipe

Objective = Literal["val_accuracy", "val_loss"]
DIRECTIONS: dict[str, str] = {"val_accuracy": "maximize", "val_loss": "minimize"}
SPEC_FILE, RESULTS_JSON, RESULTS_CSV, PLOT_FILE, STUDY_FILE = (
    "sweep.json",
    "results.json",
    "results.csv",
    "sweep.png",
    "study.db",
)

Echo = Callable[[str], None]


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep needs; plain values, so worker processes receive it as it is.

    ``grid`` axes make a grid sweep; ``ranges`` with ``trials`` > 0 an Optuna sweep that adds
    ``trials`` trials to its study. ``overrides`` apply to every trial.
    """

    recipe: str
    out: Path
    grid: tuple[Axis, ...] = ()
    ranges: tuple[Axis, ...] = ()
    trials: int = 0
    overrides: tuple[str, ...] = ()
    objective: Objective = "val_accuracy"
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    prune: bool = True
    prune_after: int = 5
    seed: int | None = None
    device: str = "auto"

    @property
    def kind(self) -> str:
        return "grid" if self.grid else "optuna"

    @property
    def axes(self) -> tuple[Axis, ...]:
        return self.grid or self.ranges

    def identity(self) -> dict[str, Any]:
        """What makes two sweeps the same sweep (so a folder or study can be continued)."""
        return {
            "kind": self.kind,
            "recipe": self.recipe,
            "overrides": list(self.overrides),
            "axes": [a.describe() for a in self.axes],
            "objective": self.objective,
        }


@dataclass
class SweepResult:
    """The trials, best first, and the files written into the sweep folder."""

    spec: SweepSpec
    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows and self.rows[0]["state"] == "COMPLETE" else None


def check_sweep(spec: SweepSpec) -> None:
    """Refuse a sweep that cannot run, before any training: one message saying what to change."""
    if spec.objective not in DIRECTIONS:
        raise DigitlabError(f"unknown objective {spec.objective!r}; use {', '.join(DIRECTIONS)}")
    if spec.grid and spec.ranges:
        raise DigitlabError("--grid and --range are two kinds of sweep; give one kind")
    if not spec.grid and not spec.ranges:
        raise DigitlabError("nothing to sweep: give --grid KEY=V1,V2,... or --optuna N --range ...")
    if spec.ranges and spec.trials < 1:
        raise DigitlabError("--range declares what --optuna N searches; add --optuna N")
    if spec.grid and spec.trials:
        raise DigitlabError("--optuna searches --range declarations, not a --grid")
    if spec.grid and (spec.storage or spec.study_name):
        raise DigitlabError("--storage and --study-name are for --optuna sweeps")
    if spec.workers < 1:
        raise DigitlabError("--workers must be 1 or more")
    keys = [a.key for a in spec.axes]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise DigitlabError(f"{', '.join(twice)} swept twice; give each field once")
    fixed = {o.partition("=")[0].strip() for o in spec.overrides}
    both = sorted(fixed & set(keys))
    if both:
        raise DigitlabError(f"{', '.join(both)} is both swept and fixed by --set; drop one")
    _check_validates_on_validation(load_recipe(spec.recipe, spec.overrides), spec.recipe)
    if spec.grid:
        size = math.prod(len(axis.values) for axis in spec.axes)
        if size > MAX_TRIALS:
            raise DigitlabError(f"the grid has {size:,} trials; at most {MAX_TRIALS:,}")
    flag = "--grid" if spec.grid else "--range"
    for axis in spec.axes:
        where = f"{flag} {axis.describe()}"
        for value in axis.probes():
            recipe = load_trial_recipe(spec, {axis.key: value}, where)
            _check_validates_on_validation(recipe, f"{spec.recipe} with {axis.key}={value}")
    if spec.grid:
        for params in grid_points(spec.grid):  # fields that only clash in combination
            load_trial_recipe(spec, params, "--grid")


def _check_validates_on_validation(recipe: Recipe, name: str) -> None:
    data = recipe.data
    if data.val_split in ("test", data.test_split):
        raise DigitlabError(
            f"recipe {name} validates on the test split, and a sweep chooses by validation; "
            "add --set data.train_split=train50k --set data.val_split=val"
        )
    if data.val_split is None and data.val_fraction is None:
        raise DigitlabError(
            f"recipe {name} has no validation data to choose by; add --set "
            "data.train_split=train50k --set data.val_split=val (or --set data.val_fraction=0.1)"
        )


def load_trial_recipe(spec: SweepSpec, params: dict[str, Any], where: str = "") -> Recipe:
    try:
        return load_recipe(spec.recipe, [*spec.overrides, *overrides_for(params)])
    except DigitlabError as exc:
        raise DigitlabError(f"{where}: {exc}" if where else str(exc)) from None


def describe_identity(identity: dict | None) -> str:
    """A recorded sweep in one line, for messages that refuse to mix two sweeps."""
    if not isinstance(identity, dict):
        return f"unreadable {SPEC_FILE}"
    parts = [str(identity.get("recipe"))]
    parts += [f"--set {o}" for o in identity.get("overrides", [])]
    parts += [*identity.get("axes", []), f"by {identity.get('objective')}"]
    return " ".join(parts)
