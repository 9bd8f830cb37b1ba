"""The cache of decoded sources: the second load of an unchanged source starts at once.

An entry is keyed by the SHA-256 of everything that shapes the result: the bytes of the
source's files (with their names, for folders, where names carry the labels), the split, the
preprocessing switch, and the code that decodes (this package's data modules and
preprocessing, and Pillow's version). A changed source, or a changed decoder, is therefore
never served stale; there is nothing to invalidate. Hashing reads every file, which costs
0.5 s for 60,000 PNGs (15 MB) on one core of the development machine (docs/data-loading.md);
sizes and times alone would be cheaper but would serve a same-size edit stale.

Entries are uncompressed ``.npz`` files under ``<digitlab home>/sources``, written atomically;
the least recently used go when the folder outgrows ``MAX_BYTES``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write
from digitlab.paths import digitlab_home

CACHE_VERSION = 1
MAX_BYTES = 4 << 30  # 60,000 digits take 47 MB: room for about 80 sources
_CODE = (
    "caffe_lmdb.py", "decode.py", "folders.py", "idx.py", "numpy_files.py", "recordio.py",
    "source.py", "tables.py",
)  # fmt: skip


class MissingFile(DigitlabError):
    """A file the source names does not exist; ``index`` says which of the given files."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def cache_dir() -> Path:
    return digitlab_home() / "sources"


def digest_files(paths: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> str:
    """SHA-256 over each file's name (when given), size and bytes, in the order given."""
    h = hashlib.sha256()
    for i, path in enumerate(paths):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise MissingFile(f"{path}: no such file", i) from None
        except OSError as exc:
            raise DigitlabError(f"{path}: cannot read ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "rb", buffering=0) as fh:
                data = fh.read()  # one read for small files; big ones are few
        except IsADirectoryError:
            raise DigitlabError(f"{path}: is a folder, expected a file") from None
        h.update(f"{names[i] if names else ''}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.cache
def code_digest() -> str:
    """A digest of the code that turns a source into digits (a change re-decodes)."""
    from importlib.metadata import version

    here = Path(__file__).resolve().parent
    h = hashlib.sha256(f"pillow {version('pillow')}\0".encode())
    for path in [here / name for name in _CODE] + [here.parent / "preprocess.py"]:
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(content: str, **options: object) -> str:
    """The entry's name: content digest, options (split, preprocessing) and code, hashed."""
    fields = {"v": CACHE_VERSION, "code": code_digest(), "content": content, **options}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]


def load_entry(key: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(images, labels, meta) of a cached entry, or None (a damaged entry is removed)."""
    path = cache_dir() / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels, meta = npz["images"], npz["labels"], json.loads(str(npz["meta"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: pruned last
    return images, labels, meta


def store_entry(key: str, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    """Write an entry atomically, then prune the least recently used beyond ``MAX_BYTES``.
    A cache that cannot be written (read-only home, full disk) only costs the next load."""
    folder = cache_dir()
    try:
        with atomic_write(folder / f"{key}.npz") as fh:
            np.savez(fh, images=images, labels=labels, meta=np.array(json.dumps(meta)))
        prune(MAX_BYTES)
    except OSError:
        pass


def prune(max_bytes: int) -> None:
    """Remove the least recently used entries until the cache holds at most ``max_bytes``."""
    entries = []
    for entry in os.scandir(cache_dir()):
        if entry.name.endswith(".npz"):
            with contextlib.suppress(OSError):
                st = entry.stat()
                entries.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            total -= size
