"""Fully connected models: softmax regression and the tutorials' multilayer perceptrons."""

from __future__ import annotations

from torch import nn

from digitlab.models.init import glorot_uniform_, he_normal_, init_weights, mxnet_uniform_
from digitlab.models.registry import KERAS, MNIST_01, SYMMETRIC, register_model


def mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, dropout: float = 0.0) -> nn.Sequential:
    """Flatten, then Linear layers of ``sizes`` with ``act`` (and dropout) between them."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@register_model(
    "softmax",
    normalization=SYMMETRIC,
    description="softmax regression, 784-10",
    tutorial="PaddlePaddle book, recognize_digits: softmax_regression",
)
def softmax(num_classes: int = 10) -> nn.Module:
    return init_weights(mlp([784, num_classes]), glorot_uniform_)


@register_model(
    "mlp",
    normalization=SYMMETRIC,
    description="MLP 784-200-200-10, ReLU",
    tutorial="PaddlePaddle book, recognize_digits: multilayer_perceptron",
)
def paddle_mlp(hidden: int = 200, num_classes: int = 10) -> nn.Module:
    return init_weights(mlp([784, hidden, hidden, num_classes]), glorot_uniform_)


@register_model(
    "mlp-mxnet",
    normalization=MNIST_01,
    description="MLP 784-128-64-10, ReLU; U(±0.01) init",
    tutorial="MXNet 'Handwritten Digit Recognition' tutorial (mnist.md): MLP",
)
def mxnet_mlp(num_classes: int = 10) -> nn.Module:
    return init_weights(mlp([784, 128, 64, num_classes]), mxnet_uniform_)


@register_model(
    "fc-keras",
    normalization=KERAS,
    description="MLP 784-1024-512-10, ReLU, dropout 0.2; he-normal init",
    tutorial="Keras fully connected MNIST tutorial",
)
def keras_fc(dropout: float = 0.2, num_classes: int = 10) -> nn.Module:
    return init_weights(mlp([784, 1024, 512, num_classes], dropout=dropout), he_normal_)
