"""Per-layer model summary: output shape, parameters, multiply-adds and FLOPs of one image.

Counting convention (stated because every tool counts differently):

* Conv2d / Linear: ``MACs`` = multiply-adds of the weights (output elements x inputs per
  output); ``FLOPs = 2 x MACs`` (a multiply and an add). Bias additions are not counted —
  the usual "2 x MAC" convention. Keras reports no FLOPs at all, and Caffe-era papers and
  tools such as thop/fvcore quote MACs and often call them "FLOPs"; so we print both.
* BatchNorm (inference, a per-channel scale and shift): 2 FLOPs per element.
* ReLU / Tanh / Sigmoid and other activations: 1 FLOP per output element.
* MaxPool / AvgPool: kernel-area FLOPs per output element (compares or adds).
* Flatten, Dropout, Identity: 0 (no arithmetic at inference).

So LeNet (``lenet-caffe``) is 2.29 M MACs and 4.60 MFLOPs per 28x28 image, of which
4.59 M are its convolutions and dense layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from torch import nn

CONVENTION = (
    "FLOPs = 2 x MACs for conv/linear (bias not counted), + 2/element for batch norm, "
    "1/element for activations, kernel area/output for pooling"
)


@dataclass(frozen=True)
class LayerRow:
    """One leaf module as called in the forward pass of a single image."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape)
        return d


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _ops(module: nn.Module, inp: Any, out_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, FLOPs) of one call of a leaf module on one image, per the module docstring."""
    from torch import nn
    from torch.nn.modules import pooling

    n_out = _numel(out_shape)
    if isinstance(module, nn.modules.conv._ConvNd):
        k = _numel(tuple(module.kernel_size)) * (module.in_channels // module.groups)
        macs = n_out * k
        return macs, 2 * macs
    if isinstance(module, nn.Linear):
        macs = n_out * module.in_features
        return macs, 2 * macs
    if isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
        return 0, 2 * n_out
    if isinstance(module, pooling._MaxPoolNd | pooling._AvgPoolNd):
        ks = module.kernel_size
        dims = len(out_shape) - 1
        area = _numel(tuple(ks)) if isinstance(ks, tuple | list) else int(ks) ** dims
        return 0, area * n_out
    if isinstance(module, pooling._AdaptiveAvgPoolNd | pooling._AdaptiveMaxPoolNd):
        x = inp[0] if isinstance(inp, tuple) else inp
        return 0, _numel(tuple(x.shape[1:]))
    if isinstance(module, nn.Flatten | nn.Dropout | nn.Identity | nn.Unflatten):
        return 0, 0
    # Any other leaf (ReLU, Tanh, Sigmoid, GELU, ...): one operation per output element.
    return 0, n_out


def as_module(model: str | nn.Module) -> nn.Module:
    """A module as given, a registered model by name, or the model of a run/model folder."""
    from pathlib import Path

    from torch import nn

    if isinstance(model, nn.Module):
        return model
    from digitlab.models import MODELS, create_model

    if model in MODELS:
        return create_model(model)
    if Path(model).exists():
        from digitlab.artifact import load_artifact

        return load_artifact(model)[0]
    return create_model(model)  # raises the "unknown model; known models: ..." error


def summarize(model: str | nn.Module, input: tuple[int, ...] = (1, 28, 28)) -> list[LayerRow]:
    """Rows for every leaf module, in call order, from one forward pass of a zero image."""
    import torch

    module = as_module(model)
    rows: list[LayerRow] = []
    names = {m: n for n, m in module.named_modules()}

    def hook(m: nn.Module, inp: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            raise DigitlabError(f"layer {names[m]} returns {type(out).__name__}, not a tensor")
        shape = tuple(int(s) for s in out.shape[1:])
        macs, flops = _ops(m, inp, shape)
        params = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append(LayerRow(names[m] or "(model)", type(m).__name__, shape, params, macs, flops))

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    try:
        module.eval()
        p = next(module.parameters(), None)
        x = torch.zeros((1, *input), device=p.device if p is not None else "cpu")
        with torch.no_grad():
            module(x)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DigitlabError(f"the model does not accept input {input}: {first}") from None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return rows


def totals(rows: list[LayerRow]) -> dict[str, int]:
    """Sums over the rows: params, MACs and FLOPs per image."""
    return {
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs for r in rows),
        "flops": sum(r.flops for r in rows),
    }


def format_count(n: float) -> str:
    """3,770 -> '3.77 k', 4,600,000 -> '4.60 M': compact counts for tables."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f}"
