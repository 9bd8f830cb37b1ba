"""The real MNIST as the fixtures fetch it: counts, first labels, digests, tutorial splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_data_info_reports_what_the_data_holds(cli, mnist, digitlab_home):
    done = cli("data", "info", "--json")
    assert done.returncode == 0, done.stderr.decode()
    info = json.loads(done.stdout)
    train, test = mnist["train"], mnist["test"]
    for name, ds in (("train", train), ("test", test)):
        s = info["splits"][name]
        assert s["count"] == len(ds)
        assert s["class_counts"] == np.bincount(ds.labels, minlength=10).tolist()
        assert s["pixel_mean"] == pytest.approx(ds.images.mean(), abs=1e-3)
    assert info["splits"]["train50k"]["count"] + info["splits"]["val"]["count"] == 60000
    assert {n: f["sha256"] for n, f in info["files"].items()} == {
        spec.name: spec.raw_sha256
        for spec in MNIST_FILES  # of the decompressed content
    }
    assert str(digitlab_home) in info["cache_dir"]
    table = cli("data", "info").stdout.decode()
    assert "60,000" in table and "5,923" in table and "cache:" in table


def test_data_info_with_an_unusable_cache_dir_is_one_line_exit_2(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = cli("data", "info", "--cache-dir", str(blocker / "cache"))
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and "cache" in err, err
