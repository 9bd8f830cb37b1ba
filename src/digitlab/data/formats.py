"""Readers for the MNIST files, and the parsers of list files and labelled image folders.

IDX files (raw or gzipped, under any name), the book's ``mnist.pkl.gz`` and Keras'
``mnist.npz`` become uint8 images and int64 labels here; :func:`read_list_file` is the one
parser of Caffe/MXNet list files and :func:`scan_image_folder` the one reader of labelled
folder layouts. :mod:`digitlab.data.source` puts these and the other formats behind one
grammar; :func:`read_dataset` reads any source exactly as stored. A file that is not what it
claims to be raises :class:`DigitlabError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.errors import DigitlabError

if TYPE_CHECKING:
    from digitlab.data.dataset import Dataset

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
# the one set of image suffixes a folder or list is read for (what Pillow decodes of what
# people save digits as)
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)


def _read_maybe_gz(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DigitlabError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DigitlabError(f"{path}: is a directory, expected a file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DigitlabError(f"{path}: cannot read ({exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (raw or gzipped) of uint8 images (N,28,28) or labels (N,) as a numpy array."""
    path = Path(path)
    data = _read_maybe_gz(path)
    if len(data) < 8:
        raise DigitlabError(f"{path}: too short for an IDX header")
    magic, count = struct.unpack(">II", data[:8])
    if magic == IDX_IMAGES_MAGIC:
        if len(data) < 16:
            raise DigitlabError(f"{path}: IDX image header is truncated")
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (28, 28):
            raise DigitlabError(f"{path}: images are {rows}x{cols}, expected 28x28")
        shape, offset = (count, rows, cols), 16
    elif magic == IDX_LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DigitlabError(
            f"{path}: bad IDX magic 0x{magic:08x} (expected 0x00000803 images or 0x00000801 labels)"
        )
    need = offset + int(np.prod(shape))
    if len(data) != need:
        raise DigitlabError(
            f"{path}: IDX header promises {need - offset} data bytes, file has {len(data) - offset}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, count=need - offset, offset=offset).reshape(shape)
    if magic == IDX_LABELS_MAGIC:
        if arr.size and arr.max() > 9:
            raise DigitlabError(f"{path}: label {int(arr.max())} is outside 0-9")
        return arr.astype(np.int64)
    return arr.copy()


def read_dataset(source: str | os.PathLike, split: str | None = None) -> Dataset:
    """A source exactly as stored: no preprocessing, no cache, any unreadable image refused.

    What ``data show``/``data export --source`` read: ``source`` is any path of the grammar
    of :mod:`digitlab.data.source` and ``split`` picks one split of a source holding several.
    """
    from digitlab.data.source import load_source, parse_source

    source = parse_source(Path(source), split)
    return load_source(source, preprocess=False, strict=True, cache=False)


def _dataset(images: np.ndarray, labels: np.ndarray, name: str) -> Dataset:
    from digitlab.data.dataset import Dataset

    return Dataset(images, labels, name)


def pick_split(train: Dataset, test: Dataset, split: str | None, path: Path) -> Dataset:
    """One of the tutorial splits from a train/test pair (``val`` is train's last 10k)."""
    from digitlab.data.dataset import SPLITS, split_of

    if split is None:
        raise DigitlabError(f"{path}: holds several splits; choose one of {', '.join(SPLITS)}")
    if split not in SPLITS:
        raise DigitlabError(f"{path}: no split {split!r}; choose one of {', '.join(SPLITS)}")
    chosen = split_of({"train": train, "test": test}, split)
    chosen.name = f"{path.name}:{split}"
    return chosen


# ---------------------------------------------------------------------------- IDX


_IMAGES_NAME = re.compile(r"images([-.])idx3", re.IGNORECASE)
_LABELS_NAME = re.compile(r"labels([-.])idx1", re.IGNORECASE)


def _beside(path: Path, name: str) -> Path | None:
    """``name`` (or the same name with ``.gz`` added or removed) in ``path``'s folder."""
    alt = name[:-3] if name.endswith(".gz") else name + ".gz"
    for candidate in (path.with_name(name), path.with_name(alt)):
        if candidate.is_file():
            return candidate
    return None


def idx_header(path: Path) -> tuple[int, int] | None:
    """(magic, count) of an IDX file, raw or gzipped, or None when ``path`` is not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            raw = gzip.GzipFile(fileobj=fh) if head == b"\x1f\x8b" else fh
            data = raw.read(8)
    except (OSError, EOFError, zlib.error):
        return None
    if len(data) < 8:
        return None
    magic, count = struct.unpack(">II", data)
    return (magic, count) if magic in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC) else None


def idx_pair(path: Path) -> tuple[Path, Path]:
    """The (images, labels) IDX files of which ``path`` is one.

    The MNIST names pair by name (``train-images-idx3-ubyte[.gz]`` with
    ``train-labels-idx1-ubyte[.gz]``, dots or dashes); files under any other name pair by
    content: the one file beside it of the other IDX kind with the same count.
    """
    if _LABELS_NAME.search(path.name):
        images_name = _LABELS_NAME.sub(r"images\1idx3", path.name)
        images_path = _beside(path, images_name)
        if images_path is None:
            raise DigitlabError(f"{path}: is a labels file and no {images_name} lies beside it")
        return images_path, path
    if _IMAGES_NAME.search(path.name):
        labels_name = _IMAGES_NAME.sub(r"labels\1idx1", path.name)
        labels_path = _beside(path, labels_name)
        if labels_path is None:
            raise DigitlabError(f"{path}: no labels file {labels_name} beside it")
        return path, labels_path
    header = idx_header(path)
    if header is None:
        raise DigitlabError(
            f"{path}: not a recognised MNIST file (expected an IDX file, .pkl.gz, .npz, .csv,"
            " .parquet, .rec, a .txt/.lst list, an LMDB or a folder)"
        )
    magic, count = header
    other = IDX_LABELS_MAGIC if magic == IDX_IMAGES_MAGIC else IDX_IMAGES_MAGIC
    partners = [p for p in _idx_files(path.parent) if p != path and idx_header(p) == (other, count)]
    kind = "labels" if other == IDX_LABELS_MAGIC else "images"
    if len(partners) != 1:
        found = "none" if not partners else ", ".join(p.name for p in partners)
        raise DigitlabError(
            f"{path}: needs exactly one IDX {kind} file of {count} entries beside it; found {found}"
        )
    return (path, partners[0]) if magic == IDX_IMAGES_MAGIC else (partners[0], path)


def _idx_files(folder: Path, limit: int = 64) -> list[Path]:
    """Files of ``folder`` that are IDX (of its first ``limit`` that are not images)."""
    names = sorted(
        e.name
        for e in os.scandir(folder)
        if not e.name.startswith(".") and not _is_image_name(e.name) and e.is_file()
    )
    return [folder / n for n in names[:limit] if idx_header(folder / n)]


def idx_pairs_in_folder(folder: Path) -> dict[str, tuple[Path, Path]]:
    """The IDX pairs of a folder: ``{"train": .., "test": ..}`` for the MNIST names, else
    ``{"": pair}`` for a folder holding one images file and one labels file; may be empty."""
    named = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for sep in ("-", "."):
            found = _beside(folder / "x", f"{prefix}-images{sep}idx3-ubyte.gz")
            if found:
                named[split] = idx_pair(found)
                break
    if named:
        return named
    files = _idx_files(folder)
    images = [p for p in files if idx_header(p)[0] == IDX_IMAGES_MAGIC]  # type: ignore[index]
    if len(images) == 1 and len(files) == 2:
        return {"": idx_pair(images[0])}
    return {}


def read_idx_pair(images_path: Path, labels_path: Path) -> Dataset:
    """An IDX images file and its labels file as one :class:`Dataset`."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DigitlabError(f"{images_path}: holds labels, expected images")
    if labels.ndim != 1:
        raise DigitlabError(f"{labels_path}: holds images, expected labels")
    if len(images) != len(labels):
        raise DigitlabError(
            f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels"
        )
    return _dataset(images, labels, images_path.name)


# ---------------------------------------------------------------------------- pickle, npz


# Exactly the globals numpy needs to rebuild arrays, as written by numpy 1.x and 2.x with
# pickle protocols 2-5 (checked with a recording Unpickler). Protocol 2 under Python 3 stores
# bytes as _codecs.encode(text, "latin1"); Python 2 files (the book's) store plain strings.
def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:  # numpy 2 (numpy.core remains as a deprecated alias)
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers; refuses every other global."""

    allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


class _Refused(Exception):
    pass


def read_pickle(path: Path, split: str | None) -> Dataset:
    """The book's ``mnist.pkl.gz``: ((train), (valid), (test)), each (floats N×784, labels)."""
    names = {"train": 0, "train50k": 0, "valid": 1, "val": 1, "test": 2}
    if split not in names:
        raise DigitlabError(f"{path}: choose a split: train (50k), valid (10k) or test (10k)")
    data = _read_maybe_gz(path)
    try:
        content = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as exc:
        raise DigitlabError(
            f"{path}: refused to unpickle: it calls {exc}, which no MNIST array needs"
        ) from None
    except Exception as exc:  # a corrupt pickle can fail with almost any exception type
        raise DigitlabError(
            f"{path}: not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not (isinstance(content, tuple | list) and len(content) == 3):
        raise DigitlabError(f"{path}: expected a (train, valid, test) tuple")
    part = content[names[split]]
    if not (isinstance(part, tuple | list) and len(part) == 2):
        raise DigitlabError(f"{path}: split {split!r} is not an (images, labels) pair")
    images = _as_uint8_images(part[0], path)
    labels = _as_labels(part[1], len(images), path)
    return _dataset(images, labels, f"{path.name}:{split}")


def read_npz(path: Path, split: str | None) -> Dataset:
    """Keras' ``mnist.npz``: x_train, y_train, x_test, y_test (nothing unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
            if missing:
                raise DigitlabError(f"{path}: lacks {', '.join(sorted(missing))}")
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DigitlabError(f"{path}: not a readable .npz ({exc})") from None
    pair = []
    for part in ("train", "test"):
        images = _as_uint8_images(arrays[f"x_{part}"], path)
        labels = _as_labels(arrays[f"y_{part}"], len(images), path)
        pair.append(_dataset(images, labels, f"{path.name}:{part}"))
    return pick_split(pair[0], pair[1], split, path)


def _as_uint8_images(x: object, path: Path) -> np.ndarray:
    """(N,784) or (N,28,28) images as uint8; floats are undone from x/256 or x/255 exactly."""
    if not isinstance(x, np.ndarray) or x.ndim not in (2, 3):
        raise DigitlabError(f"{path}: images must be an array of shape (N,784) or (N,28,28)")
    if x.shape[1:] not in ((784,), (28, 28)):
        raise DigitlabError(f"{path}: images have shape {x.shape}, expected (N,784) or (N,28,28)")
    x = x.reshape(len(x), 28, 28)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise DigitlabError(f"{path}: images are {x.dtype}, expected uint8 or floats in [0,1]")
    return _floats_to_uint8(x, path)


def _floats_to_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    """Undo the scaling to [0,1]: the book's file stores pixel/256 (max 255/256 = 0.99609375),
    others pixel/255. Multiples of 1/256 are exact in float32 and no float32 k/255 (0 < k < 255)
    is one, so "every value times 256 is an integer <= 255" tells the two apart exactly."""
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DigitlabError(f"{path}: float pixels must lie in [0,1]")
    by256 = x * np.float32(256)
    if by256.max() <= 255 and np.array_equal(by256, np.floor(by256)):
        return by256.astype(np.uint8)
    by255 = x * np.float32(255)
    levels = np.rint(by255)
    if np.abs(by255 - levels).max() > 0.01:
        raise DigitlabError(f"{path}: float pixels are not 8-bit levels divided by 255 or 256")
    return levels.astype(np.uint8)


def _as_labels(y: object, count: int, path: Path) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        raise DigitlabError(f"{path}: labels must be a 1-d integer array")
    if len(y) != count:
        raise DigitlabError(f"{path}: {count} images but {len(y)} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        bad = int(y[(y < 0) | (y > 9)][0])
        raise DigitlabError(f"{path}: label {bad} is outside 0-9")
    return y.astype(np.int64)


# ---------------------------------------------------------------------------- lists


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file: the image (resolved against the list's folder) and its label."""

    path: Path
    label: int | None
    line: int


def read_list_file(path: str | os.PathLike, *, labelled: bool = True) -> list[ListEntry]:
    """The entries of a Caffe list (``path label``) or an MXNet ``.lst``
    (``index<TAB>label<TAB>path``, labels written as floats by im2rec).

    Paths may hold spaces (Caffe's label is the last field; MXNet's fields are tab-separated)
    and relative ones are resolved against the list file's folder. With ``labelled=False``
    (lists of inputs for ``predict``) a line may be just a path and labels are not checked.
    """
    path = Path(path)
    mxnet = path.name.lower().endswith(".lst")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DigitlabError(f"{path}: cannot read the list file ({exc})") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, label_text = _split_list_line(line, mxnet, labelled, f"{path}:{number}")
        label = None
        if label_text is not None:
            label = _digit_label(label_text)
            if label is None and labelled:
                raise DigitlabError(
                    f"{path}:{number}: label {label_text.strip()!r} is not a digit 0-9"
                )
        entries.append(ListEntry(path.parent / name, label, number))
    return entries


def _split_list_line(line: str, mxnet: bool, labelled: bool, where: str) -> tuple[str, str | None]:
    if mxnet:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) == 3:
            return fields[2].strip(), fields[1]
        if labelled or len(fields) < 2:
            raise DigitlabError(
                f"{where}: expected index<TAB>label<TAB>path, got {len(fields)} fields"
            )
        return fields[-1].strip(), None
    fields = line.strip().rsplit(None, 1)
    if len(fields) == 2 and (labelled or _digit_label(fields[1]) is not None):
        return fields[0], fields[1]
    if labelled:
        raise DigitlabError(f"{where}: expected 'path label'")
    return line.strip(), None


def _digit_label(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and 0 <= value <= 9 else None


# ---------------------------------------------------------------------------- folders

NOT_A_DIGIT_FOLDERS = ("none", "not-a-digit")  # class folders whose images are label 10
NOT_A_DIGIT = 10
_FLAT_NAME = re.compile(r"(\d+)_(\d+)\.[A-Za-z]+")


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


def class_of_folder(name: str) -> int | None:
    """The label a class folder stands for: ``0``-``9``, or 10 for ``none``/``not-a-digit``."""
    if len(name) == 1 and name.isdigit():
        return int(name)
    return NOT_A_DIGIT if name.lower() in NOT_A_DIGIT_FOLDERS else None


def scan_image_folder(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """(name, label) for every image of a labelled folder, names relative to the folder
    (``3/scan 12.png``, always with ``/``), in a stable order.

    Two layouts: class subfolders ``0/`` ... ``9/`` (torchvision's ImageFolder, searched
    recursively, with ``none/`` for images that are not a digit, label 10), or digitlab's
    flat ``INDEX_LABEL.png`` names (what ``data export`` and ``data augment`` write).
    Files that are not images are ignored; hidden files and folders too. Names stay strings:
    60,000 ``Path`` objects alone cost a third of a second.
    """
    folder = Path(folder)
    try:
        entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    except OSError as exc:
        raise DigitlabError(f"{folder}: cannot list the folder ({exc.strerror})") from None
    dirs = {e.name: class_of_folder(e.name) for e in entries if e.is_dir()}
    if any(label is not None for label in dirs.values()):
        return _scan_class_folders(folder, entries, dirs)
    return _scan_flat_names(folder, [e.name for e in entries if e.is_file()])


def _scan_class_folders(
    folder: Path, entries: list[os.DirEntry], dirs: dict[str, int | None]
) -> list[tuple[str, int]]:
    unknown = sorted(name for name, label in dirs.items() if label is None)
    if unknown:
        raise DigitlabError(
            f"{folder / unknown[0]}: unknown class folder; expected 0-9, or none/ for images"
            " that are not a digit"
        )
    loose = sorted(e.name for e in entries if e.is_file() and _is_image_name(e.name))
    if loose:
        raise DigitlabError(f"{folder / loose[0]}: image outside the class folders 0-9")
    out: list[tuple[str, int]] = []
    for name, label in sorted(dirs.items(), key=lambda item: item[1] or 0):
        files = sorted(_images_under(folder / name, name), key=_natural_key)
        if not files:
            raise DigitlabError(f"{folder / name}: the class folder holds no images")
        out += [(f, label) for f in files]  # type: ignore[misc]
    return out


def _images_under(folder: Path, prefix: str) -> list[str]:
    out = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            out += _images_under(Path(entry.path), f"{prefix}/{entry.name}")
        elif _is_image_name(entry.name):
            out.append(f"{prefix}/{entry.name}")
    return out


def _scan_flat_names(folder: Path, names: list[str]) -> list[tuple[str, int]]:
    found = []
    for name in names:
        if not _is_image_name(name):
            continue
        m = _FLAT_NAME.fullmatch(name)
        if not m:
            raise DigitlabError(
                f"{folder / name}: name is not INDEX_LABEL.png (e.g. 000000_7.png) and the folder"
                " has no 0-9 subfolders"
            )
        label = int(m.group(2))
        if label > NOT_A_DIGIT:
            raise DigitlabError(f"{folder / name}: label {label} is outside 0-9 (10: not a digit)")
        found.append((int(m.group(1)), label, name))
    found.sort(key=lambda e: e[0])
    for (i, _, name), (j, _, _) in zip(found, found[1:], strict=False):
        if i == j:
            raise DigitlabError(f"{folder / name}: index {i} appears twice in {folder}")
    return [(name, label) for _, label, name in found]


_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> tuple:
    """``img2`` before ``img10``: digit runs compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(name))
