"""The real MNIST as the fixtures fetch it: counts, first labels, digests, tutorial splits."""

from __future__ import annotations

import numpy as np

from digitlab.data.dataset import split_of
from digitlab.data.formats import read_dataset
from digitlab.data.sources import MNIST_FILES, fetch_mnist


def test_real_counts_and_first_labels(mnist):
    assert len(mnist["train"]) == 60000
    assert len(mnist["test"]) == 10000
    assert mnist["train"].labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist["test"].labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist["train"].images.dtype == np.uint8 and mnist["train"].labels.dtype == np.int64


def test_fetch_report_carries_the_published_digests(mnist):
    report = fetch_mnist()
    assert report.digests == {spec.name: spec.raw_sha256 for spec in MNIST_FILES}
    assert set(report.sources.values()) == {"cache"}
    assert mnist["test"].digests == {
        spec.name: spec.raw_sha256 for spec in MNIST_FILES if spec.name.startswith("t10k")
    }


def test_val_is_the_last_10k_of_train_and_train50k_the_first_50k(mnist):
    train50k, val = split_of(mnist, "train50k"), split_of(mnist, "val")
    assert (len(train50k), len(val)) == (50000, 10000)
    assert np.array_equal(val.images, mnist["train"].images[-10000:])
    assert np.array_equal(val.labels, mnist["train"].labels[-10000:])
    assert np.array_equal(train50k.images, mnist["train"].images[:50000])
    assert val.labels[:3].tolist() == [3, 8, 6]


def test_folder_of_idx_files_reads_every_split(mnist, mnist_mirror):
    for split in ("train", "test", "train50k", "val"):
        ds = read_dataset(mnist_mirror, split)
        expected = split_of(mnist, split)
        assert np.array_equal(ds.images, expected.images), split
        assert np.array_equal(ds.labels, expected.labels), split
