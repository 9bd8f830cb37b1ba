"""The ensemble model: several trained models, and shifted copies of each input, voting as one.

An ensemble is saved as an ordinary model artifact whose architecture is ``"ensemble"``: its
members' weights sit in one safetensors file under ``members.<i>.``, their architectures and
normalisations in ``model_kwargs``. So everything that takes a model (evaluate, predict,
serve, export, bench) takes an ensemble unchanged, and the registry builds it like any other.

The ensemble sees raw pixel values (its own normalisation is the identity), normalises them
for each member as that member was trained, and returns the log of the mean probability over
members and shifts: a softmax of that output is the averaged vote, and the cross-entropy on
it is the ensemble's true log-loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.errors import DigitlabError
from digitlab.models.registry import Normalization, create_model, register_model

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


@register_model(
    ARCHITECTURE,
    normalization=Normalization(*IDENTITY),
    description="several trained models (and shifted views of each input) voting as one",
    zoo=False,
)
def ensemble(members: list[dict[str, Any]], shifts: list[list[int]] | None = None) -> Ensemble:
    """An untrained ensemble from the member descriptions stored in ``model_kwargs``."""
    try:
        models = [create_model(m["architecture"], **m.get("model_kwargs", {})) for m in members]
        norms = [tuple(m["normalization"]) for m in members]
        views = [tuple(s) for s in shifts] if shifts else None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DigitlabError(f"ensemble description is malformed ({exc!r})") from None
    return Ensemble(models, norms, views)
