"""Synthetic non-digits (shapes, letters) and labelled pieces of numbers written with real
training digits."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.synth.mixing import with_negatives
from digitlab.synth.negatives import negative_images
from digitlab.synth.pieces import NOT_A_DIGIT, _label, number_pieces

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


@pytest.fixture(scope="module")
def train_digits(mnist) -> np.ndarray:
    return mnist["train"].images[:2000]


def _width_over_height(images: np.ndarray) -> np.ndarray:
    out = []
    for a in images > 64:
        rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
        out.append((cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1))
    return np.array(out)


def test_shapes_are_deterministic_mnist_form_and_never_blank():
    a = negative_images(48, seed=3)
    assert a.shape == (48, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, negative_images(48, seed=3))
    assert not np.array_equal(a, negative_images(48, seed=4))
    assert (a.reshape(48, -1).max(axis=1) > 128).all()


def test_a_piece_is_labelled_by_the_ink_it_holds():
    # two written digits side by side: ids 1 (columns 0-9) and 2 (columns 10-19); slices of
    # 5 columns each, so slices 0-1 hold digit 0, slices 2-3 digit 1
    ids = np.zeros((10, 20), np.int64)
    ids[:, :10], ids[:, 10:] = 1, 2
    owner = np.repeat(np.arange(4), 5)[None, :].repeat(10, axis=0)
    assert _label(owner, ids, 0, 1, 2) == 0
    assert _label(owner, ids, 2, 3, 2) == 1
    assert _label(owner, ids, 0, 3, 2) == NOT_A_DIGIT  # both digits in one piece
    assert _label(owner, ids, 1, 2, 2) == NOT_A_DIGIT  # half of each
    assert _label(owner, ids, 0, 0, 2) == NOT_A_DIGIT  # half a digit
    owner[:5, 9] = 2  # half a column of digit 0 went to its neighbour's slice
    assert _label(owner, ids, 2, 3, 2) == 1  # 5 of 105 pixels are another digit's: clean
    assert _label(owner, ids, 0, 1, 2) == 0  # 95% of digit 0: whole
    owner[:, 8:10] = 2  # two columns: neither whole nor clean, nor clearly a fragment
    assert _label(owner, ids, 2, 3, 2) is None


def test_number_pieces_are_deterministic_labelled_and_include_not_a_digit(train_digits, mnist):
    labels = mnist["train"].labels[:2000]
    x, y = number_pieces(train_digits, labels, 600, seed=1)
    assert x.shape == (600, 28, 28) and x.dtype == np.uint8
    x2, y2 = number_pieces(train_digits, labels, 600, seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    counts = np.bincount(y, minlength=11)
    assert len(counts) == 11 and (counts > 0).all()  # every digit, and not-a-digit
    assert 0.2 < counts[NOT_A_DIGIT] / 600 < 0.6
    # pieces of one digit are placed like MNIST: 20 px on the long side, centred by mass
    whole = x[y < 10]
    assert (np.ptp(np.argwhere(whole[0] > 64), axis=0) <= 20).all()
    wide = _width_over_height(x[y == NOT_A_DIGIT])
    assert (wide > 1.2).mean() > 0.03  # some hold two digits side by side


def test_a_dataset_with_negatives_labels_them_all_not_a_digit(mnist):
    small = mnist["train"].subset(slice(0, 500))
    both = with_negatives(small, 60, seed=2, pieces=40)
    assert len(both) == 600 and both.num_classes == 11
    assert (both.labels[500:560] == 10).all() and (both.labels[:500] < 10).all()
    assert (both.labels[560:] == 10).any() and (both.labels[560:] < 10).any()
    assert "60 non-digits and 40 number pieces" in both.name


def test_a_recipe_with_uploads_trains_and_validates_on_them_too():
    """data.uploads: realistic uploads of the split's own digits, read back as predict reads
    files, join the training set; val gets a fifth as many; non-digits still come after."""
    from digitlab.recipes import load_recipe
    from digitlab.train.data import training_size, training_splits

    extras = ["data.uploads=25", "data.negatives=10", "data.number_pieces=0",
              "data.font_digits=0", "data.font_non_digits=0"]  # fmt: skip
    recipe = load_recipe("bundled", extras)
    train, val, _ = training_splits(recipe)
    assert len(train) == 50000 + 25 + 10 == training_size(recipe)
    assert len(val) == 10000 + 5 + 2
    added = train.labels[50000:50025]
    assert (added < 10).all() and (train.labels[50025:] == 10).all()
    assert (train.images[50000:50025].reshape(25, -1).max(1) == 255).all()
    assert "25 uploads" in train.name and "5 uploads" in val.name
