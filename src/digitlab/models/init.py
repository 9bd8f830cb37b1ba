"""The weight initialisations the original tutorials used, so a recipe starts where theirs did.

Fan-in/out follow every framework's convention: for a conv weight (out, in, k, k),
fan_in = in*k*k and fan_out = out*k*k. Biases start at zero in all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

WeightInit = Callable[[torch.Tensor], object]


def _fans(w: torch.Tensor) -> tuple[int, int]:
    receptive = w[0][0].numel() if w.dim() > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


def caffe_xavier_(w: torch.Tensor) -> torch.Tensor:
    """Caffe ``xavier`` filler (default FAN_IN): U(-a, a) with a = sqrt(3 / fan_in)."""
    bound = math.sqrt(3.0 / _fans(w)[0])
    return nn.init.uniform_(w, -bound, bound)


def glorot_uniform_(w: torch.Tensor) -> torch.Tensor:
    """Keras ``glorot_uniform`` = Gluon ``Xavier()`` = Paddle fc default: sqrt(6/(in+out))."""
    return nn.init.xavier_uniform_(w)


def he_normal_(w: torch.Tensor) -> torch.Tensor:
    """Keras ``he_normal``: normal truncated at 2 sd, rescaled so the kept sd is sqrt(2/fan_in)."""
    std = math.sqrt(2.0 / _fans(w)[0]) / 0.87962566103423978
    return nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


def paddle_conv_normal_(w: torch.Tensor) -> torch.Tensor:
    """PaddlePaddle fluid ``conv2d`` default: N(0, sqrt(2 / (k*k*in_channels)))."""
    return nn.init.normal_(w, 0.0, math.sqrt(2.0 / _fans(w)[0]))


def mxnet_uniform_(w: torch.Tensor) -> torch.Tensor:
    """MXNet ``Module.fit`` default ``Uniform(0.01)``: U(-0.01, 0.01)."""
    return nn.init.uniform_(w, -0.01, 0.01)


def init_weights(model: nn.Module, linear: WeightInit, conv: WeightInit | None = None) -> nn.Module:
    """Initialise every Linear/Conv2d weight (conv defaults to ``linear``) and zero the biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            fill = (conv or linear) if isinstance(m, nn.Conv2d) else linear
            fill(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
