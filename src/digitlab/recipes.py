"""Recipes: one validated object holding everything a training run needs, loaded from TOML.

A recipe names a model, the data splits, the solver, the learning-rate policy, the length of
training and the augmentation. Every field has exactly one home here; ``--set a.b=value``
overrides any of them, and the resolved recipe is what a run stores beside its weights.

Where recipes live: ``recipes/*.toml`` at the repository root is the one source of truth. A
name (``caffe-lenet``) is looked up there (found from this file's location in the ``src/``
checkout, which is also where an editable install points), then in ``digitlab/recipes_data/``
inside the package, which a wheel build fills with a copy of ``recipes/``. Anything that looks
like a path (contains a slash or ends in ``.toml``) is read as a file.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from digitlab.augment import AugmentConfig
from digitlab.config import Section
from digitlab.errors import DigitlabError
from digitlab.fileio import read_regular

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PACKAGED_RECIPES = Path(__file__).resolve().parent / "recipes_data"


class ModelSection(Section):
    """Which registered model, and optionally a different input scaling than its default."""

    name: str
    normalization: tuple[float, float] | None = Field(
        None, description="(shift, scale): x = (pixel - shift) / scale; None = the model's own"
    )
    options: dict[str, int | float | bool | str] = Field(
        default_factory=dict, description="keyword arguments for the model's factory"
    )

    @field_validator("normalization")
    @classmethod
    def _scale_nonzero(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[1] == 0:
            raise ValueError("scale (the second number) must not be 0")
        return v

    @model_validator(mode="after")
    def _known_model(self) -> ModelSection:
        from digitlab.models import MODELS

        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; known: {', '.join(MODELS)}")
        params = inspect.signature(MODELS[self.name].factory).parameters
        unknown = sorted(set(self.options) - set(params))
        if unknown:
            raise ValueError(
                f"model {self.name!r} has no option {', '.join(unknown)}; "
                f"it takes: {', '.join(params) or 'none'}"
            )
        return self


class DataSection(Section):
    """The splits to train and validate on, and batch sizes."""

    train_split: Literal["train", "train50k"] = "train"
    val_split: Literal["val", "test"] | None = Field(
        None, description="'test' only to print what a tutorial printed; never selected on"
    )
    val_fraction: float | None = Field(
        None, gt=0, lt=1, description="validate on this last fraction of train (Keras style)"
    )
    batch_size: int = Field(gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    negatives: int = Field(
        0, ge=0, description="synthetic non-digits added as an 11th class (val gets a fifth more)"
    )
    number_pieces: int = Field(
        0,
        ge=0,
        description="candidate pieces of numbers written with this split's digits, labelled "
        "(a whole digit keeps its label, a fragment or two digits are 'not a digit'): teaches "
        "number reading where one digit ends; needs negatives > 0; val gets a fifth more",
    )

    uploads: int = Field(
        0,
        ge=0,
        description="realistic uploads of this split's digits (photos, scans, canvas exports, "
        "thin pens; digitlab.synth) read back to 28x28 as predict reads files; val gets a "
        "fifth more",
    )

    @model_validator(mode="after")
    def _disjoint(self) -> DataSection:
        if self.val_split is not None and self.val_fraction is not None:
            raise ValueError("set val_split or val_fraction, not both")
        if self.val_split == "val" and self.train_split == "train":
            raise ValueError("val_split 'val' is inside train_split 'train'; use 'train50k'")
        if self.number_pieces and not self.negatives:
            raise ValueError("number_pieces needs negatives > 0 (the 'not a digit' class)")
        return self


class SolverSection(Section):
    """Optimizer and its hyper-parameters; ``lr`` is the base rate the schedule scales."""

    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float = Field(gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, description="Adam epsilon (Keras uses 1e-7)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    bias_lr_mult: float = Field(1.0, gt=0, description="Caffe lr_mult for biases (LeNet: 2)")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("both betas must lie in [0, 1)")
        return v

    @model_validator(mode="after")
    def _momentum_is_sgd(self) -> SolverSection:
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(f"momentum/nesterov are for sgd; {self.optimizer} uses betas")
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov needs momentum > 0")
        return self


Policy = Literal[
    "fixed", "step", "multistep", "inv", "exp", "poly", "sigmoid", "factor", "cosine", "onecycle"
]

# The fields each policy reads (Caffe's lr_policy names, MXNet's FactorScheduler, modern ones).
POLICY_NEEDS: dict[str, tuple[str, ...]] = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "multistep": ("gamma", "stepvalues"),
    "inv": ("gamma", "power"),
    "exp": ("gamma",),
    "poly": ("power",),
    "sigmoid": ("gamma", "stepsize"),
    "factor": ("factor", "factor_step"),
    "cosine": (),
    "onecycle": (),
}


class ScheduleSection(Section):
    """Learning-rate policy; see :func:`digitlab.train.schedules.lr_at` for the formulas."""

    policy: Policy = "fixed"
    gamma: float | None = Field(None, description="Caffe gamma (sigmoid: negative decays)")
    power: float | None = None
    stepsize: int | None = Field(None, gt=0)
    stepvalues: list[int] = Field(default_factory=list)
    factor: float | None = Field(None, gt=0, le=1, description="MXNet FactorScheduler factor")
    factor_step: int | None = Field(None, gt=0, description="MXNet FactorScheduler step")
    stop_factor_lr: float = Field(1e-8, ge=0, description="MXNet: factor never goes below this")
    min_lr: float = Field(0.0, ge=0, description="cosine: the rate at the last iteration")
    max_lr: float | None = Field(None, gt=0, description="onecycle peak; None = solver.lr")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction spent rising")
    div_factor: float = Field(25.0, gt=0, description="onecycle: start = max_lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="onecycle: end = start / this")
    warmup_iters: int = Field(0, ge=0, description="linear warm-up that multiplies any policy")
    warmup_start_factor: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _has_what_policy_needs(self) -> ScheduleSection:
        missing = [f for f in POLICY_NEEDS[self.policy] if getattr(self, f) in (None, [])]
        if missing:
            raise ValueError(f"policy {self.policy!r} needs {' and '.join(missing)}")
        positive_gamma = self.policy in ("step", "multistep", "exp", "inv")
        if positive_gamma and self.gamma is not None and self.gamma <= 0:
            raise ValueError(f"policy {self.policy!r} needs gamma > 0")
        steps = self.stepvalues
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or any(s < 0 for s in steps):
            raise ValueError("stepvalues must be increasing iteration numbers >= 0")
        return self


class TrainSection(Section):
    """How long to train and when to validate, checkpoint and log (all in iterations)."""

    iters: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    val_interval: int = Field(1000, gt=0, description="iterations between validations")
    checkpoint_interval: int | None = Field(None, gt=0)
    log_interval: int = Field(100, gt=0)
    select_best: Literal["val_loss", "val_accuracy"] | None = None
    early_stop_patience: int | None = Field(None, gt=0, description="in validations")

    @model_validator(mode="after")
    def _one_length(self) -> TrainSection:
        if (self.iters is None) == (self.epochs is None):
            raise ValueError("set exactly one of iters and epochs")
        if self.early_stop_patience is not None and self.select_best is None:
            raise ValueError("early_stop_patience needs select_best (the metric it watches)")
        return self


class Recipe(Section):
    """A whole training setup. ``cites``/``target_accuracy`` record the figure it reproduces."""

    name: str = Field(min_length=1)
    description: str = ""
    cites: str = Field("", description="where the target figure comes from")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="test accuracy, 0-1")
    seed: int = Field(0, ge=0)
    model: ModelSection
    data: DataSection
    solver: SolverSection
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    train: TrainSection
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _never_select_on_test(self) -> Recipe:
        selecting = self.train.select_best is not None
        if selecting and self.data.val_split == "test":
            raise ValueError("train.select_best on data.val_split 'test' would select on test")
        if selecting and self.data.val_split is None and self.data.val_fraction is None:
            raise ValueError("train.select_best needs data.val_split or data.val_fraction")
        return self


# ----------------------------------------------------------------------------- loading


def recipe_dirs() -> list[Path]:
    """Folders searched for a recipe by name, first match wins."""
    dirs = []
    if REPO_RECIPES.is_dir() and (REPO_RECIPES.parent / "pyproject.toml").is_file():
        dirs.append(REPO_RECIPES)
    if PACKAGED_RECIPES.is_dir():
        dirs.append(PACKAGED_RECIPES)
    return dirs


def list_recipes() -> list[str]:
    """Names of the recipes that :func:`load_recipe` finds by name."""
    return sorted({p.stem for d in recipe_dirs() for p in d.glob("*.toml")})


def find_recipe(name_or_path: str) -> Path:
    """The file for a recipe name or path; a user error if there is none."""
    if "/" in name_or_path or "\\" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise DigitlabError(f"no recipe file {name_or_path}")
        return path
    for d in recipe_dirs():
        if (d / f"{name_or_path}.toml").is_file():
            return d / f"{name_or_path}.toml"
    raise DigitlabError(
        f"unknown recipe {name_or_path!r}; known: {', '.join(list_recipes()) or 'none'} "
        "(or give a path to a .toml file)"
    )


def _parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (0.05, true, [24, 28], "x"); a bare word stays a string."""
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict, override: str) -> dict:
    """Apply one ``a.b.c=value`` to the raw recipe dict (in place, also returned).

    ``none``/``null`` sets a field to None. Setting ``train.iters`` clears ``train.epochs``
    and vice versa, so a length can be changed without knowing which one the file used.
    """
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise DigitlabError(
            f"--set {override!r}: expected SECTION.FIELD=VALUE, e.g. solver.lr=0.05"
        )
    parts = [p.strip() for p in parts]
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DigitlabError(f"--set {override!r}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = _parse_value(value)
    if parts[:1] == ["train"] and parts[-1] in ("iters", "epochs") and len(parts) == 2:
        other = "epochs" if parts[-1] == "iters" else "iters"
        if node[parts[-1]] is not None:
            node.pop(other, None)
    return data


def _field_names(loc: tuple) -> list[str]:
    """The fields allowed at the model that ``loc`` (an error location) points into."""
    model: Any = Recipe
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _related(path: str, key: str) -> bool:
    """Whether an error at ``path`` can come from overriding ``key`` (same field or section)."""
    return bool(path) and (path == key or key.startswith(path + ".") or path.startswith(key + "."))


def _describe(exc: ValidationError, source: str, overrides: dict[str, str]) -> str:
    """One line per problem: ``file: field.path: message`` naming the --set that caused it."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; known: {', '.join(_field_names(loc))}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        origin = next((s for k, s in overrides.items() if _related(path, k)), None)
        where = f"{path}: " if path else ""
        lines.append(f"{where}{msg}" + (f" (from --set {origin})" if origin else ""))
    return f"{source}: " + "; ".join(lines)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_recipe(name_or_path: str, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe; a mistake is a DigitlabError naming file and field."""
    path = find_recipe(name_or_path)
    source = _display(path)
    blob = read_regular(path, 1 << 20, what="recipe")  # a regular file of at most 1 MiB
    try:
        data = tomllib.loads(blob.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DigitlabError(f"{source}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DigitlabError(f"{source}: cannot read: {exc}") from None
    data.setdefault("name", path.stem)
    for override in overrides:
        apply_override(data, override)
    by_key = {o.partition("=")[0].strip(): o for o in overrides}
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise DigitlabError(_describe(exc, source, by_key)) from None


def recipe_to_toml(recipe: Recipe) -> str:
    """The fully resolved recipe as TOML (None fields omitted: absent means None on reload)."""
    import tomli_w

    return tomli_w.dumps(recipe.model_dump(mode="json", exclude_none=True))
