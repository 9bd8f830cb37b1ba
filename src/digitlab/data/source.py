"""One grammar for every data source, wherever a split is named.

    train, train50k, val, test   MNIST's splits (fetched into the cache as today)
    FOLDER                       class subfolders 0/ ... 9/ (torchvision's ImageFolder; none/
                                 for images that are not a digit, label 10), or digitlab's
                                 INDEX_LABEL.png files (``data export`` and ``data augment``)
    FOLDER:SPLIT                 one split folder of an export, or of a folder of IDX pairs
    LIST.txt, LIST.lst           Caffe ``path label`` / MXNet ``index<TAB>label<TAB>path``
    FILE.csv                     Kaggle's ``label,pixel0..pixel783``, or ``path,label``
    mnist.pkl.gz:SPLIT           the book's file: train (its 50k), val, test
    mnist.npz:SPLIT              Keras' file: train, test, train50k, val
    IDX                          an IDX images or labels file under any name, raw or .gz
    FILE.parquet                 Hugging Face ``datasets`` (image {bytes, path}, label)
    LMDB                         Caffe's convert_imageset output (the folder or its data.mdb)
    FILE.rec                     MXNet's im2rec output

:func:`parse_source` tells what a spec is (and refuses a bad one before anything is read);
:func:`load_source` reads it into a :class:`Dataset`. Images (of files, lists, Parquet, LMDB
and RecordIO) go through ``predict``'s preprocessing unless ``preprocess=False``; pixel
arrays (IDX, pickle, npz, Kaggle CSV) are MNIST's 28x28 form by definition and are taken as
they are. Decoded sources are cached by content (:mod:`digitlab.data.cache`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data import SOURCE_HELP, folders, idx, numpy_files
from digitlab.data import cache as source_cache
from digitlab.data.dataset import SPLITS, Dataset, load_split, split_of
from digitlab.data.decode import ImageInput, Unreadable, decode_all
from digitlab.errors import DigitlabError

_PICKLE_SPLITS = ("train", "val", "valid", "test", "train50k")
_EXPORT_SPLITS = ("train", "test", "train50k", "val", "valid")


@dataclass(frozen=True)
class Source:
    """What a spec names: its ``kind``, the file or folder, and the split within it."""

    spec: str
    kind: str  # mnist idx idx-folder pickle npz list csv parquet lmdb recordio folder export
    path: Path | None = None
    split: str | None = None

    @property
    def name(self) -> str:
        if self.path is None:
            return str(self.split)
        return self.path.name + (f":{self.split}" if self.split else "")


def parse_source(spec: str | os.PathLike, split: str | None = None) -> Source:
    """The :class:`Source` a spec names; :class:`DigitlabError` if it names none.

    A bare ``train``/``train50k``/``val``/``test`` is MNIST's split (write ``./train`` for a
    folder of that name); ``PATH:SPLIT`` picks a split of a file or folder holding several.
    """
    text = os.fspath(spec)
    if isinstance(spec, str) and text in SPLITS and split is None:
        return Source(text, "mnist", None, text)
    path = Path(text).expanduser()
    if not path.exists() and ":" in text and split is None:
        head, _, tail = text.rpartition(":")
        if tail and Path(head).expanduser().exists():
            path, split = Path(head).expanduser(), tail
    if not path.exists():
        raise DigitlabError(f"{text}: no such file or folder (a source is one of: {SOURCE_HELP})")
    kind, path = _kind_of(path)
    _check_split(kind, path, split)
    return Source(text, kind, path, split)


def _kind_of(path: Path) -> tuple[str, Path]:
    name = path.name.lower()
    if path.is_dir():
        if (path / "data.mdb").is_file():
            return "lmdb", path
        if idx.idx_pairs_in_folder(path):
            return "idx-folder", path
        if _export_splits(path):
            return "export", path
        return "folder", path
    if name.endswith(".mdb"):
        return "lmdb", path.parent
    if name.endswith(".npz"):
        return "npz", path
    if name.endswith((".pkl", ".pkl.gz", ".pickle", ".pickle.gz")):
        return "pickle", path
    if name.endswith((".lst", ".txt")):
        return "list", path
    if name.endswith(".csv"):
        return "csv", path
    if name.endswith(".parquet"):
        return "parquet", path
    if name.endswith(".rec"):
        return "recordio", path
    if name.endswith(".idx") and path.with_suffix(".rec").is_file():
        return "recordio", path.with_suffix(".rec")
    return "idx", path


def _export_splits(folder: Path) -> list[str]:
    """Split subfolders of an export (train/, test/ ..., or any with a list beside it);
    none when the folder has class subfolders."""
    dirs = [e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
    if any(folders.class_of_folder(d) is not None for d in dirs):
        return []
    return sorted(d for d in dirs if d in _EXPORT_SPLITS or (folder / f"{d}.txt").is_file())


def _check_split(kind: str, path: Path, split: str | None) -> None:
    if kind == "pickle":
        choices: tuple[str, ...] | list[str] = _PICKLE_SPLITS
    elif kind == "npz" or (kind == "idx-folder" and "" not in idx.idx_pairs_in_folder(path)):
        choices = tuple(SPLITS)
    elif kind == "export":
        choices = _export_splits(path)
        if split is None and len(choices) == 1:
            return
    else:
        if split is not None:
            raise DigitlabError(f"{path}: holds a single split; leave the split out")
        return
    if split not in choices:
        given = "" if split is None else f"no split {split!r}; "
        raise DigitlabError(f"{path}: {given}choose a split: {', '.join(choices)}")


# ---------------------------------------------------------------------------- loading


_Arrays = tuple[np.ndarray, np.ndarray]  # images (N,28,28) uint8 and labels (N,) int64


@dataclass
class _Items:
    """Images still to decode, with the names their errors are reported under."""

    images: list[ImageInput]
    names: list[str]
    labels: np.ndarray


@dataclass
class _Plan:
    """The files whose bytes define a source (named where names carry labels) and how to
    read it once they are known to be new."""

    files: list[Path] | list[str]
    names: list[str] | None
    read: Callable[[], _Arrays | _Items]
    where: Callable[[int], str] | None = None  # describes files[i] when it is missing


def load_source(
    spec: str | os.PathLike | Source,
    *,
    preprocess: bool = True,
    strict: bool = False,
    cache: bool = True,
    workers: int | None = None,
    mnist_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
) -> Dataset:
    """The digits of any source (see the module's grammar) as a :class:`Dataset`.

    Unreadable images (and, with ``preprocess``, blank ones labelled as digits) are left
    out and listed in ``Dataset.skipped``; ``strict=True`` refuses the source instead. With
    ``cache``, a decoded source is kept by content digest, so a second load of an unchanged
    source only re-hashes it; nothing is cached from a failed load, nor from a source that
    changed while it was read. ``workers`` processes decode (default: every usable core).
    """
    source = spec if isinstance(spec, Source) else parse_source(spec)
    if source.kind == "mnist":
        return load_split(str(source.split), mnist_dir, mirror)
    plan = _plan(source)
    digest = _digest(plan)
    key = source_cache.cache_key(
        digest, kind=source.kind, split=source.split, preprocess=preprocess
    )
    if cache and (hit := source_cache.load_entry(key)) is not None:
        images, labels, meta = hit
        return _finish(source, images, labels, tuple(meta["skipped"]), strict, digest)
    raw = plan.read()
    if isinstance(raw, _Items):
        images, labels, skipped = _decode(raw, preprocess, workers)
    else:
        (images, labels), skipped = raw, ()
    if not len(labels) and not skipped:
        raise DigitlabError(f"{source.path}: holds no images")
    dataset = _finish(source, images, labels, skipped, strict, digest)
    if cache and _digest(plan) == digest:  # unchanged while it was read
        source_cache.store_entry(key, images, labels, {"skipped": list(skipped)})
    return dataset


def _digest(plan: _Plan) -> str:
    try:
        return source_cache.digest_files(plan.files, plan.names)
    except source_cache.MissingFile as exc:
        if plan.where is None:
            raise
        raise DigitlabError(plan.where(exc.index)) from None


def _decode(
    items: _Items, preprocess: bool, workers: int | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    decoded = decode_all(items.images, items.names, preprocess=preprocess, workers=workers)
    errors = list(decoded.errors)
    if preprocess:  # a blank image labelled as a digit would teach the model a black 7
        for i in np.flatnonzero(decoded.empty & (items.labels < folders.NOT_A_DIGIT)):
            if errors[i] is None:
                errors[i] = f"{items.names[i]}: no ink found (a blank image)"
    keep = np.array([e is None for e in errors], bool)
    skipped = tuple(e for e in errors if e is not None)
    return decoded.images[keep], items.labels[keep], skipped


def _finish(
    source: Source,
    images: np.ndarray,
    labels: np.ndarray,
    skipped: tuple[str, ...],
    strict: bool,
    digest: str,
) -> Dataset:
    if skipped and (strict or not len(labels)):
        total = len(labels) + len(skipped)
        count = f"{len(skipped)} of {total} images unreadable"
        how = "; strict loading refuses any" if strict else ""
        raise DigitlabError(f"{skipped[0]} ({count}{how})")
    classes = 11 if len(labels) and labels.max() == folders.NOT_A_DIGIT else 10
    return Dataset(images, labels, source.name, {"source": digest}, classes, skipped)


def _plan(source: Source) -> _Plan:
    path = source.path
    assert path is not None
    kind, split = source.kind, source.split
    if kind == "idx":
        pair = idx.idx_pair(path)
        return _Plan(list(pair), None, lambda: idx.read_idx_pair(*pair))
    if kind == "idx-folder":
        return _idx_folder_plan(path, split)
    if kind == "pickle":
        return _Plan([path], None, lambda: numpy_files.read_pickle(path, split))
    if kind == "npz":
        return _Plan([path], None, lambda: _pick(numpy_files.read_npz(path), split))
    if kind == "list":
        return _list_plan(path)
    if kind == "csv":
        return _csv_plan(path)
    if kind == "parquet":
        return _Plan([path], None, lambda: _parquet_items(path))
    if kind == "lmdb":
        from digitlab.data.caffe_lmdb import lmdb_file, read_lmdb

        return _Plan([lmdb_file(path)], None, lambda: _Items(*read_lmdb(path)))
    if kind == "recordio":
        from digitlab.data.recordio import read_recordio

        return _Plan([path], None, lambda: _Items(*read_recordio(path)))
    folder = path / split if kind == "export" and split else path
    if kind == "export" and not split:
        folder = path / _export_splits(path)[0]
    return _folder_plan(folder)


def _idx_folder_plan(folder: Path, split: str | None) -> _Plan:
    pairs = idx.idx_pairs_in_folder(folder)
    if "" in pairs:
        return _Plan(list(pairs[""]), None, lambda: idx.read_idx_pair(*pairs[""]))
    wanted = "test" if split == "test" else "train"
    if wanted not in pairs:
        raise DigitlabError(f"{folder}: has no IDX files for the {split} split")

    def read() -> _Arrays:
        part = idx.read_idx_pair(*pairs[wanted])
        return _pick({"train": part, "test": part}, split)

    return _Plan(list(pairs[wanted]), None, read)


def _pick(parts: dict[str, _Arrays], split: str | None) -> _Arrays:
    """One of the tutorial splits of a train/test pair (``val`` is train's last 10,000)."""
    chosen = split_of({k: Dataset(*v) for k, v in parts.items()}, str(split))
    return chosen.images, chosen.labels


def _folder_plan(folder: Path) -> _Plan:
    entries = folders.scan_image_folder(folder)
    if not entries:
        raise DigitlabError(
            f"{folder}: no MNIST data found (expected 0-9 class subfolders of images,"
            " INDEX_LABEL.png images, split subfolders, IDX files or an LMDB)"
        )
    names = [name for name, _ in entries]
    paths = [os.path.join(folder, name) for name in names]
    labels = np.asarray([label for _, label in entries], np.int64)
    return _Plan(paths, names, lambda: _Items(list(paths), paths, labels))


def _list_plan(path: Path) -> _Plan:
    entries = folders.read_list_file(path)
    if not entries:
        raise DigitlabError(f"{path}: the list is empty")
    paths = [e.path for e in entries]
    labels = np.asarray([e.label for e in entries], np.int64)

    def where(i: int) -> str:
        if i == 0:
            return f"{path}: no such file"
        return f"{path}:{entries[i - 1].line}: no such image {entries[i - 1].path}"

    items = _Items(list(paths), [str(p) for p in paths], labels)
    return _Plan([path, *paths], None, lambda: items, where)


def _csv_plan(path: Path) -> _Plan:
    from digitlab.data import tables

    layout = tables.csv_layout(path)
    if layout == "kaggle-unlabelled":
        raise DigitlabError(
            f"{path}: holds pixels but no labels (Kaggle's test.csv); predict reads it,"
            " training and evaluation need a label column"
        )
    if layout == "kaggle":
        return _Plan([path], None, lambda: tables.read_kaggle_csv(path))  # type: ignore[return-value]
    rows = tables.read_path_csv(path)
    paths = [r.path for r in rows]
    labels = np.asarray([r.label for r in rows], np.int64)

    def where(i: int) -> str:
        if i == 0:
            return f"{path}: no such file"
        return f"{path}:{rows[i - 1].line}: no such image {rows[i - 1].path}"

    items = _Items(list(paths), [str(p) for p in paths], labels)
    return _Plan([path, *paths], None, lambda: items, where)


def _parquet_items(path: Path) -> _Items:
    from digitlab.data.tables import read_parquet_images

    blobs, labels = read_parquet_images(path)
    images: list[ImageInput] = [
        b if b is not None else Unreadable("the row holds no image bytes") for b in blobs
    ]
    return _Items(images, [f"{path.name}[row {i}]" for i in range(len(blobs))], labels)
