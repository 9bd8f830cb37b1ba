"""train.data: what a recipe trains and validates on, synthetic data mixed in."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.recipes import load_recipe
from digitlab.synth import fonts
from digitlab.train.data import training_size, training_splits, validation_set


def font_recipe(n: int):
    return load_recipe(
        "default",
        fields={"data.train_split": "train50k", "data.val_split": "val", "data.font_digits": n},
    )


@pytest.mark.slow  # 2-4 s: keeps `make test-fast` under 2 minutes
def test_font_digits_join_training_and_a_fifth_join_validation(mnist):
    recipe = font_recipe(40)
    notes: list[str] = []
    train, val, _ = training_splits(recipe, notes.append)
    assert notes == []
    n_train, n_val = len(train) - 50_000, len(val) - 10_000
    assert 38 <= n_train <= 40 and 7 <= n_val <= 8  # an upload with no ink found is left out
    assert f"{n_train} digits in {len(fonts.TRAIN_FAMILIES)} handwriting fonts" in train.name
    assert train.labels[-n_train:].max() <= 9 and len(set(train.labels[-n_train:])) >= 8
    # not MNIST's digits: none of them is a train50k image
    mnist_rows = {im.tobytes() for im in mnist["train"].images[:50_000]}
    assert not any(im.tobytes() in mnist_rows for im in train.images[-n_train:])
    assert training_size(recipe) == 50_040


@pytest.mark.slow  # 2-4 s: keeps `make test-fast` under 2 minutes
def test_font_non_digits_join_training_as_not_a_digit_and_a_fifth_join_validation(mnist):
    recipe = load_recipe(
        "default",
        fields={"data.train_split": "train50k", "data.val_split": "val", "data.negatives": 10,
                "data.font_non_digits": 30},
    )  # fmt: skip
    train, val, _ = training_splits(recipe)
    assert f"non-digits in {len(fonts.TRAIN_FAMILIES)} handwriting fonts" in train.name
    assert train.num_classes == 11
    assert (train.labels == 10).sum() >= 10 + 28 and (val.labels == 10).sum() >= 2 + 5
    assert (train.labels[:50_000] < 10).all()
    assert training_size(recipe) == 50_040


def test_without_the_fonts_a_run_trains_on_mnist_and_says_so(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITLAB_FONTS", str(tmp_path))
    recipe = font_recipe(40)
    notes: list[str] = []
    train, val, _ = training_splits(recipe, notes.append)
    assert (len(train), len(val)) == (50_000, 10_000)
    assert len(notes) == 1 and "make fonts" in notes[0] and "without the 40 samples" in notes[0]
    assert training_size(recipe) == 50_000


@pytest.mark.slow  # 2-4 s: keeps `make test-fast` under 2 minutes
def test_the_validation_set_alone_is_the_one_training_validates_on(mnist):
    """``evaluate --checkpoints`` builds it without the training set's synthetic data."""
    recipe = load_recipe(
        "default",
        fields={"data.train_split": "train50k", "data.val_split": "val", "data.uploads": 10,
                "data.font_digits": 20, "data.font_non_digits": 10, "data.negatives": 15,
                "data.number_pieces": 10},
    )  # fmt: skip
    _, val, _ = training_splits(recipe)
    alone = validation_set(recipe)
    assert len(alone) == len(val) > 10_000 and alone.name == val.name
    assert np.array_equal(alone.images, val.images) and np.array_equal(alone.labels, val.labels)
