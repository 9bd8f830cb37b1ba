"""What a recipe trains and validates on, and in what order: the data side of training.

The splits come from the data layer; synthetic data (uploads, non-digits, number pieces) is
mixed in here, by digitlab.synth, so the data layer knows nothing of it. Every order is a
pure function of (seed, epoch), so a resumed run needs no data state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from digitlab.data.dataset import Dataset
    from digitlab.recipes import Recipe


def training_splits(recipe: Recipe) -> tuple[Dataset, Dataset | None, dict[str, str]]:
    """The recipe's training set and validation set (a named split or the Keras-style tail)."""
    from digitlab.data.dataset import load_mnist, split_of
    from digitlab.synth.mixing import with_negatives, with_uploads

    mnist = load_mnist()
    digests = {**mnist["train"].digests, **mnist["test"].digests}
    train = split_of(mnist, recipe.data.train_split)
    val = None
    if recipe.data.val_fraction:
        n_val = int(round(len(train) * recipe.data.val_fraction))
        val = train.subset(slice(len(train) - n_val, None), f"last {n_val} of {train.name}")
        train = train.subset(slice(0, len(train) - n_val), train.name)
    elif recipe.data.val_split:
        val = split_of(mnist, recipe.data.val_split)
    if recipe.data.uploads:
        train = with_uploads(train, recipe.data.uploads, 2 * recipe.seed + 1)
        if val is not None:
            val = with_uploads(val, max(1, recipe.data.uploads // 5), 2 * recipe.seed + 2)
    if recipe.data.negatives:
        pieces = recipe.data.number_pieces
        train = with_negatives(train, recipe.data.negatives, 2 * recipe.seed + 1, pieces)
        if val is not None:
            val = with_negatives(
                val, max(1, recipe.data.negatives // 5), 2 * recipe.seed + 2, pieces // 5
            )
    return train, val, digests


def training_size(recipe: Recipe) -> int:
    """The number of images :func:`training_splits` trains on, without building them."""
    from digitlab.data.dataset import load_mnist, split_of

    n = len(split_of(load_mnist(), recipe.data.train_split))
    if recipe.data.val_fraction:
        n -= int(round(n * recipe.data.val_fraction))
    return n + recipe.data.uploads + recipe.data.negatives + recipe.data.number_pieces


def total_iterations(recipe: Recipe, iters_per_epoch: int) -> int:
    if recipe.train.iters is not None:
        return int(recipe.train.iters)
    return int(math.ceil(float(recipe.train.epochs) * iters_per_epoch))


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a pure function of (seed, epoch), so resume needs no state."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)
