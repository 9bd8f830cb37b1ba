"""split_stratified: the same share of every class held out, fixed by the seed."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.data.splits import split_stratified
from digitlab.errors import DigitlabError


def test_every_class_gives_its_share_and_the_parts_partition_the_set(mnist):
    ds = mnist["test"].subset(slice(0, 2000), "mine")
    rest, val = split_stratified(ds, 0.2, seed=1)
    assert len(rest) + len(val) == 2000
    counts, held = np.bincount(ds.labels, minlength=10), np.bincount(val.labels, minlength=10)
    assert np.array_equal(held, np.round(0.2 * counts).astype(int))
    both = np.concatenate([rest.images, val.images]).reshape(2000, -1)
    assert len(np.unique(both, axis=0)) == len(np.unique(ds.images.reshape(2000, -1), axis=0))
    assert (rest.name, val.name) == ("mine[train]", "mine[val]")


def test_the_seed_fixes_the_split(mnist):
    ds = mnist["test"].subset(slice(0, 500))
    a, b, c = (split_stratified(ds, 0.1, seed=s)[1] for s in (7, 7, 8))
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_small_classes_still_reach_both_sides_and_tiny_sets_are_refused(mnist):
    ds = mnist["test"].subset(np.flatnonzero(mnist["test"].labels < 2)[:4])  # two or so per class
    rest, val = split_stratified(ds, 0.1, seed=0)
    assert set(val.labels.tolist()) == set(rest.labels.tolist()) == set(ds.labels.tolist())
    with pytest.raises(DigitlabError, match="1 image cannot be split"):
        split_stratified(mnist["test"].subset(slice(0, 1)), 0.2)
    with pytest.raises(DigitlabError, match="fraction must lie between 0 and 1, got 1.5"):
        split_stratified(ds, 1.5)
