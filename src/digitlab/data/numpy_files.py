"""The MNIST files of the tutorials that hold numpy arrays: the book's ``mnist.pkl.gz``
(Nielsen's *Neural Networks and Deep Learning*) and Keras' ``mnist.npz``.

The pickle is read with an unpickler that rebuilds numpy arrays and refuses every other
global, so a malicious file cannot run code; the ``.npz`` is read without unpickling.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from digitlab.data.idx import read_maybe_gz
from digitlab.errors import DigitlabError


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


PICKLE_SPLITS = {"train": 0, "train50k": 0, "valid": 1, "val": 1, "test": 2}


def read_pickle(path: Path, split: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of the book's ``mnist.pkl.gz``: ((train), (valid),
    (test)), each (floats N×784, labels); ``train`` is its 50,000."""
    names = PICKLE_SPLITS
    if split not in names:
        raise DigitlabError(f"{path}: choose a split: train (50k), valid (10k) or test (10k)")
    data = read_maybe_gz(path)
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
    return images, labels


def read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keras' ``mnist.npz`` (x_train, y_train, x_test, y_test; nothing unpickled) as
    ``{"train": (images, labels), "test": (images, labels)}``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
            if missing:
                raise DigitlabError(f"{path}: lacks {', '.join(sorted(missing))}")
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DigitlabError(f"{path}: not a readable .npz ({exc})") from None
    out = {}
    for part in ("train", "test"):
        images = _as_uint8_images(arrays[f"x_{part}"], path)
        out[part] = (images, _as_labels(arrays[f"y_{part}"], len(images), path))
    return out


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
