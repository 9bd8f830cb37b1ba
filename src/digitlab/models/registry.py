"""The one model registry: a name maps to a factory and the input normalisation it expects.

Modelled on timm's ``@register_model`` / ``create_model`` / ``list_models``, with a single dict.
A model takes float images (N,1,28,28) and returns logits (N,10); what "float" means (the
scaling of the uint8 pixels) is part of its entry, so nothing else needs to know it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from digitlab.errors import DigitlabError


@dataclass(frozen=True)
class Normalization:
    """``x_float = (x_uint8 - shift) / scale``: how a framework's tutorial fed pixels in."""

    shift: float
    scale: float

    def apply(self, x_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (N,28,28) or (N,1,28,28) -> float32 (N,1,28,28)."""
        if x_u8.dim() == 3:
            x_u8 = x_u8.unsqueeze(1)
        x = x_u8.to(torch.float32)
        if self.shift:
            x = x - self.shift
        return x / self.scale if self.scale != 1 else x

    def __str__(self) -> str:
        return f"(x-{self.shift:g})/{self.scale:g}" if self.shift else f"x/{self.scale:g}"


MNIST_01 = Normalization(0.0, 255.0)  # x/255 in [0, 1]: MXNet, Gluon, PyTorch examples
CAFFE = Normalization(128.0, 256.0)  # (x-128)/256 in [-0.5, 0.5): Caffe/MXNet LeNet
SYMMETRIC = Normalization(127.5, 127.5)  # x/255*2-1 in [-1, 1]: PaddlePaddle book
KERAS = Normalization(127.0, 127.0)  # (x-127)/127: the Keras tutorials
MNIST_STD = Normalization(33.32, 78.57)  # mean 0.1307, sd 0.3081 of x/255: pytorch/examples


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``factory(**overrides)`` builds it, fed by ``normalization``."""

    name: str
    factory: Callable[..., nn.Module]
    normalization: Normalization
    description: str
    tutorial: str = ""
    zoo: bool = True  # a model trained from scratch; False for composites (ensemble)


MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    normalization: Normalization,
    description: str,
    tutorial: str = "",
    zoo: bool = True,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: put a factory into :data:`MODELS` under ``name`` (names are the public API)."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelEntry(name, factory, normalization, description, tutorial, zoo)
        return factory

    return decorate


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name``; an unknown name is a user error that lists the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise DigitlabError(f"unknown model {name!r}; known models: {known}") from None


def create_model(name: str, **overrides: object) -> nn.Module:
    """Build a fresh, initialised model; ``overrides`` go to its factory (e.g. ``dropout=0``)."""
    entry = get_entry(name)
    try:
        return entry.factory(**overrides)
    except TypeError as exc:
        raise DigitlabError(f"model {name!r}: {exc}") from None


def list_models(pattern: str = "*", zoo: bool = True) -> list[ModelEntry]:
    """Entries whose name matches the shell-style ``pattern``, in registration order; by
    default only zoo models (those a recipe trains from scratch)."""
    return [e for n, e in MODELS.items() if fnmatch.fnmatchcase(n, pattern) and (e.zoo or not zoo)]


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (batch-norm running statistics are buffers, never counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
