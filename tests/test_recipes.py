"""Recipes: every shipped TOML loads and validates; mistakes are one clear error naming the
file and the field; --set overrides parse as TOML values; a saved recipe reloads identically."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitlab.errors import DigitlabError
from digitlab.models import MODELS
from digitlab.recipes import (
    REPO_RECIPES,
    Recipe,
    apply_override,
    list_recipes,
    load_recipe,
    recipe_to_toml,
)

TUTORIALS = [
    "caffe-lenet",
    "mxnet-lenet",
    "mxnet-mlp",
    "mxnet-lenet-tanh",
    "paddle-softmax",
    "paddle-mlp",
    "paddle-cnn",
    "keras-fc",
    "keras-cnn",
    "gluon-lenet5",
]

GOOD = """
name = "tiny"
[model]
name = "softmax"
[data]
batch_size = 32
[solver]
optimizer = "sgd"
lr = 0.1
[train]
iters = 10
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_recipe_in_the_repo_loads_and_is_listed():
    names = list_recipes()
    assert set(TUTORIALS) | {"default"} <= set(names)
    assert {p.stem for p in REPO_RECIPES.glob("*.toml")} == set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.model.name in MODELS


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_recipes_cite_their_figure_and_never_select_on_test(name):
    recipe = load_recipe(name)
    assert recipe.cites and recipe.description
    assert 0.9 < recipe.target_accuracy < 1
    assert f"{recipe.target_accuracy * 100:.2f}".rstrip("0") in recipe.cites
    if recipe.data.val_split == "test":
        assert recipe.train.select_best is None and recipe.train.early_stop_patience is None


def test_tutorial_recipes_hold_the_tutorials_settings():
    caffe = load_recipe("caffe-lenet")
    assert (caffe.schedule.policy, caffe.schedule.gamma, caffe.schedule.power) == (
        "inv",
        1e-4,
        0.75,
    )
    assert (caffe.train.iters, caffe.train.val_interval, caffe.train.checkpoint_interval) == (
        36000,
        500,
        5000,
    )
    assert caffe.model.normalization == (128.0, 256.0)
    assert (caffe.data.train_split, caffe.data.val_split, caffe.data.batch_size) == (
        "train50k",
        "val",
        50,
    )
    mx = load_recipe("mxnet-lenet")
    assert mx.augment.crop == (24, 28) and mx.augment.rotation == 15
    assert (mx.schedule.policy, mx.schedule.factor, mx.schedule.factor_step) == (
        "factor",
        0.95,
        1000,
    )
    keras = load_recipe("keras-fc")
    assert keras.data.val_fraction == 0.05 and keras.data.val_split is None
    assert load_recipe("gluon-lenet5").solver.lr == 1.5


def test_default_recipe_is_ours_and_selects_on_validation_only():
    recipe = load_recipe("default")
    assert recipe.model.name == "mnist-fast"
    assert "ours" in recipe.cites
    assert recipe.data.val_split == "val" and recipe.data.train_split == "train50k"


def test_name_defaults_to_the_file_stem(tmp_path):
    path = write(tmp_path, GOOD.replace('name = "tiny"\n', "", 1), "stem-name.toml")
    assert load_recipe(path).name == "stem-name"


def test_overrides_parse_values_as_toml(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(
        path,
        [
            "solver.lr=0.05",
            "solver.nesterov=true",
            "solver.momentum=0.9",
            "augment.crop=[24, 28]",
            "model.name=lenet-caffe",
            "data.val_split=val",
            "data.train_split = train50k",
            'description="quoted words"',
            "schedule.stepvalues=[100, 200]",
        ],
    )
    assert recipe.solver.lr == 0.05 and recipe.solver.nesterov is True
    assert recipe.augment.crop == (24, 28)
    assert recipe.model.name == "lenet-caffe"
    assert recipe.data.train_split == "train50k" and recipe.data.val_split == "val"
    assert recipe.description == "quoted words"
    assert recipe.schedule.stepvalues == [100, 200]


def test_setting_epochs_replaces_iters_and_null_unsets(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.epochs=2.5"])
    assert recipe.train.epochs == 2.5 and recipe.train.iters is None
    assert load_recipe(path, ["data.val_split=val", "data.train_split=train50k"]).data.val_split
    assert load_recipe(path, ["data.val_split=null"]).data.val_split is None


def test_apply_override_builds_missing_sections_and_rejects_bad_syntax():
    data: dict = {"solver": {"lr": 1.0}}
    assert apply_override(data, "schedule.policy=step") == {
        "solver": {"lr": 1.0},
        "schedule": {"policy": "step"},
    }
    for bad in ("solver.lr", "=3", "solver..lr=1", "solver.lr.x=1"):
        with pytest.raises(DigitlabError, match="--set"):
            apply_override(data, bad)


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (("lr = 0.1", "lr = 0.1\nlrr = 2"), "solver.lrr", "unknown field; known: optimizer, lr"),
        (("lr = 0.1", 'lr = "fast"'), "solver.lr", "valid number"),
        (("lr = 0.1", "lr = -0.1"), "solver.lr", "greater than 0"),
        (("iters = 10", "iters = 10\nepochs = 1"), "train", "exactly one of iters and epochs"),
        (('name = "softmax"', 'name = "resnet-999"'), "model", "unknown model 'resnet-999'"),
        (("batch_size = 32", ""), "data.batch_size", "required field is missing"),
        (('optimizer = "sgd"', 'optimizer = "rmsprop"'), "solver.optimizer", "'sgd', 'adam'"),
        (("[train]", '[schedule]\npolicy = "inv"\n[train]'), "schedule", "needs gamma and power"),
        (("[train]", "[augment]\nrotation = 500\n[train]"), "augment.rotation", "less than"),
        (("batch_size = 32", "batch_size = 32\nnumber_pieces = 10"), "data", "needs negatives"),
        (("lr = 0.1", "lr = inf"), "solver.lr", "finite number"),
        (("iters = 10", "epochs = inf"), "train.epochs", "finite number"),
        (("batch_size = 32", "batch_size = true"), "data", "batch_size: expected <class 'int'>"),
        (("[train]", "[augment]\nrotation = true\n[train]"), "augment", "rotation: expected"),
    ],
)
def test_bad_recipe_is_one_error_naming_file_and_field(tmp_path, edit, field, message):
    text = GOOD.replace(*edit)
    assert text != GOOD
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(DigitlabError) as info:
        load_recipe(path)
    assert f"bad.toml: {field}: " in str(info.value)
    assert message in str(info.value)


def test_selecting_on_the_test_set_is_refused(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(DigitlabError, match="would select on test"):
        load_recipe(path, ["data.val_split=test", "train.select_best=val_accuracy"])
    with pytest.raises(DigitlabError, match="inside train_split 'train'"):
        load_recipe(path, ["data.val_split=val"])


def test_error_from_an_override_names_the_override(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(DigitlabError, match=r"solver.lr: .* \(from --set solver.lr=-1\)"):
        load_recipe(path, ["solver.lr=-1"])


def test_bad_toml_missing_file_and_unknown_name_are_user_errors(tmp_path):
    with pytest.raises(DigitlabError, match="broken.toml: not valid TOML"):
        load_recipe(write(tmp_path, "[model\nname=", "broken.toml"))
    with pytest.raises(DigitlabError, match="no recipe file"):
        load_recipe(str(tmp_path / "absent.toml"))
    with pytest.raises(DigitlabError, match="unknown recipe 'no-such'.*caffe-lenet"):
        load_recipe("no-such")


def test_recipe_round_trips_through_toml(tmp_path):
    for name in list_recipes():
        recipe = load_recipe(name)
        again = load_recipe(write(tmp_path, recipe_to_toml(recipe), f"{name}.toml"))
        assert again == recipe, name
    assert isinstance(again, Recipe)
