"""Ensembles: several trained models, and shifted copies of each input, voting as one model.

An ensemble is saved as an ordinary model artifact (``model.json`` + ``model.safetensors``)
whose architecture is ``"ensemble"``: its members' weights sit in one safetensors file under
``members.<i>.``, their architectures and normalisations in ``model_kwargs``. So everything
that takes a model (evaluate, predict, serve, export, bench) takes an ensemble unchanged.

The ensemble sees raw pixel values (its own normalisation is the identity), normalises them
for each member as that member was trained, and returns the log of the mean probability over
members and shifts: a softmax of that output is the averaged vote, and the cross-entropy on
it is the ensemble's true log-loss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.errors import DigitlabError

ARCHITECTURE = "ensemble"
IDENTITY = [0.0, 1.0]  # the ensemble takes raw 0..255 values; members normalise themselves
TTA_SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # px: the input and four 1-px moves


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move images (N,1,H,W) by (dx, dy) pixels, filling with 0 (MNIST's background)."""
    if dx == 0 and dy == 0:
        return x
    h, w = x.shape[-2:]
    p = max(abs(dx), abs(dy))
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


class Ensemble(nn.Module):
    """Mean probability of ``members`` over ``shifts`` of the input, returned as log-probs."""

    def __init__(
        self,
        members: list[nn.Module],
        normalizations: list[tuple[float, float]],
        shifts: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise DigitlabError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        self.norms = [(float(a), float(b)) for a, b in normalizations]
        self.shifts = [(int(dx), int(dy)) for dx, dy in (shifts or [(0, 0)])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        views = [shift(x, dx, dy) for dx, dy in self.shifts]
        total = None
        for member, (mean, scale) in zip(self.members, self.norms, strict=True):
            for view in views:
                p = F.softmax(member((view - mean) / scale).float(), dim=1)
                total = p if total is None else total + p
        return torch.log(total / (len(self.members) * len(views)) + 1e-12)


def build_ensemble(
    members: list[dict[str, Any]], shifts: list[list[int]] | None = None
) -> Ensemble:
    """An untrained ensemble from the member descriptions stored in ``model_kwargs``."""
    from digitlab.models import create_model

    models = [create_model(m["architecture"], **m.get("model_kwargs", {})) for m in members]
    norms = [tuple(m["normalization"]) for m in members]
    return Ensemble(models, norms, [tuple(s) for s in shifts] if shifts else None)


def _check_out(out: Path) -> None:
    """Refuse to write over a model that is not an ensemble (a training run's own model, or
    an exported one): rebuilding an ensemble in place is fine, losing a trained model is not."""
    if (out / "metrics.jsonl").exists() or (out / "checkpoints").exists():
        raise DigitlabError(f"{out}: already holds a training run; choose another --out")
    meta = out / "model.json"
    if meta.is_file():
        try:
            arch = json.loads(meta.read_text()).get("architecture")
        except (ValueError, UnicodeDecodeError, AttributeError):
            arch = None
        if arch != ARCHITECTURE:
            raise DigitlabError(f"{out}: already holds a model; choose another --out")


def make_ensemble(
    models: list[str | os.PathLike], out: str | os.PathLike, tta: bool = False
) -> Path:
    """Combine trained models (run or model folders) into one ensemble artifact at ``out``."""
    from digitlab.artifact import load_artifact, save_artifact

    if not models:
        raise DigitlabError("give at least one model to put in the ensemble")
    _check_out(Path(out))
    loaded = [load_artifact(m) for m in models]
    classes = {tuple(meta.get("classes", range(10))) for _, meta in loaded}
    if len(classes) > 1:
        raise DigitlabError("these models predict different classes; an ensemble needs one set")
    for path, (_, meta) in zip(models, loaded, strict=True):
        if meta["architecture"] == ARCHITECTURE:
            raise DigitlabError(f"{path}: is an ensemble already; list its members instead")
    members = [
        {
            "architecture": meta["architecture"],
            "model_kwargs": meta.get("model_kwargs", {}),
            "normalization": list(meta["normalization"]),
            "source": str(path),
            "metrics": meta.get("metrics", {}),
            "data": meta.get("recipe", {}).get("data", {}),  # what calibration may hold out
            "seed": meta.get("recipe", {}).get("seed", 0),
        }
        for path, (_, meta) in zip(models, loaded, strict=True)
    ]
    shifts = [list(s) for s in TTA_SHIFTS] if tta else [[0, 0]]
    ensemble = Ensemble(
        [m for m, _ in loaded], [tuple(m["normalization"]) for m in members], shifts
    )
    first = loaded[0][1]
    meta = {
        "architecture": ARCHITECTURE,
        "model_kwargs": {"members": members, "shifts": shifts},
        "normalization": IDENTITY,
        "classes": list(first.get("classes", range(10))),
        "description": f"ensemble of {len(members)} models"
        + (f", {len(shifts)} shifted views each" if tta else ""),
    }
    if "rejection" in first and len(members) == 1 and not tta:
        meta["rejection"] = first["rejection"]
    meta["metrics"] = _test_metrics(ensemble)
    return save_artifact(out, ensemble, meta).parent


def _test_metrics(ensemble: Ensemble) -> dict[str, float]:
    """The ensemble's own MNIST test accuracy and loss, as a trained run records its own."""
    from digitlab.data.dataset import load_split
    from digitlab.evaluate import evaluate_model
    from digitlab.models.registry import Normalization

    ensemble.eval()
    result = evaluate_model(ensemble, load_split("test"), Normalization(*IDENTITY).apply)
    return {"test_accuracy": result["accuracy"], "test_loss": result["loss"]}
