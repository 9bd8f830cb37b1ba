"""Recipes: one validated object holding everything a training run needs, loaded from TOML.

A recipe names a model, the data splits, the solver, the learning-rate policy, the length of
training and the augmentation. Every field has exactly one home here; ``--set a.b=value``
overrides any of them, and the resolved recipe is what a run stores beside its weights.

Where recipes live: ``digitlab/recipes_data/*.toml`` inside the package (``recipes/`` at the
repository root points there), so a wheel finds them by name as a checkout does. Anything
that looks like a path (contains a slash or ends in ``.toml``) is read as a file.

Every number has a range that a run can live with: a value that would overflow a schedule,
allocate without bound or run for ever is refused here, in one line naming the field and the
range, and never reaches the trainer.
"""

from __future__ import annotations

import inspect
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from digitlab.augment import AugmentConfig
from digitlab.config import Section
from digitlab.errors import DigitlabError
from digitlab.fileio import read_regular

PACKAGED_RECIPES = Path(__file__).resolve().parent / "recipes_data"

# The bounds a run can live with. A billion updates is days of training; 2**32 seeds are
# what numpy's legacy seeding takes, and keep the trainer's derived seeds (seed * 1,000,003
# + 7,919 * iteration) inside the 64 bits torch's generators accept.
MAX_ITERS = 10**9
MAX_SEED = 2**32 - 1
MAX_LR = 100.0  # Keras Adadelta's 1.0 and the 1.5 of some tutorials, with room
MAX_BATCH = 1 << 20
MAX_SYNTHETIC = 1_000_000  # each of uploads/negatives/pieces: 0.75 GB of 28x28 images
MAX_STEPVALUES = 1000
MAX_RECIPE_BYTES = 1 << 20
MAX_DEPTH = 16  # a recipe is three levels deep; deeper nesting is a mistake or an attack

# model.options: the sane range of each numeric factory argument (num_classes follows the
# data). A test holds that every numeric argument of every registered model has one.
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "dropout": (0.0, 0.99),
    "hidden": (1, 8192),
    "width": (1, 256),
}


class ModelSection(Section):
    """Which registered model, and optionally a different input scaling than its default."""

    name: str
    normalization: tuple[float, float] | None = Field(
        None, description="(shift, scale): x = (pixel - shift) / scale; None = the model's own"
    )
    options: dict[str, int | float | bool | str] = Field(
        default_factory=dict, description="keyword arguments for the model's factory"
    )
    init: str | None = Field(
        None, description="start from this model's weights: 'bundled', a run or model folder"
    )
    freeze: Literal["none", "features"] = Field(
        "none", description="'features': only the classifier learns (fine-tuning)"
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
        for key, value in self.options.items():
            _check_option(self.name, key, value, params[key].default)
        return self

    @field_validator("normalization")
    @classmethod
    def _sane_normalization(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (abs(v[0]) <= 1000 and 0.01 <= abs(v[1]) <= 10_000):
            raise ValueError(
                f"normalization (shift, scale) must have |shift| <= 1000 and "
                f"0.01 <= |scale| <= 10000 (pixels are 0-255), not {tuple(v)}"
            )
        return v


def _check_option(model: str, key: str, value: object, default: object) -> None:
    """A factory argument must have its default's type and lie in its declared range."""
    want = type(default)
    if want is bool and not isinstance(value, bool):
        raise ValueError(f"options.{key} of {model!r} is true or false, not {value!r}")
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"options.{key} of {model!r} is a whole number, not {value!r}")
    if want is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"options.{key} of {model!r} is a number, not {value!r}")
    if key in OPTION_RANGES and not isinstance(value, bool):
        lo, hi = OPTION_RANGES[key]
        if not lo <= value <= hi:  # type: ignore[operator]
            raise ValueError(
                f"options.{key} of {model!r} must lie in [{lo:g}, {hi:g}], not {value}"
            )


SPLIT_SIZES = {"train": 60000, "train50k": 50000}
SPLITS_OF_MNIST = ("train", "train50k", "val", "test")
MAX_USER_IMAGES = 10_000_000


class DataSection(Section):
    """What to train, validate and test on, and batch sizes.

    ``train_split``, ``val_split`` and ``test_split`` are data sources (digitlab.data.source):
    MNIST's ``train``, ``train50k``, ``val`` and ``test``, or a user's own digits (a folder,
    a list file, a CSV, a parquet file, an LMDB ...). ``val_fraction`` takes MNIST's last
    images (as the Keras tutorials did) or a stratified, seeded share of any other source.
    """

    train_split: str = Field("train", min_length=1, description="a data source")
    val_split: str | None = Field(
        None, description="a data source; MNIST 'test' only to print what a tutorial printed"
    )
    test_split: str = Field("test", min_length=1, description="scored once, at the end")
    val_fraction: float | None = Field(
        None, gt=0, lt=1, description="validate on this fraction of the training source"
    )
    preprocess: bool = Field(
        True, description="read image sources as predict reads files (false: already 28x28)"
    )
    mnist_mix: int = Field(
        0,
        ge=0,
        le=50_000,
        description="MNIST train50k digits mixed into a user's training source, so that "
        "fine-tuning does not forget MNIST's writers (val stays held out for calibration)",
    )
    batch_size: int = Field(gt=0, le=MAX_BATCH)
    eval_batch_size: int = Field(1000, gt=0, le=MAX_BATCH)
    negatives: int = Field(
        0,
        ge=0,
        le=MAX_SYNTHETIC,
        description="synthetic non-digits added as an 11th class (val gets a fifth more)",
    )
    number_pieces: int = Field(
        0,
        ge=0,
        le=MAX_SYNTHETIC,
        description="candidate pieces of numbers written with this split's digits, labelled "
        "(a whole digit keeps its label, a fragment or two digits are 'not a digit'): teaches "
        "number reading where one digit ends; needs negatives > 0; val gets a fifth more",
    )

    uploads: int = Field(
        0,
        ge=0,
        le=MAX_SYNTHETIC,
        description="realistic uploads of this split's digits (photos, scans, canvas exports, "
        "thin pens; digitlab.synth) read back to 28x28 as predict reads files; val gets a "
        "fifth more",
    )
    font_digits: int = Field(
        0,
        ge=0,
        le=MAX_SYNTHETIC,
        description="digits in the training handwriting fonts (other writers than MNIST's; "
        "digitlab.synth.fonts: pens from hairline to marker, slant, wobble, low resolution, "
        "paper, light, JPEG) read back as predict reads files; val gets a fifth more; skipped "
        "with a warning when the fonts are not installed",
    )
    font_non_digits: int = Field(
        0,
        ge=0,
        le=MAX_SYNTHETIC,
        description="'not a digit' images in the same hands and pens as font_digits: letters "
        "in the training handwriting fonts and shapes drawn with their pens (digitlab.synth."
        "fonts.font_non_digits); needs negatives > 0; val gets a fifth more; skipped with a "
        "warning when the fonts are not installed",
    )

    @field_validator("train_split", "val_split", "test_split")
    @classmethod
    def _a_source(cls, v: str | None) -> str | None:
        """A source is checked for what it is (and that it exists) before anything is read."""
        if v is not None:
            from digitlab.data.source import parse_source

            try:
                parse_source(v)
            except DigitlabError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> DataSection:
        if self.val_split is not None and self.val_fraction is not None:
            raise ValueError("set val_split or val_fraction, not both")
        if self.val_split == "val" and self.train_split == "train":
            raise ValueError("val_split 'val' is inside train_split 'train'; use 'train50k'")
        if self.val_split is not None and self.val_split == self.train_split:
            raise ValueError("val_split is the training source itself; use val_fraction")
        for field in ("number_pieces", "font_non_digits"):
            if getattr(self, field) and not self.negatives:
                raise ValueError(f"{field} needs negatives > 0 (the 'not a digit' class)")
        if self.mnist_mix and self.train_split in SPLITS_OF_MNIST:
            raise ValueError("mnist_mix adds MNIST to a user's source; train_split is MNIST")
        if self.val_fraction is not None and self.train_split in SPLIT_SIZES:
            n = SPLIT_SIZES[self.train_split]
            n_val = int(round(n * self.val_fraction))
            if not 1 <= n_val <= n - 1:
                raise ValueError(
                    f"val_fraction {self.val_fraction:g} of {n} images leaves {n_val} for "
                    f"validation and {n - n_val} for training; each needs at least one"
                )
        return self

    def max_train_images(self) -> int:
        """The most images an epoch can hold (before val_fraction takes its share); a user's
        source is counted at its largest (10 million) until it is read."""
        extra = self.uploads + self.negatives + self.number_pieces + self.mnist_mix
        extra += self.font_digits + self.font_non_digits
        return SPLIT_SIZES.get(self.train_split, MAX_USER_IMAGES) + extra


class SolverSection(Section):
    """Optimizer and its hyper-parameters; ``lr`` is the base rate the schedule scales."""

    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float = Field(gt=0, le=MAX_LR)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1, description="Adam epsilon (Keras uses 1e-7)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    bias_lr_mult: float = Field(
        1.0, gt=0, le=100, description="Caffe lr_mult for biases (LeNet: 2)"
    )

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
    power: float | None = Field(None, ge=0, description="inv, poly: the exponent")
    stepsize: int | None = Field(None, gt=0, le=MAX_ITERS)
    stepvalues: list[int] = Field(default_factory=list, max_length=MAX_STEPVALUES)
    factor: float | None = Field(None, gt=0, le=1, description="MXNet FactorScheduler factor")
    factor_step: int | None = Field(
        None, gt=0, le=MAX_ITERS, description="MXNet FactorScheduler step"
    )
    stop_factor_lr: float = Field(
        1e-8, ge=0, le=MAX_LR, description="MXNet: factor never goes below this"
    )
    min_lr: float = Field(
        0.0, ge=0, le=MAX_LR, description="cosine: the rate at the last iteration"
    )
    max_lr: float | None = Field(
        None, gt=0, le=MAX_LR, description="onecycle peak; None = solver.lr"
    )
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction spent rising")
    div_factor: float = Field(25.0, ge=1, description="onecycle: start = max_lr / div_factor")
    final_div_factor: float = Field(1e4, ge=1, description="onecycle: end = start / this")
    warmup_iters: int = Field(
        0, ge=0, le=MAX_ITERS, description="linear warm-up that multiplies any policy"
    )
    warmup_start_factor: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _has_what_policy_needs(self) -> ScheduleSection:
        missing = [f for f in POLICY_NEEDS[self.policy] if getattr(self, f) in (None, [])]
        if missing:
            raise ValueError(f"policy {self.policy!r} needs {' and '.join(missing)}")
        # step, multistep and exp multiply by gamma again and again: above 1 they overflow
        # (2.0 ** (10**9 // 1000) is no float), so they are the decays they are named for
        decays = self.policy in ("step", "multistep", "exp")
        if decays and self.gamma is not None and not 0 < self.gamma <= 1:
            raise ValueError(f"policy {self.policy!r} needs gamma in (0, 1], not {self.gamma:g}")
        if self.policy == "inv" and self.gamma is not None and self.gamma <= 0:
            raise ValueError(f"policy 'inv' needs gamma > 0, not {self.gamma:g}")
        steps = self.stepvalues
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or any(
            not 0 <= s <= MAX_ITERS for s in steps
        ):
            raise ValueError(f"stepvalues must be increasing iteration numbers in [0, {MAX_ITERS}]")
        return self


class TrainSection(Section):
    """How long to train and when to validate, checkpoint and log (all in iterations)."""

    iters: int | None = Field(None, gt=0, le=MAX_ITERS)
    epochs: float | None = Field(None, gt=0, le=MAX_ITERS)
    val_interval: Annotated[int, Field(gt=0, le=MAX_ITERS)] | Literal["epoch"] = Field(
        1000, description='iterations between validations, or "epoch"'
    )
    checkpoint_interval: Annotated[int, Field(gt=0, le=MAX_ITERS)] | Literal["epoch"] | None = None
    log_interval: int = Field(100, gt=0, le=MAX_ITERS)
    select_best: Literal["val_loss", "val_accuracy"] | None = None
    early_stop_patience: int | None = Field(None, gt=0, le=MAX_ITERS, description="in validations")

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
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelSection
    data: DataSection
    solver: SolverSection
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    train: TrainSection
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _never_select_on_test(self) -> Recipe:
        selecting = self.train.select_best is not None
        if selecting and self.data.val_split in ("test", self.data.test_split):
            raise ValueError(
                f"train.select_best on data.val_split {self.data.val_split!r}, the test "
                "source, would select on test"
            )
        if selecting and self.data.val_split is None and self.data.val_fraction is None:
            raise ValueError("train.select_best needs data.val_split or data.val_fraction")
        return self

    @model_validator(mode="after")
    def _bounded_length(self) -> Recipe:
        """Epochs become iterations only with the data's size: bound them here, with it."""
        if self.train.epochs is not None:
            per_epoch = math.ceil(self.data.max_train_images() / self.data.batch_size)
            most = MAX_ITERS / per_epoch
            if self.train.epochs > most:
                raise ValueError(
                    f"train.epochs {self.train.epochs:g} of {per_epoch} iterations is more than "
                    f"{MAX_ITERS:,} iterations; allowed: 0 < epochs <= {most:.6g}"
                )
        return self

    @model_validator(mode="after")
    def _classes_match_the_data(self) -> Recipe:
        """The model's outputs are the data's classes (11 with the 'not a digit' class): they
        follow from the data, so a recipe need not say; one that does must agree. Checked
        here so a mismatch is not found after MNIST is loaded and the model built."""
        got = self.model.options.get("num_classes")
        if got is not None and got != self.num_classes:
            why = "negatives add 'not a digit'" if self.num_classes == 11 else "the digits 0-9"
            raise ValueError(
                f"model.options.num_classes is {got} but the data has {self.num_classes} "
                f"classes ({why}); leave it out, it follows from the data"
            )
        return self

    @property
    def num_classes(self) -> int:
        return 11 if self.data.negatives else 10

    def model_options(self, classes: int | None = None) -> dict[str, Any]:
        """The model factory's arguments: the recipe's options, with the class count derived
        from the data (``classes``, once it is read: a user's ``none/`` folder adds "not a
        digit" too) for every model that takes one."""
        from digitlab.models import MODELS

        options = dict(self.model.options)
        if "num_classes" in inspect.signature(MODELS[self.model.name].factory).parameters:
            options["num_classes"] = max(classes or 0, self.num_classes)
        return options

    def intervals(self, iters_per_epoch: int) -> tuple[int, int | None]:
        """(validation, checkpoint) intervals in iterations; ``"epoch"`` is one epoch of the
        training data at the recipe's batch size, whatever the batch size is."""

        def resolve(v: int | str | None) -> int | None:
            return max(1, iters_per_epoch) if v == "epoch" else v  # type: ignore[return-value]

        return resolve(self.train.val_interval), resolve(self.train.checkpoint_interval)


class LineDataSection(Section):
    """The numbers the line model learns from: written with one MNIST split's digits by the
    real-inputs generator, and checked on lines written with another's."""

    train_split: Literal["train50k"] = "train50k"  # val holds out the check lines
    val_split: Literal["val"] = "val"
    lines: int = Field(60_000, ge=10, le=1_000_000, description="training lines")
    font_lines: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="more training lines in the training handwriting fonts (digitlab.synth."
        "fonts); val_fraction as many more check them; skipped with a warning when not "
        "installed",
    )
    max_digits: int = Field(6, ge=2, le=20, description="the longest numbers written")
    val_fraction: float = Field(
        1 / 30, gt=0, le=1, description="check lines, as a share of the training lines"
    )
    batch_size: int = Field(64, gt=0, le=4096)

    def val_lines(self) -> int:
        return max(200, int(self.lines * self.val_fraction))


class LineTrainSection(Section):
    epochs: int = Field(8, gt=0, le=1000)


class LineScheduleSection(Section):
    policy: Literal["onecycle"] = "onecycle"
    pct_start: float = Field(0.15, gt=0, lt=1)


class LineRecipe(Section):
    """How the CTC line model is trained (``digitlab train-line MODEL [--recipe line]``)."""

    name: str = Field(min_length=1)
    description: str = ""
    kind: Literal["line"]
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: ModelSection
    data: LineDataSection = Field(default_factory=LineDataSection)
    solver: SolverSection
    schedule: LineScheduleSection = Field(default_factory=LineScheduleSection)
    train: LineTrainSection = Field(default_factory=LineTrainSection)


# ----------------------------------------------------------------------------- loading


def recipe_dirs() -> list[Path]:
    """Folders searched for a recipe by name, first match wins."""
    return [PACKAGED_RECIPES] if PACKAGED_RECIPES.is_dir() else []


def list_recipes(kind: str = "digits") -> list[str]:
    """Names of the recipes found by name: digit models' (:func:`load_recipe`) or, with
    ``kind="line"``, line models' (:func:`load_line_recipe`)."""
    names = set()
    for d in recipe_dirs():
        for p in d.glob("*.toml"):
            is_line = tomllib.loads(p.read_text(encoding="utf-8")).get("kind") == "line"
            if is_line == (kind == "line"):
                names.add(p.stem)
    return sorted(names)


def find_recipe(name_or_path: str) -> Path:
    """The file for a recipe name or path; a user error if there is none."""
    if "/" in name_or_path or "\\" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise DigitlabError(f"no recipe file {name_or_path}")
        return path  # a folder, a FIFO or a device is refused when read
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
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise DigitlabError(f"--set value {text[:40]!r}...: nested too deeply") from None
    _check_depth({"v": value}, f"--set value {text[:40]!r}")
    return value


def apply_override(data: dict, override: str) -> dict:
    """Apply one ``a.b.c=value`` string (a ``--set``) to the raw recipe dict; see set_field."""
    key, sep, value = override.partition("=")
    if not sep:
        raise DigitlabError(
            f"--set {override!r}: expected SECTION.FIELD=VALUE, e.g. solver.lr=0.05"
        )
    return set_field(data, key, _parse_value(value), f"--set {override!r}")


def set_field(data: dict, key: str, value: Any, source: str | None = None) -> dict:
    """Set the field ``a.b.c`` of the raw recipe dict to a typed value (in place, returned).

    None sets a field to None. Setting ``train.iters`` clears ``train.epochs`` and vice
    versa, so a length can be changed without knowing which one the file used.
    """
    source = source or f"field {key!r}"
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise DigitlabError(f"{source}: expected SECTION.FIELD, e.g. solver.lr")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DigitlabError(f"{source}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = value
    if parts[:1] == ["train"] and parts[-1] in ("iters", "epochs") and len(parts) == 2:
        other = "epochs" if parts[-1] == "iters" else "iters"
        if node[parts[-1]] is not None:
            node.pop(other, None)
    return data


def _field_names(loc: tuple, schema: Any = None) -> list[str]:
    """The fields allowed at the model that ``loc`` (an error location) points into."""
    model: Any = schema or Recipe
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _related(path: str, key: str) -> bool:
    """Whether an error at ``path`` can come from overriding ``key`` (same field or section)."""
    return bool(path) and (path == key or key.startswith(path + ".") or path.startswith(key + "."))


def _describe(
    exc: ValidationError, source: str, overrides: dict[str, str], schema: Any = None
) -> str:
    """One line per problem: ``file: field.path: message`` naming the --set that caused it."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; known: {', '.join(_field_names(loc, schema or Recipe))}"
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


def read_recipe_text(path: Path, source: str) -> str:
    """The text of a recipe file: a regular file of at most 1 MiB (a FIFO or a device is
    refused instead of waited on), in UTF-8."""

    data = read_regular(path, MAX_RECIPE_BYTES, what="recipe")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DigitlabError(f"{source}: cannot read: not UTF-8 text ({exc.reason})") from None


_KEY = re.compile(r"^[ \t]*(?:\[\[?([^\]\n]*)|([\w\-. \t\"']+)=)", re.MULTILINE)


def _check_key_depth(text: str, source: str) -> None:
    """Refuse a dotted key or table header deeper than MAX_DEPTH before parsing: tomllib
    walks every dotted key from the root, so ``[a.a.a...]`` 100,000 deep takes 47 s."""
    for match in _KEY.finditer(text):
        key = match.group(1) if match.group(1) is not None else match.group(2)
        if key.count(".") >= MAX_DEPTH:
            raise DigitlabError(f"{source}: nested more than {MAX_DEPTH} levels deep")


def _check_depth(data: dict, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH (``[a.a.a...]`` headers build it without any
    recursion in the parser); walked with a stack, so depth itself cannot overflow it."""
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DigitlabError(f"{source}: nested more than {MAX_DEPTH} levels deep")
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            stack.extend((child, depth + 1) for child in children)


def load_recipe(
    name_or_path: str, overrides: Sequence[str] = (), fields: Mapping[str, Any] | None = None
) -> Recipe:
    """Read, override and validate a recipe; a mistake is a DigitlabError naming file and field.

    ``overrides`` are ``--set`` strings (``solver.lr=0.05``, parsed as TOML values);
    ``fields`` are typed values by dotted name (``{"solver.lr": 0.05}``), for the Python API.
    """
    return _load(Recipe, name_or_path, overrides, fields)


def load_line_recipe(
    name_or_path: str = "line",
    overrides: Sequence[str] = (),
    fields: Mapping[str, Any] | None = None,
) -> LineRecipe:
    """A line model's recipe (``kind = "line"``), read and checked as :func:`load_recipe`."""
    return _load(LineRecipe, name_or_path, overrides, fields)


def _load(schema: Any, name_or_path: str, overrides: Sequence[str], fields: Any) -> Any:
    path = find_recipe(name_or_path)
    source = _display(path)
    text = read_recipe_text(path, source)
    _check_key_depth(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DigitlabError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # [[[[... or {a={a=... thousands deep
        raise DigitlabError(f"{source}: not valid TOML: nested too deeply") from None
    _check_depth(data, source)
    data.setdefault("name", path.stem)
    for override in overrides:
        apply_override(data, override)
    for key, value in (fields or {}).items():
        set_field(data, key, value)
    _check_depth(data, source)
    by_key = {o.partition("=")[0].strip(): o for o in overrides}
    by_key.update({k: f"{k}={v!r}" for k, v in (fields or {}).items()})
    if (data.get("kind") == "line") != (schema is LineRecipe):
        want = "a line model's recipe" if schema is LineRecipe else "a digit model's recipe"
        raise DigitlabError(f"{source}: not {want} (kind = {data.get('kind', 'digits')!r})")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise DigitlabError(_describe(exc, source, by_key, schema)) from None


def recipe_to_toml(recipe: Recipe) -> str:
    """The fully resolved recipe as TOML (None fields omitted: absent means None on reload)."""
    import tomli_w

    return tomli_w.dumps(recipe.model_dump(mode="json", exclude_none=True))
