"""load_source on every kind of source, each written here from real MNIST digits."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data.dataset import Dataset
from digitlab.data.decode import decode_all
from digitlab.data.export import encode_png, export_split
from digitlab.data.formats import read_list_file
from digitlab.data.source import load_source, parse_source
from digitlab.data.tables import read_kaggle_csv
from digitlab.errors import DigitlabError


def assert_same(ds: Dataset, images: np.ndarray, labels: np.ndarray) -> None:
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    assert np.array_equal(ds.labels, labels)
    assert np.array_equal(ds.images, images)


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = struct.pack(">II", 0x803 if array.ndim == 3 else 0x801, len(array))
    if array.ndim == 3:
        header += struct.pack(">II", 28, 28)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, 1) if path.name.endswith(".gz") else data)
    return path


def kaggle_csv(path: Path, ds: Dataset, labelled: bool = True) -> Path:
    head = (["label"] if labelled else []) + [f"pixel{i}" for i in range(784)]
    rows = [",".join(head)]
    for image, label in zip(ds.images, ds.labels, strict=True):
        pixels = ",".join(map(str, image.reshape(-1).tolist()))
        rows.append(f"{label},{pixels}" if labelled else pixels)
    path.write_text("\n".join(rows) + "\n")
    return path


# ---------------------------------------------------------------------------- grammar


def test_bare_split_names_are_mnist_and_anything_else_is_a_path(tmp_path, monkeypatch):
    (tmp_path / "train").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_source("train").kind == "mnist"
    assert parse_source("val").split == "val"
    assert parse_source("./train").kind == "folder"
    assert parse_source(Path("train")).kind == "folder"
    with pytest.raises(DigitlabError, match="nowhere: no such file or folder .*train50k"):
        parse_source("nowhere")


def test_builtin_split_loads_as_today(mnist):
    val = load_source("val")
    assert len(val) == 10000
    assert np.array_equal(val.images, mnist["train"].images[50000:])


def test_each_kind_is_told_from_the_path(tmp_path, digits):
    (tmp_path / "list.txt").write_text("a.png 1\n")
    (tmp_path / "list.lst").write_text("0\t1\ta.png\n")
    (tmp_path / "x.parquet").write_bytes(b"")
    (tmp_path / "x.rec").write_bytes(b"")
    (tmp_path / "x.idx").write_text("0\t0\n")
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"")
    kinds = {
        "list.txt": "list",
        "list.lst": "list",
        "x.parquet": "parquet",
        "x.rec": "recordio",
        "x.idx": "recordio",  # MXNet's index beside a .rec, not an IDX file
        "db": "lmdb",
        "db/data.mdb": "lmdb",
    }
    for name, kind in kinds.items():
        assert parse_source(tmp_path / name).kind == kind, name
    assert parse_source(tmp_path / "x.idx").path == tmp_path / "x.rec"


# ---------------------------------------------------------------------------- folders


def _paint(ds: Dataset, i: int, how: str) -> Image.Image:
    """Digit ``i`` as a user might save it: upscaled, coloured, inverted, transparent."""
    ink = Image.fromarray(ds.images[i]).resize((96, 96), Image.Resampling.BICUBIC)
    a = np.asarray(ink)
    if how == "blue-on-white-jpeg":
        rgb = np.stack([255 - a, 255 - a, np.full_like(a, 255)], axis=2)  # blue ink, white paper
        return Image.fromarray(np.pad(rgb, ((10, 14), (4, 0), (0, 0)), constant_values=255))
    if how == "dark-on-light-bmp":
        return Image.fromarray(255 - a).resize((64, 64))
    if how == "alpha-png":
        rgba = np.zeros((96, 96, 4), np.uint8)
        rgba[..., 3] = a
        return Image.fromarray(rgba, "RGBA")
    raise ValueError(how)


def _mixed_tree(root: Path, ds: Dataset) -> dict[int, list[Path]]:
    """Class folders of PNG, JPEG and BMP files of mixed sizes, colours and polarity."""
    files: dict[int, list[Path]] = {}
    for i, (image, label) in enumerate(zip(ds.images[:40], ds.labels[:40].tolist(), strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        how = ("plain", "blue-on-white-jpeg", "dark-on-light-bmp", "alpha-png")[i % 4]
        suffix = {"plain": ".png", "blue-on-white-jpeg": ".jpg", "dark-on-light-bmp": ".bmp"}
        path = folder / f"img{i}{suffix.get(how, '.png')}"
        if how == "plain":
            path.write_bytes(encode_png(image))
        else:
            _paint(ds, i, how).save(path, quality=95)
        files.setdefault(label, []).append(path)
    (root / "none").mkdir()
    rng = np.random.default_rng(0)
    scribble = np.zeros((40, 60), np.uint8)
    scribble[rng.integers(0, 40, 30), rng.integers(0, 60, 30)] = 255
    Image.fromarray(scribble).save(root / "none" / "scribble.png")
    Image.new("L", (30, 30), 255).save(root / "none" / "blank.gif")
    (root / "notes.txt").write_text("ignored: not an image")
    return files


def test_class_folders_of_any_size_colour_and_polarity_read_as_predict_sees_them(
    tmp_path, digits, source_cache
):
    files = _mixed_tree(tmp_path / "mine", digits)
    ds = load_source(tmp_path / "mine")
    order = [
        p for label in sorted(files) for p in sorted(files[label], key=lambda p: int(p.stem[3:]))
    ]
    assert len(ds) == 42 and ds.num_classes == 11 and not ds.skipped
    assert ds.labels[:40].tolist() == [int(p.parent.name) for p in order]
    assert ds.labels[40:].tolist() == [10, 10]  # none/: blank.gif and scribble.png
    # the same 28x28 predict shows a model for each file (its --show-input images)
    from digitlab.predict import Predictor

    shown = tmp_path / "shown"
    list(
        Predictor(backend="onnx", line=False).predict_paths(
            [str(p) for p in order], show_input=str(shown)
        )
    )
    seen = [np.asarray(Image.open(p)) for p in sorted(shown.iterdir())]
    assert np.array_equal(ds.images[:40], np.stack(seen))
    # inverted, coloured and transparent digits come back as white ink on black, like MNIST
    originals = {p: digits.images[int(p.stem[3:])] for p in order}
    for k, p in enumerate(order):
        r = np.corrcoef(ds.images[k].ravel(), originals[p].ravel())[0, 1]
        assert r > 0.6, (p.name, r)
        assert ds.images[k][0].max() == 0 and ds.images[k][:, 0].max() == 0


def test_without_preprocessing_28x28_digits_come_back_bit_exact(tmp_path, digits, source_cache):
    root = tmp_path / "mine"
    for i, (image, label) in enumerate(zip(digits.images, digits.labels.tolist(), strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{i}.png").write_bytes(encode_png(image))
    ds = load_source(root, preprocess=False)
    order = np.lexsort((np.arange(len(digits)), digits.labels))
    assert_same(ds, digits.images[order], digits.labels[order])


def test_export_and_augment_layouts_are_sources(tmp_path, digits, source_cache):
    export_split(digits, tmp_path / "out", "test", workers=1)
    export_split(digits.subset(slice(0, 10)), tmp_path / "out", "train", workers=1)
    ds = load_source(f"{tmp_path / 'out'}:test", preprocess=False)
    assert_same(ds, digits.images, digits.labels)
    assert ds.name == "out:test"
    assert len(load_source(tmp_path / "out" / "train", preprocess=False)) == 10
    assert len(load_source(tmp_path / "out" / "train.txt", preprocess=False)) == 10
    assert_same(
        load_source(tmp_path / "out" / "test.lst", preprocess=False), digits.images, digits.labels
    )
    with pytest.raises(DigitlabError, match="choose a split: test, train"):
        load_source(tmp_path / "out")


# ---------------------------------------------------------------------------- lists


def test_lists_with_spaces_in_paths_read_relative_to_the_list(tmp_path, digits, source_cache):
    names = [f"my digits/no {i} (copy).png" for i in range(20)]
    for name, image in zip(names, digits.images[:20], strict=True):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(encode_png(image))
    labels = digits.labels[:20].tolist()
    (tmp_path / "caffe.txt").write_text(
        "".join(f"{n} {y}\n" for n, y in zip(names, labels, strict=True))
    )
    lst = "".join(
        f"{i}\t{y:.6f}\t{n}\n" for i, (n, y) in enumerate(zip(names, labels, strict=True))
    )
    (tmp_path / "mx.lst").write_text(lst)
    for name in ("caffe.txt", "mx.lst"):
        assert_same(
            load_source(tmp_path / name, preprocess=False), digits.images[:20], digits.labels[:20]
        )


def test_the_list_parser_reads_predict_lists_without_labels(tmp_path):
    (tmp_path / "in.txt").write_text("a b.png\nc.png 3\n/abs/d.png\n")
    entries = read_list_file(tmp_path / "in.txt", labelled=False)
    assert [(e.path, e.label) for e in entries] == [
        (tmp_path / "a b.png", None),
        (tmp_path / "c.png", 3),
        (Path("/abs/d.png"), None),
    ]
    (tmp_path / "in.lst").write_text("0\tx y.png\n1\t4\tz.png\n")
    assert [e.path.name for e in read_list_file(tmp_path / "in.lst", labelled=False)] == [
        "x y.png",
        "z.png",
    ]


# ---------------------------------------------------------------------------- tables


def test_kaggle_csv_train_and_its_unlabelled_test(tmp_path, digits, source_cache):
    train = kaggle_csv(tmp_path / "train.csv", digits)
    test = kaggle_csv(tmp_path / "test.csv", digits.subset(slice(0, 30)), labelled=False)
    assert_same(load_source(train), digits.images, digits.labels)
    images, labels = read_kaggle_csv(test)
    assert labels is None and np.array_equal(images, digits.images[:30])
    with pytest.raises(DigitlabError, match="test.csv: holds pixels but no labels"):
        load_source(test)


def test_path_label_csv(tmp_path, digits, source_cache):
    (tmp_path / "imgs").mkdir()
    rows = ["path,label"]
    for i in range(12):
        (tmp_path / "imgs" / f"d,{i}.png").write_bytes(encode_png(digits.images[i]))
        rows.append(f'"imgs/d,{i}.png",{digits.labels[i]}')
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    assert_same(
        load_source(tmp_path / "list.csv", preprocess=False), digits.images[:12], digits.labels[:12]
    )


def write_datasets_parquet(path: Path, images: list[bytes | None], labels: list[int]) -> Path:
    """A Parquet file as Hugging Face ``datasets`` writes an image dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    column = pa.array(
        [None if b is None else {"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)],
        image_type,
    )
    pq.write_table(pa.table({"image": column, "label": pa.array(labels, pa.int64())}), path)
    return path


def test_parquet_in_the_datasets_layout(tmp_path, digits, source_cache):
    path = write_datasets_parquet(
        tmp_path / "train-00000-of-00001.parquet",
        [encode_png(im) for im in digits.images],
        digits.labels.tolist(),
    )
    assert_same(load_source(path, preprocess=False), digits.images, digits.labels)


# ---------------------------------------------------------------------------- MNIST files


def test_pickle_npz_and_idx_under_other_names(tmp_path, mnist, source_cache):
    train, test = mnist["train"], mnist["test"]
    parts = tuple(
        (ds.images[sl].reshape(-1, 784) / np.float32(256), ds.labels[sl])
        for ds, sl in ((train, slice(0, 300)), (train, slice(50000, 50300)), (test, slice(0, 300)))
    )
    (tmp_path / "digits.pkl.gz").write_bytes(gzip.compress(pickle.dumps(parts, protocol=4)))
    val = load_source(f"{tmp_path}/digits.pkl.gz:val")
    assert_same(val, train.images[50000:50300], train.labels[50000:50300])
    assert val.name == "digits.pkl.gz:val"

    np.savez(tmp_path / "keras.npz", x_train=test.images[:100], y_train=test.labels[:100],
             x_test=test.images[100:150], y_test=test.labels[100:150])  # fmt: skip
    assert_same(
        load_source(f"{tmp_path}/keras.npz:test"), test.images[100:150], test.labels[100:150]
    )

    write_idx(tmp_path / "train-images.idx3-ubyte", test.images[:80])
    write_idx(tmp_path / "train-labels.idx1-ubyte", test.labels[:80])
    assert_same(
        load_source(tmp_path / "train-labels.idx1-ubyte"), test.images[:80], test.labels[:80]
    )

    # any other name: the partner is the IDX file of the other kind with the same count
    (tmp_path / "mine").mkdir()
    write_idx(tmp_path / "mine" / "digits.images.gz", test.images[:70])
    write_idx(tmp_path / "mine" / "digits.targets", test.labels[:70])
    assert_same(
        load_source(tmp_path / "mine" / "digits.images.gz"), test.images[:70], test.labels[:70]
    )
    assert_same(load_source(tmp_path / "mine"), test.images[:70], test.labels[:70])  # a folder too
    with pytest.raises(DigitlabError, match="holds a single split"):
        load_source(f"{tmp_path / 'mine'}:train")


# ---------------------------------------------------------------------------- decoding


def test_parallel_decoding_matches_one_process(digits):
    many = [encode_png(im) for im in np.tile(digits.images, (21, 1, 1))]  # 4,200: above the cut
    names = [str(i) for i in range(len(many))]
    one = decode_all(many, names, preprocess=False, workers=1)
    two = decode_all(many, names, preprocess=False, workers=2)
    assert np.array_equal(one.images, two.images) and one.errors == two.errors
    assert np.array_equal(two.images, np.tile(digits.images, (21, 1, 1)))
    few = many[:240]  # above the cut for preprocessing
    one = decode_all(few, names[:240], workers=1)
    assert np.array_equal(one.images, decode_all(few, names[:240], workers=2).images)


def _png_with_filters(image: np.ndarray, filters: list[int]) -> bytes:
    """A 28x28 grey PNG whose row ``y`` is filtered with ``filters[y]`` (0 None, 1 Sub, 2 Up)."""
    import zlib

    from digitlab.data.export import _png_chunk

    rows = []
    for y, f in enumerate(filters):
        row = image[y].astype(np.int16)
        prior = image[y - 1].astype(np.int16) if y else np.zeros(28, np.int16)
        left = np.concatenate([[0], row[:-1]])
        filtered = {0: row, 1: row - left, 2: row - prior}[f] % 256
        rows.append(bytes([f]) + filtered.astype(np.uint8).tobytes())
    ihdr = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + _png_chunk(b"IEND", b"")
    )


def test_png_rows_filtered_none_sub_or_up_decode_as_pillow_reads_them(digits):
    from digitlab.data.decode import _png28, read_digit

    rng = np.random.default_rng(3)
    for image in digits.images[:50]:
        png = _png_with_filters(image, rng.integers(0, 3, 28).tolist())
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), image)  # a valid PNG
        assert np.array_equal(_png28(png), image)
    pillow = io.BytesIO()
    Image.fromarray(digits.images[0]).save(pillow, "PNG")  # Pillow's own filters: its decoder
    assert np.array_equal(read_digit(pillow.getvalue(), preprocess=False)[0], digits.images[0])
    cut = _png_with_filters(digits.images[0], [1] * 28)[:-30]
    with pytest.raises(DigitlabError, match="cut.png: cannot decode image"):
        read_digit(cut, preprocess=False, name="cut.png")
