"""read_dataset on every format, each written here from the real MNIST, and on broken files."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data.dataset import Dataset
from digitlab.data.export import encode_png
from digitlab.data.formats import read_dataset
from digitlab.errors import DigitlabError

# ---------------------------------------------------------------------------- writers


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    magic = magic if magic is not None else (0x803 if array.ndim == 3 else 0x801)
    header = struct.pack(">II", magic, array.shape[0])
    if array.ndim == 3:
        header += struct.pack(">II", *array.shape[1:])
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, 1) if path.suffix == ".gz" else data)
    return path


def write_idx_pair(folder: Path, ds: Dataset, prefix: str = "t10k", gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", ds.labels)
    return write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", ds.images)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes (SHORT_BINSTRING/BINSTRING), as the book's
    original Python 2 file does."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str


def book_pickle(parts: tuple, style: str) -> bytes:
    """A (train, valid, test) pickle in the given writer's style.

    ``numpy1-proto2``: what numpy 1.x writes with protocol 2 under Python 3; the same stream
    as numpy 2's but for the module name (checked against numpy 1.26.4).
    """
    if style == "py2":
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(parts)
        data = buf.getvalue()
    elif style == "numpy1-proto2":
        data = pickle.dumps(parts, protocol=2)
    else:
        data = pickle.dumps(parts, protocol=int(style.removeprefix("proto")))
    if style in ("py2", "numpy1-proto2"):
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n_reconstruct" in data
    return data


def book_parts(train: Dataset, test: Dataset, n: int, scale: float) -> tuple:
    def part(ds: Dataset, sl: slice) -> tuple:
        return (ds.images[sl].reshape(-1, 784) / np.float32(scale), ds.labels[sl])

    return (part(train, slice(0, n)), part(train, slice(50000, 50000 + n)), part(test, slice(0, n)))


@pytest.fixture(scope="module")
def small(mnist) -> Dataset:
    """500 real test digits with every class present."""
    return mnist["test"].subset(slice(0, 500), "small")


def assert_same(ds: Dataset, expected: Dataset) -> None:
    assert np.array_equal(ds.labels, expected.labels)
    assert np.array_equal(ds.images, expected.images)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_file_finds_its_labels_beside_it(tmp_path, mnist, gz):
    images = write_idx_pair(tmp_path, mnist["test"], gz=gz)
    assert_same(read_dataset(images), mnist["test"])


def test_idx_labels_file_finds_its_images_and_dotted_names_work(tmp_path, small):
    write_idx(tmp_path / "train-images.idx3-ubyte", small.images)
    labels = write_idx(tmp_path / "train-labels.idx1-ubyte", small.labels)
    assert_same(read_dataset(labels), small)


def test_folder_of_raw_idx_files_reads_train_and_test(tmp_path, small):
    write_idx_pair(tmp_path, small, "train", gz=False)
    write_idx_pair(tmp_path, small.subset(slice(0, 10)), "t10k", gz=False)
    assert_same(read_dataset(tmp_path, "train"), small)
    assert len(read_dataset(tmp_path, "test")) == 10
    with pytest.raises(DigitlabError, match="choose a split"):
        read_dataset(tmp_path)


def _idx_error(path: Path) -> str:
    with pytest.raises(DigitlabError) as err:
        read_dataset(path)
    assert str(path) in str(err.value), "the message must name the file"
    return str(err.value)


def test_bad_idx_magic_names_the_file(tmp_path, small):
    images = write_idx_pair(tmp_path, small)
    write_idx(images, small.images.reshape(500, 784), magic=0x0802)
    assert "bad IDX magic 0x00000802" in _idx_error(images)


def test_truncated_idx_names_the_file(tmp_path, small):
    images = write_idx_pair(tmp_path, small, gz=False)
    images.write_bytes(images.read_bytes()[:-100])
    assert "promises 392000 data bytes, file has 391900" in _idx_error(images)


def test_cut_gzip_idx_names_the_file(tmp_path, small):
    images = write_idx_pair(tmp_path, small)
    images.write_bytes(images.read_bytes()[:-1000])
    assert "cannot read" in _idx_error(images)


def test_idx_of_wrong_dimensions_names_the_file(tmp_path, small):
    images = write_idx_pair(tmp_path, small)
    write_idx(images, np.zeros((5, 32, 32), np.uint8))
    assert "32x32, expected 28x28" in _idx_error(images)


def test_idx_label_10_names_the_labels_file(tmp_path, small):
    images = write_idx_pair(tmp_path, small)
    labels = small.labels.copy()
    labels[7] = 10
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DigitlabError, match="t10k-labels-idx1-ubyte.gz: label 10 is outside"):
        read_dataset(images)


def test_idx_count_mismatch_and_missing_labels_name_the_file(tmp_path, small):
    images = write_idx_pair(tmp_path, small)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", small.labels[:499])
    assert "500 images but t10k-labels-idx1-ubyte.gz has 499 labels" in _idx_error(images)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert "no labels file" in _idx_error(images)


# ---------------------------------------------------------------------------- pickle


@pytest.mark.parametrize(
    ("style", "scale"),
    [("py2", 256), ("numpy1-proto2", 256), ("proto4", 255), ("proto5", 256), ("proto5", 255)],
)
def test_book_pickle_round_trips_exactly(tmp_path, mnist, style, scale):
    parts = book_parts(mnist["train"], mnist["test"], 2000, scale)
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(book_pickle(parts, style), 1))
    train, test = mnist["train"], mnist["test"]
    assert_same(read_dataset(path, "train"), train.subset(slice(0, 2000)))
    assert_same(read_dataset(path, "valid"), train.subset(slice(50000, 52000)))
    assert_same(read_dataset(path, "val"), train.subset(slice(50000, 52000)))
    assert_same(read_dataset(path, "test"), test.subset(slice(0, 2000)))


@pytest.mark.slow
def test_full_size_book_pickle_has_the_book_splits(tmp_path, mnist):
    """The book's file: pixel/256 in float32, so values top out at 255/256."""
    parts = book_parts(mnist["train"], mnist["test"], 50000, 256)
    assert parts[0][0].max() == np.float32(255 / 256)
    path = tmp_path / "mnist.pkl"
    path.write_bytes(book_pickle(parts, "numpy1-proto2"))
    train, valid = read_dataset(path, "train"), read_dataset(path, "valid")
    assert (len(train), len(valid), len(read_dataset(path, "test"))) == (50000, 10000, 10000)
    assert np.array_equal(valid.images, mnist["train"].images[50000:])
    assert np.array_equal(train.images, mnist["train"].images[:50000])


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, small, protocol):
    marker = tmp_path / "pwned"
    parts = book_parts(small, small, 10, 256)
    evil = ((parts[0][0], _Payload(marker)), parts[1], parts[2])
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(evil, protocol=protocol)))
    with pytest.raises(DigitlabError, match=r"mnist.pkl.gz: refused to unpickle.*system"):
        read_dataset(path, "train")
    assert not marker.exists()


def test_pickle_with_other_codecs_or_globals_is_refused(tmp_path):
    path = tmp_path / "x.pkl"
    # GLOBAL builtins.eval, then _codecs.encode with a codec other than latin1
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    with pytest.raises(DigitlabError, match="refused to unpickle.*builtins.eval"):
        read_dataset(path, "train")
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DigitlabError, match="not a readable pickle"):
        read_dataset(path, "train")


def test_bad_pickles_name_the_file(tmp_path, small):
    path = tmp_path / "mnist.pkl.gz"
    parts = book_parts(small, small, 10, 256)
    path.write_bytes(gzip.compress(pickle.dumps(parts))[:-50])
    with pytest.raises(DigitlabError, match=f"{path}: cannot read"):
        read_dataset(path, "train")
    path.write_bytes(gzip.compress(pickle.dumps(parts[:2])))
    with pytest.raises(DigitlabError, match=r"expected a \(train, valid, test\) tuple"):
        read_dataset(path, "train")
    path.write_bytes(gzip.compress(pickle.dumps(((parts[0][0] * 3, parts[0][1]),) * 3)))
    with pytest.raises(DigitlabError, match="must lie in"):
        read_dataset(path, "train")
    with pytest.raises(DigitlabError, match="choose a split"):
        read_dataset(path)


# ---------------------------------------------------------------------------- npz


def test_keras_npz_reads_train_test_and_val(tmp_path, mnist):
    path = tmp_path / "mnist.npz"
    train, test = mnist["train"], mnist["test"]
    np.savez(path, x_train=train.images, y_train=train.labels.astype(np.uint8),
             x_test=test.images, y_test=test.labels.astype(np.uint8))  # fmt: skip
    assert_same(read_dataset(path, "train"), train)
    assert_same(read_dataset(path, "test"), test)
    assert_same(read_dataset(path, "val"), train.subset(slice(50000, 60000)))


def test_bad_npz_names_the_file(tmp_path, small):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=small.images, y_train=small.labels)
    with pytest.raises(DigitlabError, match=f"{path}: lacks x_test, y_test"):
        read_dataset(path, "test")
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DigitlabError, match=f"{path}: not a readable .npz"):
        read_dataset(path, "test")


# ---------------------------------------------------------------------------- folders, lists


def write_pngs(paths: list[Path], images: np.ndarray) -> None:
    for path, image in zip(paths, images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(image))


def test_folder_of_label_subfolders(tmp_path, small):
    write_pngs([tmp_path / str(y) / f"{i}.png" for i, y in enumerate(small.labels)], small.images)
    ds = read_dataset(tmp_path)
    order = np.lexsort((np.arange(500), small.labels))  # by label, then by numeric file name
    assert_same(ds, small.subset(order))


def test_flat_folder_of_index_label_names_with_rgb_and_jpg(tmp_path, small):
    write_pngs([tmp_path / f"{i:06d}_{y}.png" for i, y in enumerate(small.labels)], small.images)
    (tmp_path / "000003_0.png").unlink()
    rgb = np.repeat(small.images[3][:, :, None], 3, axis=2)
    Image.fromarray(rgb, "RGB").save(tmp_path / "000003_0.png")
    Image.fromarray(small.images[0]).save(tmp_path / "000500_7.jpg", quality=95)
    (tmp_path / "README").write_text("not an image")
    ds = read_dataset(tmp_path)
    assert_same(ds.subset(slice(0, 500)), small)
    assert ds.labels[500] == 7
    assert np.abs(ds.images[500].astype(int) - small.images[0]).mean() < 3


def test_caffe_and_mxnet_lists_resolve_paths_against_the_list_folder(tmp_path, small):
    names = [f"imgs/{i}.png" for i in range(500)]
    write_pngs([tmp_path / n for n in names], small.images)
    names[0] = str(tmp_path / names[0])  # an absolute path works too
    labels = small.labels.tolist()
    caffe = tmp_path / "list.txt"
    caffe.write_text("".join(f"{n} {y}\n" for n, y in zip(names, labels, strict=True)) + "\n")
    mxnet = tmp_path / "list.lst"  # im2rec writes labels as floats
    lines = [f"{i}\t{y:f}\t{n}\n" for i, (n, y) in enumerate(zip(names, labels, strict=True))]
    mxnet.write_text("".join(lines))
    assert_same(read_dataset(caffe), small)
    assert_same(read_dataset(mxnet), small)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("imgs/0.png 10\n", r"list.txt:1: label '10' is not a digit"),
        ("imgs/0.png 7\nimgs/0.png\n", r"list.txt:2: expected 'path label'"),
        ("imgs/none.png 7\n", r"list.txt:1: no such image .*imgs/none.png"),
        ("imgs/big.png 7\n", r"imgs/big.png: image is 32x28, expected 28x28"),
        ("\n", r"list.txt: the list is empty"),
    ],
)
def test_bad_list_lines_name_the_file_and_line(tmp_path, small, text, message):
    write_pngs([tmp_path / "imgs" / "0.png"], small.images[:1])
    Image.new("L", (32, 28)).save(tmp_path / "imgs" / "big.png")
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DigitlabError, match=message):
        read_dataset(tmp_path / "list.txt")


def test_bad_mxnet_line_names_the_file_and_line(tmp_path):
    (tmp_path / "a.lst").write_text("0\t7\t1\timg.png\n")
    with pytest.raises(DigitlabError, match=r"a.lst:1: expected index<TAB>label<TAB>path"):
        read_dataset(tmp_path / "a.lst")


def test_unrecognised_sources_say_what_is_expected(tmp_path):
    with pytest.raises(DigitlabError, match="no such file or folder"):
        read_dataset(tmp_path / "missing")
    (tmp_path / "notes.dat").write_text("x")
    with pytest.raises(DigitlabError, match="notes.dat: not a recognised MNIST file"):
        read_dataset(tmp_path / "notes.dat")
    (tmp_path / "notes.dat").unlink()
    with pytest.raises(DigitlabError, match="no MNIST data found"):
        read_dataset(tmp_path)
    (tmp_path / "photo.png").write_bytes(b"")
    with pytest.raises(DigitlabError, match="photo.png: name is not INDEX_LABEL.png"):
        read_dataset(tmp_path)
