"""Splits of a user's own data, and a check for the same image in two sets.

MNIST's own splits are fixed (:data:`digitlab.data.dataset.SPLITS`); a user's folder of
digits has none, so :func:`split_stratified` holds out the same share of every class with a
fixed seed. :func:`duplicates_between` finds images of one set that also lie, pixel for
pixel, in another: a test set that shares images with the training set measures memory.
"""

from __future__ import annotations

import hashlib

import numpy as np

from digitlab.data.dataset import Dataset
from digitlab.errors import DigitlabError


def split_stratified(ds: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(rest, held out): ``fraction`` of every class held out, drawn with ``seed``.

    Each class gives ``round(fraction * count)`` images, at least one when it has two or
    more, so every class with two images is seen on both sides. Both parts keep the
    source's order.
    """
    if not 0 < fraction < 1:
        raise DigitlabError(f"the validation fraction must lie between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(ds), bool)
    for label in np.unique(ds.labels):
        members = np.flatnonzero(ds.labels == label)
        take = round(fraction * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        held[rng.choice(members, take, replace=False)] = True
    if not held.any() or held.all():
        images = f"{len(ds)} image{'' if len(ds) == 1 else 's'}"
        raise DigitlabError(
            f"{ds.name}: {images} cannot be split {1 - fraction:.0%}/{fraction:.0%};"
            " each part needs at least one image"
        )
    rest = ds.subset(np.flatnonzero(~held), f"{ds.name}[train]")
    val = ds.subset(np.flatnonzero(held), f"{ds.name}[val]")
    return rest, val


def row_digests(images: np.ndarray) -> list[bytes]:
    """A 128-bit BLAKE2b digest of each image's pixels."""
    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def duplicates_between(a: Dataset, b: Dataset) -> np.ndarray:
    """A mask over ``b``: which of its images appear, pixel for pixel, in ``a``."""
    seen = set(row_digests(a.images))
    return np.array([d in seen for d in row_digests(b.images)], bool)


def count_duplicates(a: Dataset, b: Dataset) -> int:
    """How many images of ``b`` also lie in ``a`` (exact pixel copies), for a warning."""
    return int(duplicates_between(a, b).sum())
