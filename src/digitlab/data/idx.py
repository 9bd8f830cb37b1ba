"""IDX, MNIST's own file format (raw or gzipped), under any file name.

An IDX file is a big-endian header (magic 0x00000803 for images, 0x00000801 for labels,
the count, and for images the rows and columns) followed by uint8 data. The MNIST names pair
an images file with its labels file; files under other names pair by content.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from digitlab.data.folders import is_image_name
from digitlab.errors import DigitlabError

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def read_maybe_gz(path: Path) -> bytes:
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
    data = read_maybe_gz(path)
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
        if not e.name.startswith(".") and not is_image_name(e.name) and e.is_file()
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


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images (N,28,28) and labels (N,) of an IDX images file and its labels file."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DigitlabError(f"{images_path}: holds labels, expected images")
    if labels.ndim != 1:
        raise DigitlabError(f"{labels_path}: holds images, expected labels")
    if len(images) != len(labels):
        raise DigitlabError(
            f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels"
        )
    return images, labels
