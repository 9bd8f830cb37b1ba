"""Ensembles of real (briefly) trained models: the vote is the mean of the members'
probabilities, each member sees its own normalisation, and every model command takes one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit import write_recipe as small_recipe

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


@pytest.fixture(scope="module")
def members(tmp_path_factory, digitlab_home) -> list[Path]:
    """Two different models with different input normalisations ([-1, 1] and [0, 1])."""
    from digitlab.recipes import load_recipe
    from digitlab.train.loop import train

    runs = []
    for seed, model in ((1, "softmax"), (2, "mlp-mxnet")):
        folder = tmp_path_factory.mktemp(model)
        small_recipe(
            folder / "r.toml",
            seed=seed,
            model={"name": model},
            solver={"lr": 0.05},
            train={
                "iters": 150,
                "val_interval": 150,
                "checkpoint_interval": None,
                "log_interval": None,
            },
        )
        train(load_recipe(str(folder / "r.toml")), folder / "run", progress=False)
        runs.append(folder / "run")
    return runs


def member_probabilities(run: Path, images: torch.Tensor) -> np.ndarray:
    from digitlab.artifact import load_artifact
    from digitlab.models.registry import Normalization

    model, meta = load_artifact(run)
    with torch.inference_mode():
        logits = model(Normalization(*meta.normalization).apply(images))
    return torch.softmax(logits, 1).numpy()


def test_the_vote_is_the_mean_of_the_members_probabilities(members, mnist, tmp_path):
    from digitlab.artifact import load_artifact
    from digitlab.ensemble import make_ensemble

    folder = make_ensemble(members, tmp_path / "ens")
    ensemble, meta = load_artifact(folder)
    assert meta.architecture == "ensemble" and len(meta.model_kwargs["members"]) == 2

    images = torch.from_numpy(mnist["test"].images[:500])
    with torch.inference_mode():
        got = torch.softmax(ensemble(images.float()), 1).numpy()
    want = np.mean([member_probabilities(r, images) for r in members], axis=0)
    np.testing.assert_allclose(got, want, atol=1e-5)

    singles = [member_probabilities(r, images) for r in members]
    assert not np.allclose(singles[0], singles[1], atol=1e-2)  # the members really differ


def test_evaluate_and_predict_take_an_ensemble(members, mnist, tmp_path, cli):
    out = cli("ensemble", *map(str, members), "--out", str(tmp_path / "ens"))
    assert out.returncode == 0, out.stderr.decode()

    result = cli("evaluate", str(tmp_path / "ens"), "--json")
    assert result.returncode == 0, result.stderr.decode()
    accuracy = json.loads(result.stdout)["accuracy"]

    images = torch.from_numpy(mnist["test"].images)
    labels = mnist["test"].labels
    mean = np.mean([member_probabilities(r, images) for r in members], axis=0)
    assert accuracy == pytest.approx(float((mean.argmax(1) == labels).mean()), abs=1e-6)
    assert accuracy > 0.85
    meta = json.loads((tmp_path / "ens" / "model.json").read_text())
    assert meta["metrics"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert f"(test accuracy {accuracy:.2%})" in out.stdout.decode()

    from PIL import Image

    png = tmp_path / "seven.png"
    index = int(np.flatnonzero(labels == 7)[0])
    Image.fromarray(mnist["test"].images[index]).save(png)
    got = cli("predict", str(tmp_path / "ens"), str(png), "--no-preprocess", "--json")
    assert got.returncode == 0, got.stderr.decode()
    assert json.loads(got.stdout)["digit"] == int(mean[index].argmax())


def test_shifted_views_move_the_ink_and_average_five_views(members, mnist, tmp_path):
    from digitlab.artifact import load_artifact
    from digitlab.ensemble import make_ensemble
    from digitlab.models.ensemble import TTA_SHIFTS, shift

    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 12] = 255
    assert shift(x, 1, 0)[0, 0, 10, 13] == 255 and shift(x, 1, 0).sum() == 255
    assert shift(x, 0, -1)[0, 0, 9, 12] == 255
    edge = torch.zeros(1, 1, 28, 28)
    edge[0, 0, 5, 27] = 255
    assert shift(edge, 1, 0).sum() == 0  # moved off the image, nothing wraps round

    folder = make_ensemble(members[:1], tmp_path / "tta", tta=True)
    ensemble, _ = load_artifact(folder)
    images = torch.from_numpy(mnist["test"].images[:200]).float().unsqueeze(1)
    with torch.inference_mode():
        got = torch.softmax(ensemble(images), 1).numpy()
    model, meta = load_artifact(members[0])
    mean, scale = meta.normalization
    with torch.inference_mode():
        views = [
            torch.softmax(model((shift(images, dx, dy) - mean) / scale), 1).numpy()
            for dx, dy in TTA_SHIFTS
        ]
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-5)
    assert not np.allclose(views[0], views[1], atol=1e-3)


@pytest.mark.parametrize("case", ["missing member", "nested ensemble", "out is a run"])
def test_bad_ensembles_fail_with_one_line(members, tmp_path, cli, case):
    out_dir = tmp_path / "e2"
    if case == "missing member":
        args = [str(members[0]), str(tmp_path / "nowhere")]
    elif case == "nested ensemble":
        assert cli("ensemble", str(members[0]), "--out", str(tmp_path / "e1")).returncode == 0
        args = [str(tmp_path / "e1"), str(members[1])]
    else:  # writing over a training run would lose its own model
        out_dir = tmp_path / "run-copy"
        shutil.copytree(members[0], out_dir)
        args = [str(members[0]), str(members[1])]
    before = (out_dir / "model.json").read_bytes() if out_dir.exists() else None
    out = cli("ensemble", *args, "--out", str(out_dir))
    assert out.returncode == 2
    err = out.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    if before is None:
        assert not (out_dir / "model.json").exists()
    else:
        assert "already holds a training run" in err
        assert (out_dir / "model.json").read_bytes() == before


def test_an_ensemble_can_be_rebuilt_in_place(members, tmp_path, cli):
    out_dir = str(tmp_path / "e")
    assert cli("ensemble", str(members[0]), "--out", out_dir).returncode == 0
    assert cli("ensemble", str(members[0]), str(members[1]), "--out", out_dir).returncode == 0
    meta = json.loads((tmp_path / "e" / "model.json").read_text())
    assert len(meta["model_kwargs"]["members"]) == 2


def test_broken_model_files_are_refused_in_one_line(members, tmp_path, cli, mnist):
    """A diverged run (NaN weights) or a hand-edited normalisation would make every answer
    NaN, which is not even valid JSON: predict refuses the model instead."""
    from PIL import Image
    from safetensors.torch import load_file, save_file

    digit = tmp_path / "d.png"
    Image.fromarray(mnist["test"].images[0]).save(digit)
    nan_run = tmp_path / "nan"
    shutil.copytree(members[0], nan_run)
    state = load_file(str(nan_run / "model.safetensors"))
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, str(nan_run / "model.safetensors"))
    meta = json.loads((nan_run / "model.json").read_text())  # as a diverged run saves it
    weights = (nan_run / "model.safetensors").read_bytes()
    meta["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    (nan_run / "model.json").write_text(json.dumps(meta))
    cases = {nan_run: f"{first} holds NaN or infinite values"}
    for bad in ("abc", [0, 0], [0], [0, True]):
        folder = tmp_path / f"norm-{len(cases)}"
        shutil.copytree(members[0], folder)
        meta = json.loads((folder / "model.json").read_text())
        meta["normalization"] = bad
        (folder / "model.json").write_text(json.dumps(meta))
        cases[folder] = "model.json: normalization"
    edits = {
        "format_version": (99, "format_version 99 is newer than this digitlab reads (1)"),
        "classes": ([], "classes must be the digits 0-9"),
        "architecture": (["mnist-vgg"], "architecture: Input should be a valid string"),
        "model_kwargs": (None, "model_kwargs: Input should be an object"),
        "rejection": ({"temperature": 0}, "rejection.temperature: Input should be greater than 0"),
    }
    for key, (value, message) in edits.items():
        folder = tmp_path / key
        shutil.copytree(members[0], folder)
        meta = json.loads((folder / "model.json").read_text())
        meta[key] = value
        (folder / "model.json").write_text(json.dumps(meta))
        cases[folder] = message
    for folder, message in cases.items():
        for args in (("predict", "--model", str(folder), str(digit)), ("evaluate", str(folder))):
            out = cli(*args)
            err = out.stderr.decode().strip()
            assert out.returncode == 2 and message in err, (folder, err)
            assert len(err.splitlines()) == 1


def test_an_ensemble_of_held_out_members_can_be_calibrated(members, tmp_path, cli):
    from digitlab.calibrate import calibrate_artifact

    ens = tmp_path / "ens"
    assert cli("ensemble", *map(str, members), "--out", str(ens)).returncode == 0
    block = calibrate_artifact(str(ens), uploads=200)
    meta = json.loads((ens / "model.json").read_text())
    assert meta["rejection"] == block and block["method"] == "max-probability"
    assert 0 < block["threshold"] < 1 and block["temperature"] > 0
    # the 0.5% operating point holds on the 10,000 val digits and on the uploads, each
    assert block["val_digits_rejected"] <= 0.005 and block["val_uploads_rejected"] <= 0.005
    # a member that trained on all of train leaves nothing to calibrate on: one line, exit 2
    meta["model_kwargs"]["members"][1]["data"]["train_split"] = "train"
    (ens / "model.json").write_text(json.dumps(meta))
    r = cli("calibrate", str(ens))
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1
    assert "trained on 'train'" in r.stderr.decode()
