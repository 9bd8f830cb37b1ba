"""Training, evaluating and fine-tuning on a user's own data, through the real CLI and API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.recipes import load_recipe

pytestmark = pytest.mark.slow  # exports, trains and fine-tunes


def test_the_caffe_pipeline_export_list_augment_train_evaluate(tmp_path, cli):
    """The Caffe book's way: images and list files, an augmented set made from them, a
    LeNet trained from the list, scored on the test list."""
    d, aug, run = tmp_path / "mnist-png", tmp_path / "augmented", tmp_path / "run"
    for split in ("val", "test"):
        r = cli("data", "export", "--split", split, "--out", str(d))
        assert r.returncode == 0, r.stderr.decode()
    r = cli("data", "augment", "caffe-lenet", "--data", str(d / "val.txt"), "--no-preprocess",
            "--copies", "2", "--out", str(aug))  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    lists = sorted(p.name for p in aug.glob("*.txt"))
    assert lists, list(aug.iterdir())
    r = cli(
        "train", "caffe-lenet", "--data", str(aug / lists[0]), "--test", str(d / "test.txt"),
        "--set", "data.preprocess=false", "--set", "data.val_split=none", "--iters", "150",
        "--out", str(run), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    meta = json.loads((run / "model.json").read_text())
    assert meta["trained_on"].endswith(lists[0]) or lists[0] in meta["trained_on"]
    assert any(k.startswith("source:") for k in meta["data_digests"])
    r = cli("evaluate", str(run), "--data", str(d / "test.txt"), "--no-preprocess", "--json")
    assert r.returncode == 0, r.stderr.decode()
    scores = json.loads(r.stdout)
    assert scores["n"] == 10_000 and scores["accuracy"] > 0.85
    # the list holds MNIST test exactly, so the run's own test score is the same number
    assert scores["accuracy"] == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-6)


def _writer_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Digits as a user's class folders: dark ink on light paper, larger than 28x28."""
    for i, (digit, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - digit).resize((84, 84)).save(folder / f"{i:04d}.png")
    return root


def test_finetuning_the_bundled_model_trains_only_its_classifier_and_recalibrates(
    mnist, tmp_path, cli
):
    from safetensors.torch import load_file

    from digitlab import api
    from digitlab.artifact import BUNDLED_MODEL, read_meta

    test = mnist["test"]
    picks = np.concatenate([np.flatnonzero(test.labels == d)[:6] for d in range(10)])
    mine = _writer_folder(tmp_path / "mine", test.images[picks], test.labels[picks])
    run = api.train(
        "finetune", tmp_path / "run", calibrate=False,
        **{"data.train_split": str(mine), "train.iters": 6, "data.mnist_mix": 200,
           "data.negatives": 60, "model.freeze": "features"},
    )  # fmt: skip
    meta = read_meta(run.run_dir)
    assert meta.classes[-1] == "not-a-digit"  # the bundled model's eleventh class is kept
    before = load_file(str(BUNDLED_MODEL / "model.safetensors"))
    after = load_file(str(Path(run.run_dir) / "model.safetensors"))
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed, "fine-tuning changed nothing"
    # only the classifier (the last linear layer) learned; batch-norm statistics were kept
    assert {k.rsplit(".", 1)[0] for k in changed} == {changed[0].rsplit(".", 1)[0]}
    assert meta.rejection is None
    block = api.recalibrate(run.run_dir, uploads=100)
    assert block is not None and 0 < block["threshold"] < 1
    # the user's own held-out fifth (one of the six of each digit) is a population of its
    # own: none rejected
    assert block["held_out_digits"] == 10 and block["held_out_rejected"] == 0
    assert read_meta(run.run_dir).rejection.threshold == block["threshold"]
    assert api.read(Image.fromarray(255 - test.images[picks[-1]]), model=run.run_dir).digit == 9
    # the CLI: your own held-out digits as a population of their own
    mine_held = _writer_folder(tmp_path / "held", test.images[picks[:20]], test.labels[picks[:20]])
    r = cli("calibrate", str(run.run_dir), "--data", str(mine_held), "--uploads", "100")
    assert r.returncode == 0, r.stderr.decode()
    assert "of your 20 digits" in r.stdout.decode()
    assert read_meta(run.run_dir).rejection.model_extra["held_out_digits"] == 20


def test_a_user_source_that_is_also_the_test_source_is_never_selected_on(tmp_path):
    mine = _writer_folder(
        tmp_path / "mine", np.zeros((2, 28, 28), np.uint8) + 255, np.array([1, 2])
    )
    with pytest.raises(DigitlabError, match="would select on test"):
        load_recipe("default", fields={"data.val_split": str(mine), "data.test_split": str(mine)})
