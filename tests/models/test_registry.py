"""The model zoo: every tutorial architecture with its exact parameter count, the registry's
behaviour and each model's input normalisation."""

from __future__ import annotations

import json

import pytest
import torch

from digitlab.errors import DigitlabError
from digitlab.models import (
    CAFFE,
    KERAS,
    MNIST_01,
    MODELS,
    SYMMETRIC,
    Normalization,
    count_params,
    create_model,
    get_entry,
    list_models,
)

# The parameter counts the tutorials' own summaries give.
EXPECTED_PARAMS = {
    "softmax": 7_850,
    "mlp": 199_210,
    "mlp-mxnet": 109_386,
    "fc-keras": 1_333_770,
    "lenet-caffe": 431_080,
    "lenet-tanh": 431_080,
    "lenet-paddle": 33_620,
    "lenet5": 44_426,
    "cnn-keras": 1_266_288,
}


@pytest.mark.parametrize(("name", "params"), EXPECTED_PARAMS.items())
def test_tutorial_model_has_the_tutorials_exact_parameter_count(name, params):
    assert count_params(create_model(name)) == params


def test_every_registered_model_maps_a_batch_to_ten_logits():
    x = MNIST_01.apply(torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8))
    for entry in list_models():
        model = create_model(entry.name).eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (3, 10), entry.name
        assert torch.isfinite(out).all(), entry.name


def test_batch_norm_statistics_are_not_counted_as_trainable():
    model = create_model("lenet-paddle")
    assert count_params(model) == count_params(model, trainable_only=False) == 33_620
    model[0].weight.requires_grad_(False)
    assert count_params(model) == 33_620 - 500
    assert count_params(model, trainable_only=False) == 33_620


def test_mnist_fast_is_registered_and_small():
    assert "mnist-fast" in MODELS
    assert count_params(create_model("mnist-fast")) < 200_000


def test_mnist_vgg_options_change_the_network_not_its_function():
    """`deep` adds a conv and a hidden layer; `channels_last` only changes memory layout."""
    torch.manual_seed(0)
    plain = create_model("mnist-vgg").eval()
    assert count_params(plain) == 40_794
    assert count_params(create_model("mnist-vgg", deep=True)) == 147_162
    nhwc = create_model("mnist-vgg", channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = MNIST_01.apply(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.allclose(plain(x), nhwc(x), atol=1e-5)


def test_unknown_model_is_a_user_error_listing_the_known_names():
    with pytest.raises(DigitlabError, match="unknown model 'lenet-9'.*lenet-caffe"):
        create_model("lenet-9")
    with pytest.raises(DigitlabError, match="unknown model"):
        get_entry("nope")


def test_overrides_reach_the_factory_and_bad_ones_are_user_errors():
    model = create_model("fc-keras", dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert count_params(create_model("mnist-fast", width=8)) < count_params(
        create_model("mnist-fast")
    )
    with pytest.raises(DigitlabError, match="fc-keras"):
        create_model("fc-keras", colour=True)


def test_list_models_filters_by_shell_pattern():
    names = [e.name for e in list_models("lenet*")]
    assert names == ["lenet-caffe", "lenet-tanh", "lenet-paddle", "lenet5"]
    zoo = [name for name, e in MODELS.items() if e.zoo]
    assert [e.name for e in list_models()] == zoo
    assert [e.name for e in list_models(zoo=False)] == list(MODELS)
    assert "ensemble" in MODELS and "ensemble" not in zoo  # built from members, not a recipe


def test_each_model_declares_its_tutorials_normalisation():
    assert get_entry("lenet-caffe").normalization == CAFFE
    assert get_entry("mlp").normalization == SYMMETRIC
    assert get_entry("fc-keras").normalization == KERAS
    assert get_entry("mlp-mxnet").normalization == MNIST_01
    for entry in list_models():
        assert entry.description and entry.tutorial, entry.name


@pytest.mark.parametrize(
    ("norm", "lo", "hi"),
    [
        (MNIST_01, 0.0, 1.0),
        (CAFFE, -0.5, 127 / 256),
        (SYMMETRIC, -1.0, 1.0),
        (KERAS, -1.0, 128 / 127),
    ],
)
def test_normalisation_maps_black_and_white_to_the_tutorials_range(norm, lo, hi):
    x = torch.zeros(2, 28, 28, dtype=torch.uint8)
    x[:, :, 14:] = 255
    out = norm.apply(x)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.float32
    assert out.min().item() == pytest.approx(lo)
    assert out.max().item() == pytest.approx(hi)
    assert torch.equal(norm.apply(x.unsqueeze(1)), out)


def test_normalisation_on_real_digits_matches_the_formula(mnist):
    images = torch.from_numpy(mnist["test"].images[:64])
    norm = Normalization(33.32, 78.57)
    expected = (images.float() - 33.32) / 78.57
    assert torch.allclose(norm.apply(images)[:, 0], expected)


def test_models_cli_lists_every_model_with_its_parameter_count(cli):
    result = cli("models", "--json")
    assert result.returncode == 0, result.stderr.decode()
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(rows) == [name for name, e in MODELS.items() if e.zoo]
    for name, params in EXPECTED_PARAMS.items():
        assert rows[name]["params"] == params
    assert rows["lenet-caffe"]["normalization"] == {"shift": 128.0, "scale": 256.0}
    table = cli("models")
    assert table.returncode == 0
    assert "lenet-caffe" in table.stdout.decode() and "431,080" in table.stdout.decode()
