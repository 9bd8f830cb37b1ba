"""Metrics on a labelled split: accuracy, loss, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from digitlab.data.dataset import Dataset


def batched_logits(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images_u8: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 1000,
) -> torch.Tensor:
    """Logits for uint8 images, in batches, without autograd; ``prepare`` normalises a batch."""
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, images_u8.shape[0], batch_size):
            outs.append(model(prepare(images_u8[start : start + batch_size])).float())
    return torch.cat(outs) if outs else torch.empty(0, 10)


def metrics_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None
) -> dict[str, Any]:
    """The full metrics object; ``per_batch`` accuracy too when ``batch_size`` is given."""
    import torch.nn.functional as F

    pred = logits.argmax(1)
    n = int(labels.shape[0])
    loss = float(F.cross_entropy(logits, labels)) if n else float("nan")
    cm = confusion_matrix(pred.numpy(), labels.numpy(), max(10, int(logits.shape[1])))
    result: dict[str, Any] = {
        "n": n,
        "accuracy": float((pred == labels).float().mean()) if n else float("nan"),
        "loss": loss,
        "per_class": per_class_scores(cm),
        "confusion_matrix": cm.tolist(),
    }
    if batch_size:
        correct = (pred == labels).float()
        result["per_batch"] = [
            float(correct[i : i + batch_size].mean()) for i in range(0, n, batch_size)
        ]
    return result


def confusion_matrix(pred: np.ndarray, true: np.ndarray, classes: int = 10) -> np.ndarray:
    """``cm[t, p]`` counts images of true class t predicted as p."""
    return np.bincount(true * classes + pred, minlength=classes * classes).reshape(classes, classes)


def per_class_scores(cm: np.ndarray) -> list[dict[str, float]]:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(0)
    support = cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [
        {
            "class": c,
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c in range(cm.shape[0])
    ]


def evaluate_model(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 1000,
    per_batch: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset``; ``prepare`` turns a uint8 batch into model input."""
    images, labels = dataset.tensors()
    logits = batched_logits(model, images, prepare, batch_size)
    result = metrics_from_logits(logits, labels, batch_size if per_batch else None)
    result["split"] = dataset.name
    return result


def evaluate_artifact(
    path: str,
    split: str = "test",
    batch_size: int = 1000,
    per_batch: bool = False,
    preprocess: bool = True,
) -> dict[str, Any]:
    """Load a saved model (run folder or model folder) and evaluate it on a data source:
    an MNIST split or a user's own labelled digits (digitlab.data.source)."""
    from digitlab.artifact import load_artifact
    from digitlab.data.source import load_source
    from digitlab.models.registry import Normalization

    model, meta = load_artifact(path)
    norm = Normalization(*meta.normalization)
    data = load_source(split, preprocess=preprocess)
    if data.num_classes > meta.num_classes:
        from digitlab.errors import DigitlabError

        raise DigitlabError(f"{split}: holds 'not a digit' images; {path} has no such class")
    result = evaluate_model(model, data, norm.apply, batch_size, per_batch)
    result["model"] = str(path)
    return result
