"""digitlab's Python API: read digits and numbers, train, evaluate, export and serve.

Every CLI command is a thin layer over these functions, and a notebook calls them directly::

    import digitlab
    from digitlab import api
    digitlab.read("seven.png")                 # DigitReading(digit=7, confidence=0.99, ...)
    digitlab.read_number("2026.png").number    # "2026"
    run = api.train("fast", "runs/fast", **{"train.epochs": 1})
    api.evaluate(run.run_dir).accuracy

Images may be a path, encoded bytes, a PIL image or a numpy array (grey or RGB, any size and
polarity); they go through the same preprocessing as ``digitlab predict``. Loaded models are
kept, so reading many images one by one loads each model once.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from digitlab.predict import Predictor
    from digitlab.recipes import Recipe
    from digitlab.train.loop import RunResult

ModelRef = str | os.PathLike | None  # a run or model folder; None is the bundled model


@dataclass(frozen=True)
class DigitReading:
    """One image read as a single digit. ``digit`` is None when it is not a digit at all."""

    digit: int | None
    confidence: float
    is_digit: bool
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class NumberDigit:
    """One digit of a number and where it is: ``box`` = (x, y, width, height) in pixels."""

    digit: int | None
    confidence: float
    is_digit: bool
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class NumberReading:
    """A written number; ``number`` is None when the ink does not read as one."""

    number: str | None
    digits: tuple[NumberDigit, ...]


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a split: accuracy, mean loss and the 10x10 confusion matrix."""

    model: str
    split: str
    accuracy: float
    loss: float
    confusion: tuple[tuple[int, ...], ...]
    per_class: tuple[dict[str, float], ...]


@functools.lru_cache(maxsize=8)
def _predictor(folder: str | None, backend: str) -> Predictor:
    from digitlab.predict import Predictor

    return Predictor(folder, backend=backend)


def load_model(model: ModelRef = None, backend: str = "auto") -> Predictor:
    """The model that reads images (loaded once per folder and backend, then kept)."""
    return _predictor(None if model is None else str(Path(model).resolve()), backend)


def _as_bytes(image: Any) -> bytes:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        from digitlab.fileio import read_regular

        return read_regular(image, 64 * 2**20, what="image")
    import numpy as np
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise DigitlabError("a numpy image must be uint8 (grey HxW or colour HxWx3/4)")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise DigitlabError(f"cannot read an image from a {type(image).__name__}")


def read(image: Any, *, model: ModelRef = None) -> DigitReading:
    """Read one image as a single digit (the bundled model unless ``model`` names another)."""
    r = load_model(model).predict_image(_as_bytes(image))
    return DigitReading(r["digit"], r["confidence"], r["is_digit"], tuple(r["probabilities"]))


def read_number(image: Any, *, model: ModelRef = None) -> NumberReading:
    """Read one image as a number of one or more digits, with each digit's box."""
    r = load_model(model).predict_image(_as_bytes(image), number=True)
    digits = tuple(
        NumberDigit(d["digit"], d["confidence"], d["is_digit"], tuple(d["box"]))
        for d in r["digits"]
    )
    return NumberReading(r["number"], digits)


def recipe(name_or_path: str | os.PathLike, **fields: Any) -> Recipe:
    """A validated recipe by name (``fast``, ``caffe-lenet`` ...) or path, with typed field
    overrides by dotted name: ``recipe("fast", **{"solver.lr": 0.1})`` or ``solver__lr=0.1``."""
    from digitlab.recipes import load_recipe

    dotted = {k.replace("__", "."): v for k, v in fields.items()}
    return load_recipe(str(name_or_path), fields=dotted)


def train(
    recipe_or_name: Recipe | str | os.PathLike,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = False,
    calibrate: bool = True,
    **fields: Any,
) -> RunResult:
    """Train a recipe into the run folder ``out`` (or continue it with ``resume``). A run
    that starts from a calibrated model (``model.init``) is recalibrated after, unless
    ``calibrate`` is False."""
    from digitlab.recipes import Recipe
    from digitlab.train.loop import train as run_training

    if isinstance(recipe_or_name, Recipe):
        if fields:
            raise DigitlabError("pass field overrides with a recipe name, not a Recipe")
        chosen = recipe_or_name
    else:
        chosen = recipe(recipe_or_name, **fields)
    result = run_training(chosen, out, resume=resume, device=device, progress=progress)
    if calibrate and chosen.model.init is not None and not resume:
        recalibrate(result.run_dir)
    return result


def recalibrate(run: str | os.PathLike, uploads: int = 1000) -> dict[str, Any] | None:
    """After fine-tuning a calibrated model: fit temperature and threshold again, on MNIST's
    val digits (never trained on) plus the run's held-out share of the user's digits, so that
    rejection holds for both. None when the run did not start from a calibrated model."""
    from digitlab.artifact import read_meta
    from digitlab.calibrate import calibrate_artifact
    from digitlab.recipes import Recipe
    from digitlab.train.data import held_out_set
    from digitlab.train.init import init_meta

    meta = read_meta(run)
    recipe = Recipe.model_validate(meta.recipe or {})
    start = init_meta(recipe)
    if start is None or start.rejection is None:
        return None
    return calibrate_artifact(str(run), uploads=uploads, held_out=held_out_set(recipe))


def evaluate(model: ModelRef = None, split: str = "test") -> Evaluation:
    """Score a trained model (run or model folder, or a checkpoint: ``RUN@5000`` or
    ``RUN/checkpoints/iter_0005000.safetensors``; the bundled one by default) on any data
    source: MNIST's ``test`` by default, or a user's labelled folder, list, CSV ..."""
    from digitlab.evaluate import evaluate_artifact
    from digitlab.train.checkpoint_models import is_checkpoint, model_folder

    with model_folder(model) as folder:
        r = evaluate_artifact(str(folder), split)
    return Evaluation(
        str(model) if is_checkpoint(model) else str(folder),
        split,
        r["accuracy"],
        r["loss"],
        tuple(tuple(int(v) for v in row) for row in r["confusion_matrix"]),
        tuple(r["per_class"]),
    )


def export(model: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``model.onnx`` (or ``out``), checked against torch on real test digits."""
    from digitlab.export import export_onnx

    return export_onnx(model, out)


def serve(
    model: ModelRef = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    backend: str = "onnx",
) -> None:
    """Serve the HTTP API and the drawing page until interrupted."""
    from digitlab.serve.app import Settings
    from digitlab.serve.server import serve as run_server

    settings = Settings(model=None if model is None else str(model), backend=backend)
    run_server(settings, host=host, port=port, workers=workers)
