"""Bad data: each case is one DigitlabError line (or a counted skip), and nothing is cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digitlab.data.dataset import Dataset
from digitlab.data.export import encode_png
from digitlab.data.source import load_source
from digitlab.data.splits import count_duplicates, duplicates_between
from digitlab.errors import DigitlabError


def class_folders(root: Path, ds: Dataset) -> Path:
    for i, (image, label) in enumerate(zip(ds.images, ds.labels.tolist(), strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{i}.png").write_bytes(encode_png(image))
    return root


def cached(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def refused(spec: object, match: str, **options: object) -> str:
    with pytest.raises(DigitlabError, match=match) as err:
        load_source(spec, **options)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_corrupt_image_is_skipped_and_counted_or_refused_when_strict(
    tmp_path, digits, source_cache
):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 30)))
    bad = root / str(digits.labels[4]) / "4.png"
    bad.write_bytes(encode_png(digits.images[4])[:60])  # cut short
    (root / "3" / "notes.png").write_bytes(b"not an image at all")
    refused(root, r"(4|notes).png: .* \(2 of 31 images unreadable; strict", strict=True)
    assert cached(source_cache) == []
    ds = load_source(root)
    assert len(ds) == 29 and len(ds.skipped) == 2
    assert any("4.png" in s for s in ds.skipped) and any("notes.png" in s for s in ds.skipped)
    assert len(cached(source_cache)) == 1  # a lenient load succeeded: it is cached, skips too
    assert load_source(root).skipped == ds.skipped
    refused(root, r"2 of 31 images unreadable; strict", strict=True)  # also from the cache


def test_a_blank_image_labelled_as_a_digit_is_skipped(tmp_path, digits, source_cache):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 10)))
    (root / "5" / "blank.png").write_bytes(encode_png(np.zeros((28, 28), np.uint8)))
    ds = load_source(root)
    assert len(ds) == 10 and ds.skipped == (
        f"{root / '5' / 'blank.png'}: no ink found (a blank image)",
    )


def test_unknown_and_empty_class_folders(tmp_path, digits, source_cache):
    root = class_folders(tmp_path / "mine", digits.subset(slice(0, 10)))
    (root / "cats").mkdir()
    refused(root, r"mine/cats: unknown class folder; expected 0-9, or none/")
    (root / "cats").rmdir()
    (root / "8").mkdir(exist_ok=True)
    for f in (root / "8").iterdir():
        f.unlink()
    refused(root, r"mine/8: the class folder holds no images")
    (root / "8" / "x.png").write_bytes(encode_png(digits.images[0]))
    (root / "loose.png").write_bytes(encode_png(digits.images[0]))
    refused(root, r"loose.png: image outside the class folders")
    assert cached(source_cache) == []


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda d: (d / "l.txt").write_text("a.png 12\n"), r"l.txt:1: label '12' is not a digit"),
        (lambda d: (d / "l.lst").write_text("0\t-1\ta.png\n"), r"l.lst:1: label '-1' is not"),
        (lambda d: (d / "l.csv").write_text("path,label\na.png,x\n"), r"l.csv:2: label 'x'"),
        (lambda d: (d / "011_13.png").write_bytes(b""), r"011_13.png: label 13 is outside"),
    ],
)
def test_labels_outside_0_9_are_refused_naming_where(tmp_path, source_cache, write, match):
    write(tmp_path)
    spec = tmp_path if match.startswith("011") else next(tmp_path.iterdir())
    refused(spec, match)
    assert cached(source_cache) == []


def test_kaggle_csv_rows_of_the_wrong_length_or_values_are_refused(tmp_path, source_cache):
    head = "label," + ",".join(f"pixel{i}" for i in range(784))
    good = "3," + ",".join(["0"] * 784)
    path = tmp_path / "train.csv"
    path.write_text("\n".join([head, good, good, "3," + ",".join(["0"] * 783), good]) + "\n")
    refused(path, r"train.csv:4: row has 784 values, expected 785")
    path.write_text("\n".join([head, good, "11," + ",".join(["0"] * 784)]) + "\n")
    refused(path, r"train.csv:3: label 11 is outside 0-9")
    path.write_text("\n".join([head, good, "1," + ",".join(["0"] * 783 + ["256"])]) + "\n")
    refused(path, r"train.csv:3: pixel783 = 256 is outside 0-255")
    path.write_text("a,b,c\n1,2,3\n")
    refused(path, r"train.csv: not a CSV of digits \(header 'a,b,c'\)")
    assert cached(source_cache) == []


def test_a_list_naming_a_missing_file(tmp_path, digits, source_cache):
    (tmp_path / "a.png").write_bytes(encode_png(digits.images[0]))
    (tmp_path / "l.txt").write_text("a.png 7\ngone.png 3\n")
    refused(tmp_path / "l.txt", r"l.txt:2: no such image .*gone.png")
    (tmp_path / "l.csv").write_text("path,label\na.png,7\n\ngone.png,3\n")
    refused(tmp_path / "l.csv", r"l.csv:4: no such image .*gone.png")
    assert cached(source_cache) == []


def test_parquet_without_a_label_column(tmp_path, digits, source_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.array([{"bytes": encode_png(digits.images[0]), "path": "0.png"}])
    pq.write_table(pa.table({"image": image, "digit": [7]}), tmp_path / "a.parquet")
    refused(tmp_path / "a.parquet", r"a.parquet: no 'label' column \(columns: image, digit\)")
    pq.write_table(pa.table({"image": image, "label": [10]}), tmp_path / "b.parquet")
    refused(tmp_path / "b.parquet", r"b.parquet: row 0 has label 10, outside 0-9")
    (tmp_path / "c.parquet").write_bytes(b"PAR1 broken")
    refused(tmp_path / "c.parquet", r"c.parquet: not a readable Parquet file")
    assert cached(source_cache) == []


def test_a_one_image_dataset_loads(tmp_path, digits, source_cache):
    """Refusing to train on it is the trainer's job; loading it is fine."""
    root = class_folders(tmp_path / "one", digits.subset(slice(0, 1)))
    ds = load_source(root, preprocess=False)
    assert len(ds) == 1 and ds.labels.tolist() == [digits.labels[0]]


def test_nothing_readable_is_refused_even_when_lenient(tmp_path, source_cache):
    (tmp_path / "mine" / "2").mkdir(parents=True)
    (tmp_path / "mine" / "2" / "a.png").write_bytes(b"junk")
    refused(tmp_path / "mine", r"a.png: .*\(1 of 1 images unreadable\)")
    assert cached(source_cache) == []


def test_duplicates_across_two_sources_are_counted(tmp_path, digits, source_cache):
    a = class_folders(tmp_path / "a", digits.subset(slice(0, 100)))
    b = class_folders(tmp_path / "b", digits.subset(slice(60, 160)))
    first, second = load_source(a, preprocess=False), load_source(b, preprocess=False)
    assert count_duplicates(first, second) == 40
    assert count_duplicates(second, first) == 40
    mask = duplicates_between(first, second)
    assert {tuple(x.ravel()) for x in second.images[mask]} <= {
        tuple(x.ravel()) for x in first.images
    }
