"""``digitlab ensemble``: combine trained models into one ensemble model folder.

The model itself (:class:`digitlab.models.ensemble.Ensemble`) is registered as
``"ensemble"``; this module checks the members, records where they came from, and scores
the result on MNIST test as a trained run scores itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from digitlab.artifact import META, ModelMeta, parse_meta
from digitlab.errors import DigitlabError
from digitlab.models.ensemble import ARCHITECTURE, IDENTITY, TTA_SHIFTS, Ensemble


def _check_out(out: Path) -> None:
    """Refuse to write over a model that is not an ensemble (a training run's own model, or
    an exported one): rebuilding an ensemble in place is fine, losing a trained model is not."""
    if (out / "metrics.jsonl").exists() or (out / "checkpoints").exists():
        raise DigitlabError(f"{out}: already holds a training run; choose another --out")
    if (out / META).is_file():
        try:
            arch = parse_meta((out / META).read_bytes()).architecture
        except (DigitlabError, OSError):
            arch = None
        if arch != ARCHITECTURE:
            raise DigitlabError(f"{out}: already holds a model; choose another --out")


def make_ensemble(
    models: list[str | os.PathLike], out: str | os.PathLike, tta: bool = False
) -> Path:
    """Combine trained models (run or model folders) into one ensemble artifact at ``out``."""
    from digitlab.artifact import load_artifact, save_artifact
    from digitlab.models import create_model

    if not models:
        raise DigitlabError("give at least one model to put in the ensemble")
    _check_out(Path(out))
    loaded = [load_artifact(m) for m in models]
    if len({tuple(meta.classes) for _, meta in loaded}) > 1:
        raise DigitlabError("these models predict different classes; an ensemble needs one set")
    for path, (_, meta) in zip(models, loaded, strict=True):
        if meta.architecture == ARCHITECTURE:
            raise DigitlabError(f"{path}: is an ensemble already; list its members instead")
    members = [_member(path, meta) for path, (_, meta) in zip(models, loaded, strict=True)]
    shifts = [list(s) for s in TTA_SHIFTS] if tta else [[0, 0]]
    ensemble = create_model(ARCHITECTURE, members=members, shifts=shifts)
    for slot, (model, _) in zip(ensemble.members, loaded, strict=True):
        slot.load_state_dict(model.state_dict())
    first = loaded[0][1]
    meta = ModelMeta(
        architecture=ARCHITECTURE,
        model_kwargs={"members": members, "shifts": shifts},
        normalization=tuple(IDENTITY),
        classes=list(first.classes),
        description=f"ensemble of {len(members)} models"
        + (f", {len(shifts)} shifted views each" if tta else ""),
        rejection=first.rejection if len(members) == 1 and not tta else None,
        metrics=_test_metrics(ensemble),
    )
    return save_artifact(out, ensemble, meta).parent


def _member(path: str | os.PathLike, meta: ModelMeta) -> dict[str, Any]:
    recipe = meta.recipe or {}
    return {
        "architecture": meta.architecture,
        "model_kwargs": meta.model_kwargs,
        "normalization": list(meta.normalization),
        "source": str(path),
        "metrics": meta.metrics,
        "data": recipe.get("data", {}),  # what calibration may hold out
        "seed": recipe.get("seed", 0),
    }


def _test_metrics(ensemble: Ensemble) -> dict[str, float]:
    """The ensemble's own MNIST test accuracy and loss, as a trained run records its own."""
    from digitlab.data.dataset import load_split
    from digitlab.evaluate import evaluate_model
    from digitlab.models.registry import Normalization

    ensemble.eval()
    result = evaluate_model(ensemble, load_split("test"), Normalization(*IDENTITY).apply)
    return {"test_accuracy": result["accuracy"], "test_loss": result["loss"]}
