"""The cache of decoded sources: a hit decodes nothing, a changed source is never served stale."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import digitlab.data.source as source_module
from digitlab.data import cache
from digitlab.data.dataset import Dataset
from digitlab.data.export import encode_png
from digitlab.data.source import load_source


def class_folders(root: Path, ds: Dataset) -> Path:
    for i, (image, label) in enumerate(zip(ds.images, ds.labels.tolist(), strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{i}.png").write_bytes(encode_png(image))
    return root


@pytest.fixture
def no_decoding(monkeypatch):
    """Loads after this fixture fail if they decode any image."""

    def fail(*args, **kwargs):
        raise AssertionError("decoded although the source was cached")

    def arm() -> None:
        monkeypatch.setattr(source_module, "decode_all", fail)

    return arm


def test_second_load_comes_from_the_cache_without_decoding(
    tmp_path, digits, source_cache, no_decoding
):
    root = class_folders(tmp_path / "mine", digits)
    first = load_source(root)
    assert len(list(source_cache.glob("*.npz"))) == 1
    no_decoding()
    second = load_source(root)
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    assert second.digests == first.digests and second.name == "mine"


def test_a_changed_file_is_read_again(tmp_path, digits, source_cache):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 20)))
    first = load_source(root, preprocess=False)
    victim = root / str(digits.labels[0]) / "0.png"
    before = victim.stat()
    victim.write_bytes(encode_png(digits.images[100]))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # same time: content counts
    second = load_source(root, preprocess=False)
    row = int(np.flatnonzero([np.array_equal(im, digits.images[0]) for im in first.images])[0])
    assert np.array_equal(second.images[row], digits.images[100])
    assert second.digests != first.digests


def test_a_same_size_same_time_edit_of_an_idx_file_is_seen(tmp_path, digits, source_cache):
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(struct.pack(">IIII", 0x803, 20, 28, 28) + digits.images[:20].tobytes())
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">II", 0x801, 20) + digits.labels[:20].astype(np.uint8).tobytes())
    )
    assert load_source(images).images[0, 14, 14] == digits.images[0, 14, 14]
    data, st = bytearray(images.read_bytes()), images.stat()
    data[16 + 14 * 28 + 14] ^= 0xFF
    images.write_bytes(bytes(data))
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_source(images).images[0, 14, 14] == digits.images[0, 14, 14] ^ 0xFF


def test_a_file_moved_to_another_class_changes_its_label(tmp_path, digits, source_cache):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 20)))
    sevens = int((digits.labels[:20] == 7).sum())
    assert np.bincount(load_source(root, preprocess=False).labels)[7] == sevens
    src = next((root / "7").iterdir())
    src.rename(root / "1" / src.name)
    assert np.bincount(load_source(root, preprocess=False).labels)[7] == sevens - 1


def test_preprocessing_switch_and_split_are_separate_entries(tmp_path, digits, source_cache):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 20)))
    raw, prepared = load_source(root, preprocess=False), load_source(root)
    assert not np.array_equal(raw.images, prepared.images)
    assert len(list(source_cache.glob("*.npz"))) == 2


def test_a_damaged_entry_is_a_miss(tmp_path, digits, source_cache):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 20)))
    first = load_source(root)
    (entry,) = source_cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    assert np.array_equal(load_source(root).images, first.images)
    assert entry.stat().st_size > 100  # written again


def test_a_source_changing_while_it_is_read_is_not_cached(
    tmp_path, digits, source_cache, monkeypatch
):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 20)))
    real = source_module.decode_all

    def decode_then_edit(*args, **kwargs):
        out = real(*args, **kwargs)
        (root / str(digits.labels[0]) / "0.png").write_bytes(encode_png(digits.images[50]))
        return out

    monkeypatch.setattr(source_module, "decode_all", decode_then_edit)
    load_source(root)
    assert list(source_cache.glob("*.npz")) == []


def test_cache_off_writes_nothing(tmp_path, digits, source_cache):
    load_source(class_folders(tmp_path / "mine", digits.subset(slice(0, 5))), cache=False)
    assert not source_cache.exists() or list(source_cache.glob("*.npz")) == []


def test_pruning_keeps_the_most_recently_used(source_cache):
    images, labels = np.zeros((100, 28, 28), np.uint8), np.zeros(100, np.int64)
    for i, key in enumerate(("old", "mid", "new")):
        cache.store_entry(key, images, labels, {"skipped": []})
        os.utime(source_cache / f"{key}.npz", (1000 + i, 1000 + i))
    assert cache.load_entry("old") is not None  # a hit makes it the most recent
    size = (source_cache / "new.npz").stat().st_size
    cache.prune(2 * size)
    assert sorted(p.stem for p in source_cache.glob("*.npz")) == ["new", "old"]
