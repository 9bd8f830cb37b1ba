"""The training loop on real MNIST: it learns, resumes exactly after SIGKILL, and saves a
model that loads without pickle and evaluates like predict predicts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from digitlab.recipes import load_recipe
from digitlab.train.loop import train
from digitlab.train.runlog import read_metrics
from testkit import write_recipe as small_recipe

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


def write_recipe(tmp_path: Path, model: str = "softmax", iters: int = 150, rotation=0.0) -> Path:
    path = tmp_path / f"{model}.toml"
    small_recipe(
        path,
        seed=3,
        model={"name": model},
        schedule={"policy": "inv", "gamma": 1e-4, "power": 0.75},
        train={"iters": iters, "val_interval": 30, "checkpoint_interval": 30},
        augment={"rotation": float(rotation)},
    )
    return path


def test_short_run_learns_and_writes_a_complete_run_folder(tmp_path):
    recipe = load_recipe(str(write_recipe(tmp_path, "softmax", iters=300)))
    result = train(recipe, tmp_path / "run", progress=False)
    events = read_metrics(tmp_path / "run")
    train_losses = [e["loss"] for e in events if e["phase"] == "train"]
    assert train_losses[-1] < 0.6 * train_losses[0]
    assert result.metrics["test_accuracy"] > 0.85  # chance is 0.10
    for name in ("recipe.toml", "metrics.jsonl", "train.log", "model.safetensors", "model.json"):
        assert (tmp_path / "run" / name).is_file(), name
    val = [e for e in events if e["phase"] == "val"]
    assert [e["iter"] for e in val] == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300]
    assert {"phase", "iter", "epoch", "loss", "accuracy", "lr", "elapsed", "samples_per_s"} <= set(
        next(e for e in events if e["phase"] == "train")
    )


def _weights(run: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(run / "model.safetensors"))


def _comparable(events: list[dict]) -> list[tuple]:
    return [(e["phase"], e["iter"], round(e["loss"], 6), round(e["accuracy"], 6)) for e in events]


def test_sigkill_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
    # fc-keras has dropout, so the torch RNG state must survive the restart too;
    # rotation exercises the per-iteration augmentation generator.
    recipe_path = write_recipe(tmp_path, "fc-keras", iters=180, rotation=10)
    reference = tmp_path / "reference"
    train(load_recipe(str(recipe_path)), reference, progress=False)

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "digitlab", "train", str(recipe_path), "--out", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts = killed / "checkpoints"
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.glob("iter_*"))):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.json").exists(), "the run finished before it could be killed"

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert _comparable(read_metrics(killed)) == _comparable(read_metrics(reference))
    a, b = _weights(killed), _weights(reference)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_extends_a_finished_run(tmp_path):
    recipe_path = write_recipe(tmp_path, "softmax", iters=60)
    run = tmp_path / "run"
    train(load_recipe(str(recipe_path)), run, progress=False)
    longer = load_recipe(str(run / "recipe.toml"), ["train.iters=120"])
    result = train(longer, run, resume=True, progress=False)
    assert result.iterations == 120
    val_iters = [e["iter"] for e in read_metrics(run) if e["phase"] == "val"]
    assert val_iters == [30, 60, 90, 120]
    # the test event of the 60-iteration model went with it: one test event, the last model's
    assert [e["iter"] for e in read_metrics(run) if e["phase"] == "test"] == [120]


def test_training_into_an_existing_run_without_resume_is_refused(tmp_path, cli):
    recipe_path = write_recipe(tmp_path, "softmax", iters=30)
    run = tmp_path / "run"
    ok = cli("train", str(recipe_path), "--out", str(run), "--no-progress")
    assert ok.returncode == 0, ok.stderr.decode()
    again = cli("train", str(recipe_path), "--out", str(run))
    assert again.returncode == 2
    err = again.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0]


def test_resuming_with_another_model_is_refused_and_keeps_the_run(tmp_path, cli):
    run = tmp_path / "run"
    ok = cli("train", str(write_recipe(tmp_path, "softmax", iters=30)), "--out", str(run))
    assert ok.returncode == 0, ok.stderr.decode()
    saved = (run / "recipe.toml").read_bytes()
    other = write_recipe(tmp_path, "mlp-mxnet", iters=60)
    again = cli("train", str(other), "--resume", "--out", str(run), "--no-progress")
    assert again.returncode == 2
    err = again.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "checkpoints are of model softmax, not mlp-mxnet" in err[0], err
    assert (run / "recipe.toml").read_bytes() == saved  # the run's record is untouched


def test_artifact_round_trip_and_evaluate_agrees_with_predict(tmp_path, cli, mnist):
    from PIL import Image

    recipe_path = write_recipe(tmp_path, "softmax", iters=90)
    run = tmp_path / "run"
    train(load_recipe(str(recipe_path)), run, progress=False)
    meta = json.loads((run / "model.json").read_text())
    from digitlab.models import get_entry

    norm = get_entry("softmax").normalization
    assert meta["architecture"] == "softmax"
    assert meta["normalization"] == [norm.shift, norm.scale]
    assert set(meta["data_digests"]) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    }  # fmt: skip

    ev = cli("evaluate", str(run), "--json")
    assert ev.returncode == 0, ev.stderr.decode()
    report = json.loads(ev.stdout)
    assert report["n"] == 10000 and 0.8 < report["accuracy"] <= 1
    assert {"loss", "per_class", "confusion_matrix"} <= set(report)
    assert np.array(report["confusion_matrix"]).sum() == 10000

    # predict on the first 200 test digits written as PNG files must agree with evaluate
    folder = tmp_path / "png"
    folder.mkdir()
    images, labels = mnist["test"].images[:200], mnist["test"].labels[:200]
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}_{labels[i]}.png")
    pr = cli("predict", str(run), str(folder), "--json", "--no-preprocess")
    assert pr.returncode == 0, pr.stderr.decode()
    preds = [json.loads(line) for line in pr.stdout.decode().splitlines()]
    assert [Path(p["path"]).name for p in preds] == [f"{i:06d}_{labels[i]}.png" for i in range(200)]
    from digitlab.predict import Predictor

    direct = Predictor(run).probabilities(images).argmax(1)
    assert [int(np.argmax(p["probabilities"])) for p in preds] == direct.tolist()


@pytest.mark.parametrize("field", ["solver.lr=-1", "solver.bogus=1", "model.name=nonexistent"])
def test_bad_recipe_overrides_fail_with_one_line(tmp_path, cli, field):
    recipe_path = write_recipe(tmp_path, "softmax", iters=10)
    r = cli("train", str(recipe_path), "--set", field, "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr.decode()
    assert field.split("=")[0].split(".")[-1] in lines[0] or "nonexistent" in lines[0]
