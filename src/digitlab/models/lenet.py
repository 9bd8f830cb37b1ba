"""The LeNet family as each framework's tutorial wrote it: two conv/pool stages, then dense.

Shapes on 28x28 input with 5x5 'valid' convolutions: 28 -> 24 -> pool 12 -> 8 -> pool 4.
"""

from __future__ import annotations

from torch import nn

from digitlab.models.init import (
    caffe_xavier_,
    glorot_uniform_,
    init_weights,
    mxnet_uniform_,
    paddle_conv_normal_,
)
from digitlab.models.registry import CAFFE, KERAS, MNIST_01, SYMMETRIC, register_model


def _lenet(act: type[nn.Module], conv_act: bool, num_classes: int) -> nn.Sequential:
    """conv 20@5x5, pool, conv 50@5x5, pool, fc 500 + ``act``, fc 10 (``act`` after convs too)."""

    def after_conv() -> list[nn.Module]:
        return [act()] if conv_act else []

    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        *after_conv(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        *after_conv(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * 4 * 4, 500),
        act(),
        nn.Linear(500, num_classes),
    )


@register_model(
    "lenet-caffe",
    normalization=CAFFE,
    description="conv 20, pool, conv 50, pool, fc 500 ReLU, fc 10; Caffe xavier init",
    tutorial="Caffe examples/mnist lenet_train_test.prototxt; MXNet's Caffe-style LeNet",
)
def lenet_caffe(num_classes: int = 10) -> nn.Module:
    return init_weights(_lenet(nn.ReLU, False, num_classes), caffe_xavier_)


@register_model(
    "lenet-tanh",
    normalization=MNIST_01,
    description="conv 20 tanh, pool, conv 50 tanh, pool, fc 500 tanh, fc 10; U(±0.01) init",
    tutorial="MXNet 'Handwritten Digit Recognition' tutorial (mnist.md): LeNet",
)
def lenet_tanh(num_classes: int = 10) -> nn.Module:
    return init_weights(_lenet(nn.Tanh, True, num_classes), mxnet_uniform_)


@register_model(
    "lenet-paddle",
    normalization=SYMMETRIC,
    description="conv 20 ReLU, pool, batch norm, conv 50 ReLU, pool, fc 10",
    tutorial="PaddlePaddle book, recognize_digits: convolutional_neural_network",
)
def lenet_paddle(num_classes: int = 10) -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(20),  # Paddle momentum 0.9 on running stats = torch momentum 0.1
        nn.Conv2d(20, 50, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * 4 * 4, num_classes),
    )
    return init_weights(model, glorot_uniform_, conv=paddle_conv_normal_)


@register_model(
    "lenet5",
    normalization=MNIST_01,
    description="LeNet-5: conv 6, pool, conv 16, pool, fc 120, fc 84, fc 10; sigmoid",
    tutorial="Gluon / Dive into Deep Learning (MXNet edition): LeNet",
)
def lenet5(num_classes: int = 10) -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.Sigmoid(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Sigmoid(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120),
        nn.Sigmoid(),
        nn.Linear(120, 84),
        nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )
    return init_weights(model, glorot_uniform_)


@register_model(
    "cnn-keras",
    normalization=KERAS,
    description="conv 28 same ReLU, pool, conv 50 same ReLU, pool, fc 500 ReLU, fc 10",
    tutorial="Keras CNN MNIST tutorial",
)
def cnn_keras(num_classes: int = 10) -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 28, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(28, 50, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * 7 * 7, 500),
        nn.ReLU(),
        nn.Linear(500, num_classes),
    )
    return init_weights(model, glorot_uniform_)
