"""Recipes: every shipped TOML loads and validates; mistakes are one clear error naming the
file and the field; --set overrides parse as TOML values; a saved recipe reloads identically."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitlab.errors import DigitlabError
from digitlab.models import MODELS
from digitlab.recipes import (
    PACKAGED_RECIPES,
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


def load_shipped(name: str, tmp_path) -> Recipe:
    """A shipped recipe; finetune trains on the user's own digits, given with --data."""
    (tmp_path / "mine" / "7").mkdir(parents=True, exist_ok=True)
    mine = {"data.train_split": str(tmp_path / "mine")}
    return load_recipe(name, fields=mine if name == "finetune" else None)


def test_every_recipe_in_the_repo_loads_and_is_listed(tmp_path):
    names = list_recipes()
    assert set(TUTORIALS) | {"default", "finetune"} <= set(names)
    shipped = {p.stem for p in PACKAGED_RECIPES.glob("*.toml")}
    assert shipped == set(names) | set(list_recipes("line"))
    for name in names:
        recipe = load_shipped(name, tmp_path)
        assert recipe.name == name
        assert recipe.model.name in MODELS


def test_finetune_without_data_names_the_missing_folder_and_the_option(cli):
    r = cli("train", "finetune", "--iters", "1")
    err = r.stderr.decode()
    assert r.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "data.train_split: my-digits: no such file or folder" in err


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
        (
            ("batch_size = 32", "batch_size = 32\nfont_non_digits = 9"),
            "data",
            "font_non_digits nee",
        ),
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
        recipe = load_shipped(name, tmp_path)
        again = load_recipe(write(tmp_path, recipe_to_toml(recipe), f"{name}.toml"))
        assert again == recipe, name
    assert isinstance(again, Recipe)


# ----------------------------------------------------------------------------- bounds


FAST = GOOD.replace('name = "softmax"', 'name = "mnist-fast"')
STEP = ["schedule.policy=step", "schedule.stepsize=1"]


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        (["train.epochs=1e308"], "train.epochs", "less than or equal to 1000000000"),
        (["train.epochs=1e6"], "train.epochs 1e+06 of 1875 iterations", "epochs <= 533333"),
        (["data.batch_size=1", "train.epochs=20000"], "train.epochs", "epochs <= 16666.7"),
        (["train.iters=10000000000"], "train.iters", "less than or equal to 1000000000"),
        (["train.val_interval=10000000000000000000"], "train.val_interval", "less than or"),
        (["seed=18446744073709551616"], "seed", "less than or equal to 4294967295"),
        (["seed=-1"], "seed", "greater than or equal to 0"),
        (["data.uploads=100000000"], "data.uploads", "less than or equal to 1000000"),
        (["data.negatives=1000000000"], "data.negatives", "less than or equal to 1000000"),
        (["data.batch_size=1000000000000"], "data.batch_size", "less than or equal to 1048576"),
        (["data.val_fraction=1e-9"], "data", "leaves 0 for validation"),
        (["augment.elastic_sigma=1e5"], "augment.elastic_sigma", "less than or equal to 28"),
        (["augment.elastic_sigma=1e-300"], "augment.elastic_sigma", "greater than or equal"),
        (["augment.elastic_alpha=1e300"], "augment.elastic_alpha", "less than or equal to 1000"),
        (["augment.scale=[1e-300, 1]"], "augment", "0.1 <= min <= max <= 10"),
        (["solver.lr=1e300"], "solver.lr", "less than or equal to 100"),
        (["solver.bias_lr_mult=1e300"], "solver.bias_lr_mult", "less than or equal to 100"),
        (["solver.weight_decay=1e10"], "solver.weight_decay", "less than or equal to 1"),
        ([*STEP, "schedule.gamma=2"], "schedule", "needs gamma in (0, 1], not 2"),
        (["schedule.policy=exp", "schedule.gamma=1.0001"], "schedule", "gamma in (0, 1]"),
        (
            ["schedule.policy=inv", "schedule.gamma=1", "schedule.power=-5"],
            "schedule.power",
            "than or",
        ),
        (["schedule.policy=poly", "schedule.power=-1"], "schedule.power", "greater than or"),
        (["schedule.policy=onecycle", "schedule.div_factor=1e-300"], "schedule.div_factor", "1"),
        (["schedule.final_div_factor=0.5"], "schedule.final_div_factor", "greater than or"),
        (["schedule.max_lr=1e300"], "schedule.max_lr", "less than or equal to 100"),
        (["schedule.stop_factor_lr=1e300"], "schedule.stop_factor_lr", "less than or equal"),
        ([f"schedule.stepvalues=[{','.join(map(str, range(2000)))}]"], "schedule.stepvalues", ""),
        (["schedule.stepvalues=[10, 100000000000]"], "schedule", "in [0, 1000000000]"),
        (["schedule.warmup_iters=10000000000"], "schedule.warmup_iters", "less than or equal"),
        (["model.options.num_classes=-1"], "model.options.num_classes is -1", "leave it out"),
        (["model.options.num_classes=11"], "model.options.num_classes is 11", "has 10 classes"),
        (
            ["data.negatives=10", "model.options.num_classes=10"],
            "model.options.num_classes is 10",
            "has 11 classes",
        ),
        (["model.options.dropout=1.5"], "model", "options.dropout of 'mnist-fast' must lie in"),
        (["model.options.dropout=-0.1"], "model", "dropout of 'mnist-fast' must lie in [0, 0.99]"),
        (["model.options.hidden=0"], "model", "options.hidden of 'mnist-fast' must lie in [1,"),
        (["model.options.hidden=1000000000"], "model", "must lie in [1, 8192]"),
        (["model.options.width=-3"], "model", "options.width of 'mnist-fast' must lie in [1, 256"),
        (["model.options.hidden=12.5"], "model", "hidden of 'mnist-fast' is a whole number"),
        (['model.options.hidden="big"'], "model", "hidden of 'mnist-fast' is a whole number"),
        (["model.options.channels_last=1"], "model", "channels_last of 'mnist-fast' is true or"),
        (["model.options.num_classes=100000000000000000000000"], "model", "within +-"),
        (["model.normalization=[0, 1e-300]"], "model.normalization", "0.01 <= |scale|"),
        (["model.normalization=[1e9, 1]"], "model.normalization", "|shift| <= 1000"),
    ],
)
def test_values_that_would_crash_or_run_away_are_refused_at_load(
    tmp_path, overrides, field, allowed
):
    path = write(tmp_path, FAST, "r.toml")
    with pytest.raises(DigitlabError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message and "r.toml: " in message
    assert field in message and allowed in message, message


def test_accepted_extremes_still_load(tmp_path):
    """The bounds leave every sane setting alone: the edges themselves are accepted."""
    path = write(tmp_path, FAST, "r.toml")
    edges = [
        "seed=4294967295",
        "train.iters=1000000000",
        "data.uploads=1000000",
        "augment.elastic_sigma=28",
        "augment.elastic_alpha=34",
        "model.options.dropout=0.99",
        "model.options.hidden=8192",
        "model.options.width=1",
        "schedule.policy=sigmoid",
        "schedule.gamma=-1e300",
        "schedule.stepsize=1000000000",
    ]
    recipe = load_recipe(path, edges)
    assert recipe.seed == 2**32 - 1 and recipe.model.options["hidden"] == 8192
    assert load_recipe(path, ["data.batch_size=1", "train.epochs=16666"]).train.epochs == 16666


def test_every_numeric_model_option_has_a_declared_range():
    import inspect

    from digitlab.recipes import OPTION_RANGES

    for name, entry in MODELS.items():
        for param in inspect.signature(entry.factory).parameters.values():
            numeric = type(param.default) in (int, float)
            if numeric and param.name != "num_classes":
                assert param.name in OPTION_RANGES, f"{name}: {param.name} has no range"


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 100_000 + "]" * 100_000,
        "a = " + "{a = " * 100_000 + "1" + "}" * 100_000,
        "[" + ".".join(["a"] * 100_000) + "]\nb = 1",
        "[model.options." + ".".join(["a"] * 30) + "]\nb = 1",
    ],
    ids=["arrays", "inline-tables", "dotted-header", "30-deep"],
)
def test_a_recipe_nested_deeply_is_one_error(tmp_path, text):
    path = write(tmp_path, GOOD + "\n" + text, "deep.toml")
    with pytest.raises(DigitlabError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "deep.toml: " in message and "nested" in message and "\n" not in message


def test_a_set_value_nested_deeply_is_one_error(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(DigitlabError, match="--set value .*nested"):
        load_recipe(path, ["model.options.x=" + "[" * 50_000 + "]" * 50_000])
    with pytest.raises(DigitlabError, match="--set value .*nested more than 16"):
        load_recipe(path, ["model.options.x=" + "[" * 40 + "]" * 40])


@pytest.mark.timeout(20)
def test_a_fifo_a_folder_a_device_and_a_huge_file_are_refused_without_reading_them(tmp_path):
    import os

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opened for a blocking read, this would wait for a writer for ever
    with pytest.raises(DigitlabError, match="fifo.toml: is a FIFO .*not a regular recipe file"):
        load_recipe(str(fifo))
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(DigitlabError, match="folder.toml: (is a directory|cannot read)"):
        load_recipe(str(tmp_path / "folder.toml"))
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    with pytest.raises(DigitlabError, match="zero.toml: is a character device"):
        load_recipe(str(tmp_path / "zero.toml"))
    big = write(tmp_path, GOOD + "#" * (1 << 20), "big.toml")
    with pytest.raises(
        DigitlabError, match="big.toml: the recipe is 1,048,[0-9]+ bytes; at most 1,048,576"
    ):
        load_recipe(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(GOOD.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(DigitlabError, match="latin.toml: cannot read: not UTF-8"):
        load_recipe(str(latin))


@pytest.mark.parametrize(
    "args",
    [
        ["--epochs", "1e308"],
        ["--set", "seed=18446744073709551616"],
        ["--set", "schedule.policy=exp", "--set", "schedule.gamma=2"],
        ["--set", "augment.elastic_sigma=1e5"],
        ["--set", "data.uploads=100000000"],
        ["--set", "model.options.hidden=-1"],
    ],
)
def test_cli_train_refuses_a_runaway_value_in_one_line_before_training(tmp_path, cli, args):
    import time

    recipe = write(tmp_path, FAST, "r.toml")
    start = time.monotonic()
    result = cli("train", recipe, "--out", str(tmp_path / "run"), *args, timeout=60)
    stderr = result.stderr.decode().strip()
    assert result.returncode == 2, stderr
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert "r.toml: " in stderr
    assert not (tmp_path / "run").exists()
    assert time.monotonic() - start < 30


def test_cli_train_refuses_a_deeply_nested_recipe_in_one_line(tmp_path, cli):
    recipe = write(tmp_path, GOOD + "a = " + "[" * 100_000 + "]" * 100_000, "deep.toml")
    result = cli("train", recipe, "--out", str(tmp_path / "run"), timeout=60)
    stderr = result.stderr.decode().strip()
    assert result.returncode == 2 and len(stderr.splitlines()) == 1, stderr
    assert "deep.toml: not valid TOML: nested too deeply" in stderr
    assert not (tmp_path / "run").exists()


def test_the_class_count_and_one_epoch_follow_from_the_data(tmp_path):
    """No recipe keeps a number that the data decides: num_classes and "epoch" intervals."""
    bundled = load_recipe("bundled")
    assert "num_classes" not in bundled.model.options
    assert bundled.model_options()["num_classes"] == 11  # negatives add "not a digit"
    assert load_recipe("default").model_options().get("num_classes", 10) == 10
    assert bundled.train.val_interval == "epoch"
    assert bundled.intervals(641) == (641, 3205)
    other = load_recipe("bundled", ["data.batch_size=256"])
    assert other.intervals(321)[0] == 321  # one epoch at the new batch size, nothing stale
    for name in list_recipes():
        text = (PACKAGED_RECIPES / f"{name}.toml").read_text()
        assert "# one epoch" not in text and "num_classes" not in text, name


def test_the_line_model_is_registered_and_trained_from_its_own_recipe():
    from digitlab.models import create_model, list_models
    from digitlab.recipes import load_line_recipe

    line = load_line_recipe()  # the `line` recipe: every setting of train-line has its home
    assert (line.model.name, line.data.lines, line.train.epochs) == ("line-ctc", 40_000, 8)
    assert (line.data.font_lines, line.data.max_digits) == (20_000, 10)
    assert (line.solver.lr, line.solver.weight_decay, line.data.batch_size) == (3e-3, 0.01, 64)
    assert line.schedule.pct_start == 0.15 and line.data.val_lines() == 1333
    net = create_model("line-ctc")
    # 229,547 in line.onnx, where each batch norm is folded into its convolution
    assert sum(p.numel() for p in net.parameters()) == 230_059
    assert "line-ctc" not in [e.name for e in list_models()]  # not a digit classifier
    assert "line" in list_recipes("line") and "line" not in list_recipes()
    with pytest.raises(DigitlabError, match="not a digit model's recipe"):
        load_recipe("line")
    with pytest.raises(DigitlabError, match="not a line model's recipe"):
        load_line_recipe("fast")
    with pytest.raises(DigitlabError, match="train.epochs"):
        load_line_recipe("line", ["train.epochs=0"])
