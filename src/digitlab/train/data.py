"""What a recipe trains and validates on, and in what order: the data side of training.

The splits come from the data layer; synthetic data (uploads, non-digits, number pieces) is
mixed in here, by digitlab.synth, so the data layer knows nothing of it. Every order is a
pure function of (seed, epoch), so a resumed run needs no data state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from digitlab.data.dataset import Dataset
    from digitlab.recipes import Recipe


def training_splits(
    recipe: Recipe, note: Callable[[str], None] | None = None
) -> tuple[Dataset, Dataset | None, dict[str, str]]:
    """The recipe's training and validation sets, with synthetic data mixed in, and the
    digests of what they were made from. ``note`` hears what a user should know (images
    skipped as unreadable, test images that are also training images)."""
    train, val, digests = _sources(recipe)
    if recipe.data.mnist_mix:
        train = _with_mnist(train, recipe.data.mnist_mix, recipe.seed)
    if note is not None:
        _notes(recipe, train, note)
    train = _mixed(recipe, train, validation=False, note=note)
    return train, None if val is None else _mixed(recipe, val, validation=True), digests


def validation_set(recipe: Recipe) -> Dataset | None:
    """The validation set :func:`training_splits` gives, without making the training set's
    synthetic data (minutes when the recipe renders font digits), and without reading the
    training source when validation has one of its own."""
    data = recipe.data
    if data.val_fraction:
        val = _hold_out(recipe, source_set(recipe, data.train_split)[0])[1]
    elif data.val_split:
        val = source_set(recipe, data.val_split)[0]
    else:
        return None
    return _mixed(recipe, val, validation=True)


def _sources(recipe: Recipe) -> tuple[Dataset, Dataset | None, dict[str, str]]:
    data = recipe.data
    train, digests = source_set(recipe, data.train_split)
    val = None
    if data.val_fraction:
        train, val = _hold_out(recipe, train)
    elif data.val_split:
        val, more = source_set(recipe, data.val_split)
        digests.update(more)
    return train, val, digests


def _mixed(
    recipe: Recipe, ds: Dataset, validation: bool, note: Callable[[str], None] | None = None
) -> Dataset:
    """``ds`` with the recipe's synthetic data: a fifth as much, with seeds of its own, for
    validation."""
    from digitlab.synth.fonts import training_fonts
    from digitlab.synth.mixing import (
        with_font_digits,
        with_font_non_digits,
        with_negatives,
        with_uploads,
    )

    data = recipe.data
    seed = 2 * recipe.seed + (2 if validation else 1)

    def size(n: int) -> int:
        return max(1, n // 5) if validation else n

    if data.uploads:
        ds = with_uploads(ds, size(data.uploads), seed)
    families = training_fonts(data.font_digits + data.font_non_digits, None if validation else note)
    for n, mix, other in (
        (data.font_digits, with_font_digits, 0),
        (data.font_non_digits, with_font_non_digits, 1000),  # not the digits' random draws
    ):
        if families and n:
            ds = mix(ds, size(n), seed + other, families)
    if data.negatives:
        pieces = data.number_pieces // 5 if validation else data.number_pieces
        ds = with_negatives(ds, size(data.negatives), seed, pieces)
    return ds


def source_set(recipe: Recipe, spec: str) -> tuple[Dataset, dict[str, str]]:
    """One source of the recipe as a Dataset, and the digests that identify it."""
    from digitlab.data.dataset import SPLITS, load_mnist, split_of
    from digitlab.data.source import load_source

    if spec in SPLITS:  # MNIST: its four files' digests, as every run has recorded them
        mnist = load_mnist()
        return split_of(mnist, spec), {**mnist["train"].digests, **mnist["test"].digests}
    ds = load_source(spec, preprocess=recipe.data.preprocess)
    return ds, {f"source:{spec}": ds.digests.get("source", "")}


def test_set(recipe: Recipe) -> Dataset:
    """What the finished model is scored on, once (never selected on)."""
    return source_set(recipe, recipe.data.test_split)[0]


def held_out_set(recipe: Recipe) -> Dataset | None:
    """The validation share of a user's source (what a fine-tuned model never trained on),
    or None when the recipe validates on MNIST or not at all."""
    from digitlab.data.dataset import SPLITS

    data = recipe.data
    if data.val_fraction and data.train_split not in SPLITS:
        return _hold_out(recipe, source_set(recipe, data.train_split)[0])[1]
    if data.val_split and data.val_split not in SPLITS:
        return source_set(recipe, data.val_split)[0]
    return None


def _hold_out(recipe: Recipe, train: Dataset) -> tuple[Dataset, Dataset]:
    """MNIST's last images (as the Keras tutorials held them out), or a stratified, seeded
    share of every class of a user's source."""
    from digitlab.data.dataset import SPLITS
    from digitlab.data.splits import split_stratified

    fraction = float(recipe.data.val_fraction or 0)
    if recipe.data.train_split in SPLITS:
        n_val = int(round(len(train) * fraction))
        val = train.subset(slice(len(train) - n_val, None), f"last {n_val} of {train.name}")
        return train.subset(slice(0, len(train) - n_val), train.name), val
    return split_stratified(train, fraction, recipe.seed)


def _with_mnist(train: Dataset, n: int, seed: int) -> Dataset:
    """A user's set plus ``n`` MNIST train50k digits drawn with ``seed`` (val stays out)."""
    import numpy as np

    from digitlab.data.dataset import concat, load_split

    mnist = load_split("train50k")
    pick = np.random.default_rng(seed + 17).choice(len(mnist), size=n, replace=False)
    return concat(train, mnist.subset(pick), f"{train.name}+{n} MNIST train50k digits")


def _notes(recipe: Recipe, train: Dataset, note: Callable[[str], None]) -> None:
    from digitlab.data.dataset import SPLITS
    from digitlab.data.splits import count_duplicates

    if train.skipped:
        note(f"{len(train.skipped)} images of {train.name} skipped, e.g. {train.skipped[0]}")
    if recipe.data.train_split not in SPLITS or recipe.data.test_split not in SPLITS:
        same = count_duplicates(train, test_set(recipe))
        if same:
            note(f"warning: {same} test images are also in the training data; the test "
                 "score will read high")  # fmt: skip


def training_size(recipe: Recipe) -> int:
    """The number of images :func:`training_splits` trains on (a user's source is read,
    or found in the cache, to count it)."""
    from digitlab.data.dataset import SPLITS, load_mnist, split_of
    from digitlab.synth.fonts import training_fonts

    spec = recipe.data.train_split
    mnist = spec in SPLITS
    n = len(split_of(load_mnist(), spec) if mnist else source_set(recipe, spec)[0])
    if recipe.data.val_fraction:
        n -= int(round(n * recipe.data.val_fraction))
    extra = recipe.data.uploads + recipe.data.negatives + recipe.data.number_pieces
    if training_fonts(recipe.data.font_digits + recipe.data.font_non_digits, None):
        extra += recipe.data.font_digits + recipe.data.font_non_digits
    return n + extra + recipe.data.mnist_mix


def total_iterations(recipe: Recipe, iters_per_epoch: int) -> int:
    if recipe.train.iters is not None:
        return int(recipe.train.iters)
    return int(math.ceil(float(recipe.train.epochs) * iters_per_epoch))


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a pure function of (seed, epoch), so resume needs no state."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)
