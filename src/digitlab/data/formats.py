"""Readers for every common MNIST format, each returning uint8 images and int64 labels.

A file that is not what it claims to be raises :class:`DigitlabError` naming the file and
what is wrong with it.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


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
        raise DigitlabError(f"{path}: is a directory, expected an IDX file") from None
    except (OSError, EOFError) as exc:
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
