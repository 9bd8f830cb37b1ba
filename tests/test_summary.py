"""Per-layer model summary: shapes, parameter totals that match the tutorials, and FLOPs."""

from __future__ import annotations

import json

import pytest
from torch import nn

from digitlab.errors import DigitlabError
from digitlab.models import count_params, create_model, list_models
from digitlab.summary import summarize, totals


@pytest.mark.parametrize(
    ("name", "params"),
    [("fc-keras", 1_333_770), ("cnn-keras", 1_266_288)],
)
def test_keras_models_total_the_parameters_keras_prints(name, params):
    assert totals(summarize(name))["params"] == params


@pytest.mark.parametrize("name", [e.name for e in list_models()])
def test_layer_params_add_up_to_the_models_parameter_count(name):
    model = create_model(name)
    assert totals(summarize(model))["params"] == count_params(model)


def test_lenet_caffe_is_2_3_million_macs_and_4_6_mflops():
    rows = summarize("lenet-caffe")
    t = totals(rows)
    # conv1 20x24x24x25 + conv2 50x8x8x500 + fc 800x500 + fc 500x10
    assert t["macs"] == 288_000 + 1_600_000 + 400_000 + 5_000
    assert 4.55e6 < t["flops"] < 4.65e6
    conv_fc = sum(r.flops for r in rows if r.type in ("Conv2d", "Linear"))
    assert conv_fc == 2 * t["macs"]


def test_lenet_caffe_layers_have_their_output_shapes():
    rows = summarize("lenet-caffe")
    assert [(r.type, r.output_shape) for r in rows] == [
        ("Conv2d", (20, 24, 24)),
        ("MaxPool2d", (20, 12, 12)),
        ("Conv2d", (50, 8, 8)),
        ("MaxPool2d", (50, 4, 4)),
        ("Flatten", (800,)),
        ("Linear", (500,)),
        ("ReLU", (500,)),
        ("Linear", (10,)),
    ]


def test_batch_norm_and_pooling_count_elementwise_flops():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2))
    conv, bn, pool = summarize(model)
    assert conv.macs == 4 * 28 * 28 * 9 and conv.flops == 2 * conv.macs
    assert bn.flops == 2 * 4 * 28 * 28 and bn.macs == 0
    assert pool.flops == 4 * 14 * 14 * 4


def test_summary_leaves_a_training_model_in_training_mode():
    model = create_model("mnist-fast")
    model.train()
    summarize(model)
    assert model.training


def test_a_model_that_rejects_the_input_shape_is_a_user_error():
    with pytest.raises(DigitlabError, match="does not accept input"):
        summarize("lenet-caffe", input=(3, 8, 8))


def test_cli_summary_prints_layers_and_totals(cli):
    r = cli("summary", "lenet-caffe")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "431,080" in out and "2,293,000" in out and "Conv2d" in out and "20×24×24" in out


def test_cli_summary_json_and_unknown_model(cli):
    r = cli("summary", "cnn-keras", "--json")
    data = json.loads(r.stdout)
    assert data["params"] == 1_266_288 and len(data["layers"]) == 10
    r = cli("summary", "no-such-model")
    assert r.returncode == 2 and "unknown model" in r.stderr.decode()


def test_cli_models_json_lists_flops_and_macs(cli):
    r = cli("models", "lenet-caffe", "--json")
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["lenet-caffe"]["macs"] == 2_293_000
    assert rows["lenet-caffe"]["flops"] == totals(summarize("lenet-caffe"))["flops"]
    table = cli("models", "lenet-caffe").stdout.decode()
    assert "FLOPs" in table and "4.60 M" in table


def test_cli_models_table_of_the_whole_zoo_keeps_one_row_per_model(cli):
    """Piped output is not squeezed to 80 columns: each model stays on one line."""
    rows = json.loads(cli("models", "--json").stdout)
    lines = cli("models").stdout.decode().splitlines()
    for row in rows:
        line = next(x for x in lines if x.startswith(f"│ {row['name']} "))
        assert f"{row['params']:,}" in line and row["description"] in line
