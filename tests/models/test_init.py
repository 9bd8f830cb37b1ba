"""Initial weights follow each tutorial's initialiser, so a recipe starts where theirs did."""

from __future__ import annotations

import math

import torch

from digitlab.models import create_model


def _bound(w: torch.Tensor) -> float:
    return w.abs().max().item()


def test_caffe_lenet_uses_caffe_xavier_uniform_with_fan_in():
    torch.manual_seed(0)
    model = create_model("lenet-caffe")
    fc1 = model[5]
    assert fc1.in_features == 800
    limit = math.sqrt(3 / 800)
    assert 0.95 * limit < _bound(fc1.weight) <= limit
    # a uniform distribution has sd = limit / sqrt(3)
    assert abs(fc1.weight.std().item() - limit / math.sqrt(3)) < 0.02 * limit
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    assert len(biases) == 4 and all(bool((b == 0).all()) for b in biases)


def test_mxnet_tutorial_models_start_from_uniform_one_hundredth():
    for name in ("mlp-mxnet", "lenet-tanh"):
        model = create_model(name)
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        assert max(_bound(w) for w in weights) <= 0.01
        assert min(_bound(w) for w in weights) > 0.009


def test_keras_fc_uses_truncated_he_normal():
    torch.manual_seed(0)
    w = create_model("fc-keras")[1].weight
    std = math.sqrt(2 / 784)
    assert abs(w.std().item() - std) < 0.03 * std
    assert _bound(w) <= 2 * std / 0.87962566103423978 + 1e-6


def test_paddle_cnn_convs_use_fluid_normal_and_its_fc_uses_xavier():
    torch.manual_seed(0)
    model = create_model("lenet-paddle")
    conv2 = model[4]
    assert abs(conv2.weight.std().item() - math.sqrt(2 / (20 * 25))) < 0.05 * math.sqrt(2 / 500)
    fc = model[8]
    assert _bound(fc.weight) <= math.sqrt(6 / (800 + 10))
