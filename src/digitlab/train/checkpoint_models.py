"""Checkpoints are models: evaluate, predict and export read a training checkpoint as they
read a model folder, a run's checkpoints are scored on its validation data, and a run can
continue from any of its checkpoints.

A checkpoint holds the weights (its ``model.`` tensors); the run folder's recipe.toml says
what they are — architecture, options, input normalisation, classes (11 with
``data.negatives``) — exactly as the trainer writes the final model.json. A checkpoint is
named by its file, ``RUN/checkpoints/iter_0005000.safetensors``, or for short ``RUN@5000``.

The readers below the training layer (the Predictor, the ONNX exporter, evaluate) take a
model folder and know nothing of recipes; :func:`model_folder` writes a checkpoint as one, in
a temporary folder, for as long as they need it, so every check they make (weights digest,
NaN, fit) holds for checkpoints too.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.artifact import DIGIT_CLASSES, NOT_A_DIGIT, WEIGHTS, ModelMeta, build_model
from digitlab.errors import DigitlabError
from digitlab.train.checkpoint import (
    CKPT_DIR,
    checkpoints_newest_first,
    parse_checkpoint,
    read_checkpoint_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import nn

    from digitlab.models.registry import Normalization
    from digitlab.recipes import Recipe
    from digitlab.train.world import World

RECIPE = "recipe.toml"
SHORT_FORM = re.compile(r"^(?P<run>.+)@(?P<iter>\d+)$")  # RUN@5000
_ITER = re.compile(r"^iter_(\d+)\.safetensors$")


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint file and the run folder whose recipe.toml describes it."""

    run_dir: Path
    path: Path


def is_checkpoint(ref: str | os.PathLike | None) -> bool:
    """Whether ``ref`` names a checkpoint (a ``.safetensors`` file other than a model's
    weights, or ``RUN@ITER``) rather than a model or run folder."""
    if ref is None:
        return False
    p = Path(ref)
    if p.suffix == ".safetensors":
        return p.name != WEIGHTS
    return not p.exists() and SHORT_FORM.match(os.fspath(ref)) is not None


def find_checkpoint(ref: str | os.PathLike) -> CheckpointRef:
    """The checkpoint ``ref`` names; a DigitlabError says what is missing."""
    text = os.fspath(ref)
    short = SHORT_FORM.match(text) if Path(text).suffix != ".safetensors" else None
    if short:
        run_dir = Path(short["run"])
        if not run_dir.is_dir():
            raise DigitlabError(f"{text}: no run folder {run_dir}")
        return CheckpointRef(run_dir, checkpoint_at(run_dir, int(short["iter"])))
    path = Path(text)
    if path.parent.name != CKPT_DIR:
        raise DigitlabError(
            f"{path}: not in a run's {CKPT_DIR}/ folder, so no {RECIPE} says what model it holds"
        )
    run_dir = path.parent.parent
    if not path.exists() and not path.is_symlink():
        raise DigitlabError(f"{path}: no such checkpoint; {_inventory(run_dir)}")
    return CheckpointRef(run_dir, path)


def checkpoint_at(run_dir: Path, iteration: int) -> Path:
    """The run's checkpoint at ``iteration``; a DigitlabError lists the ones it has."""
    for path in checkpoints_newest_first(run_dir):
        if _iteration_of(path) == iteration:
            return path
    missing = f"{run_dir} has no checkpoint at iteration {iteration}"
    raise DigitlabError(f"{missing}; {_inventory(run_dir)}")


def _iteration_of(path: Path) -> int:
    """The iteration in a name :func:`checkpoints_newest_first` lists (iter_NNNNNNN...)."""
    return int(path.name[5:].split(".")[0])


def _inventory(run_dir: Path) -> str:
    its = sorted(_iteration_of(p) for p in checkpoints_newest_first(run_dir))
    if not its:
        return "it has none"
    shown = ", ".join(str(i) for i in its[:12]) + (", ..." if len(its) > 12 else "")
    return f"it has checkpoints at iterations {shown}"


# ---------------------------------------------------------------------------- as models


def run_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe a run was trained with (its recipe.toml)."""
    from digitlab.recipes import load_recipe

    saved = run_dir / RECIPE
    if not saved.is_file():
        raise DigitlabError(
            f"{run_dir}: no {RECIPE}, so nothing says what model its checkpoints hold "
            "(digitlab train writes one into every run folder)"
        )
    return load_recipe(str(saved))


def recipe_normalization(recipe: Recipe) -> Normalization:
    """The input scaling of ``recipe``'s model: the recipe's own, else its architecture's."""
    from digitlab.models import get_entry
    from digitlab.models.registry import Normalization

    if recipe.model.normalization:
        return Normalization(*recipe.model.normalization)
    return get_entry(recipe.model.name).normalization


def recipe_meta(recipe: Recipe, classes: int | None = None, **fields: Any) -> ModelMeta:
    """The model.json of a model trained by ``recipe`` with ``classes`` outputs (by default
    what the recipe's data implies; the trainer knows it from the data it read): the one
    place the trainer and the checkpoint loader build it."""
    norm = recipe_normalization(recipe)
    classes = classes or recipe.num_classes
    extra = [NOT_A_DIGIT] if classes == 11 else []
    return ModelMeta(
        architecture=recipe.model.name,
        model_kwargs=recipe.model_options(classes),
        normalization=(float(norm.shift), float(norm.scale)),
        classes=list(DIGIT_CLASSES) + extra,
        recipe=recipe.model_dump(mode="json"),
        **fields,
    )


def _read(ck: CheckpointRef) -> dict[str, Any]:
    return parse_checkpoint(read_checkpoint_bytes(ck.path), str(ck.path))


def _fitted(meta: ModelMeta, state: dict[str, Any], ck: CheckpointRef) -> nn.Module:
    """The recipe's model with the checkpoint's weights, in eval mode."""
    broken = [k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if broken:
        raise DigitlabError(f"{ck.path}: {broken[0]} holds NaN or infinite values")
    model = build_model(meta)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first mismatch, not the banner
        raise DigitlabError(
            f"{ck.path}: its weights do not fit model {meta.architecture} of "
            f"{ck.run_dir / RECIPE} ({detail}); is it another run's checkpoint?"
        ) from None
    return model.eval()


def load_checkpoint_model(ref: str | os.PathLike) -> tuple[nn.Module, ModelMeta]:
    """The model a checkpoint holds (eval mode, CPU) and its model.json, as
    :func:`digitlab.artifact.load_artifact` gives a model folder's."""
    return _load(find_checkpoint(ref))


def _load(ck: CheckpointRef) -> tuple[nn.Module, ModelMeta]:
    recipe = run_recipe(ck.run_dir)
    parsed = _read(ck)
    iteration = int(parsed["info"]["iteration"])
    meta = recipe_meta(
        recipe,
        description=f"checkpoint {ck.path.name} of {ck.run_dir}",
        metrics={"iterations": iteration},
    )
    return _fitted(meta, parsed["model_state"], ck), meta


@contextlib.contextmanager
def model_folder(ref: str | os.PathLike | None) -> Iterator[Path]:
    """``ref`` as a model folder for the block: a run or model folder as it is (None: the
    bundled model), a checkpoint written as a temporary one (model.json + model.safetensors)."""
    from digitlab.artifact import find_model, save_artifact

    if not is_checkpoint(ref):
        yield find_model(ref)
        return
    ck = find_checkpoint(ref)
    model, meta = _load(ck)
    with tempfile.TemporaryDirectory(prefix="digitlab-checkpoint-") as tmp:
        folder = Path(tmp) / ck.path.stem
        save_artifact(folder, model, meta)
        yield folder


# ---------------------------------------------------------------------------- choosing one


def score_checkpoints(run: str | os.PathLike, batch_size: int = 1000) -> dict[str, Any]:
    """Every checkpoint of a run scored on the recipe's validation data, oldest first, and
    the best of them, as Caffe's users picked a snapshot.

    The best is chosen by the recipe's ``train.select_best`` (val accuracy when it has none;
    ties go to the earlier checkpoint). Only validation data is used: a run that validates on
    test, or not at all, is refused, so that nothing is ever selected on test. A checkpoint
    that cannot be read is listed with its error; the others are still scored.
    """
    from digitlab.evaluate import evaluate_model
    from digitlab.models.registry import Normalization
    from digitlab.train.data import validation_set

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise DigitlabError(f"{run}: no such run folder")
    recipe = run_recipe(run_dir)
    if recipe.data.val_split == "test" and not recipe.data.val_fraction:
        raise DigitlabError(
            f"{run_dir} validates on test (data.val_split = 'test'); choosing a checkpoint "
            "there would select on test: train with data.val_split = 'val' to compare them"
        )
    paths = checkpoints_newest_first(run_dir)[::-1]
    if not paths:
        raise DigitlabError(f"{run_dir} has no checkpoints (recipe train.checkpoint_interval)")
    val = validation_set(recipe)
    if val is None:
        raise DigitlabError(
            f"{run_dir}: its recipe has no validation data (data.val_split or "
            "data.val_fraction), and checkpoints are never compared on test"
        )
    meta = recipe_meta(recipe)
    norm = Normalization(*meta.normalization)
    rows: list[dict[str, Any]] = []
    for path in paths:
        ck = CheckpointRef(run_dir, path)
        row: dict[str, Any] = {"iteration": _iteration_of(path), "path": str(path)}
        try:
            model = _fitted(meta, _read(ck)["model_state"], ck)
        except DigitlabError as exc:
            rows.append({**row, "error": str(exc)})
            continue
        r = evaluate_model(model, val, norm.apply, batch_size)
        rows.append({**row, "val_accuracy": r["accuracy"], "val_loss": r["loss"]})
    scored = [r for r in rows if "error" not in r]
    if not scored:
        raise DigitlabError(f"{run_dir}: none of its checkpoints can be read ({rows[0]['error']})")
    by = recipe.train.select_best or "val_accuracy"
    best = min(scored, key=lambda r: _rank(r, by))
    return {
        "run": str(run_dir),
        "split": val.name,
        "n": len(val),
        "selected_by": by,
        "checkpoints": rows,
        "best": {**best, "ref": f"{run_dir}@{best['iteration']}"},
    }


def _rank(row: dict[str, Any], by: str) -> tuple[float, float, int]:
    """Smaller is better: the chosen metric, then the other one, then the earlier iteration."""
    acc, loss = -row["val_accuracy"], row["val_loss"]
    loss = loss if math.isfinite(loss) else math.inf
    return (loss, acc, row["iteration"]) if by == "val_loss" else (acc, loss, row["iteration"])


# ---------------------------------------------------------------------------- going back


def rewind(
    run_dir: str | os.PathLike, which: str | int, recipe: Recipe, world: World | None = None
) -> Path | None:
    """Make checkpoint ``which`` (an iteration, ``RUN@ITER`` or a checkpoint file of this
    run) the run's newest, so that the next resume continues from it; returns its path.

    The checkpoints after it are removed, not kept. The resume drops the metrics history
    after the checkpoint it starts from, so kept ones would be the only record of a history
    the run no longer has; worse, should the continued run stop before it reaches them, the
    next plain ``--resume`` would jump back onto the abandoned branch at its newest
    checkpoint. The continued run writes its own checkpoints at those iterations.

    Everything that can refuse does so, under the run folder's lock, before anything is
    removed: a missing or unreadable checkpoint, another run's checkpoint, a model other
    than ``recipe``'s, another trainer holding the folder.

    Under torchrun every worker is started with the same arguments: rank 0 of the first
    start rewinds (the others return None); a restarted job must resume from the newest
    checkpoint, which the first start has written since.
    """
    from digitlab.train.runfolder import check_same_model, lock_run_folder
    from digitlab.train.world import world_from_env

    world = world or world_from_env()
    if not world.is_main or world.restarts > 0:
        return None
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DigitlabError(f"{run_dir}: no such run folder to resume")
    lock = lock_run_folder(run_dir)
    try:
        ck = _named(run_dir, which)
        check_same_model(run_dir, recipe)
        _fitted(recipe_meta(recipe), _read(ck)["model_state"], ck)
        start = _iteration_of(ck.path)
        for path in checkpoints_newest_first(run_dir):
            if _iteration_of(path) > start:
                path.unlink()
    finally:
        lock.release()
    return ck.path


def _named(run_dir: Path, which: str | int) -> CheckpointRef:
    """The checkpoint of ``run_dir`` that ``which`` names."""
    if isinstance(which, int) or str(which).isdigit():
        return CheckpointRef(run_dir, checkpoint_at(run_dir, int(which)))
    if not is_checkpoint(which):
        raise DigitlabError(
            f"{which}: not a checkpoint; give an iteration, RUN@ITER or "
            f"{run_dir / CKPT_DIR}/iter_NNNNNNN.safetensors"
        )
    ck = find_checkpoint(which)
    mine = ck.path.resolve().parent == (run_dir / CKPT_DIR).resolve()
    if not mine or not _ITER.match(ck.path.name):
        raise DigitlabError(
            f"{which}: not one of {run_dir}'s checkpoints ({run_dir / CKPT_DIR}/iter_*.safetensors)"
        )
    return CheckpointRef(run_dir, ck.path)
