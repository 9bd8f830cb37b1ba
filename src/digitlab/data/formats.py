"""Every format digitlab reads, for callers that want the pixels exactly as stored.

The readers live beside this module, one per family: :mod:`~digitlab.data.idx` (IDX under
any name), :mod:`~digitlab.data.numpy_files` (the book's ``mnist.pkl.gz``, Keras'
``mnist.npz``), :mod:`~digitlab.data.folders` (Caffe/MXNet list files, labelled folders),
:mod:`~digitlab.data.tables` (CSV, Parquet), :mod:`~digitlab.data.caffe_lmdb` and
:mod:`~digitlab.data.recordio`; :mod:`~digitlab.data.source` puts them behind one grammar.
:func:`read_dataset` reads any source of that grammar without preprocessing or caching,
refusing any image it cannot read. A file that is not what it claims to be raises
:class:`DigitlabError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from digitlab.data.dataset import Dataset
from digitlab.data.folders import IMAGE_SUFFIXES, ListEntry, read_list_file, scan_image_folder
from digitlab.data.idx import read_idx
from digitlab.data.source import load_source, parse_source

__all__ = [
    "IMAGE_SUFFIXES",
    "ListEntry",
    "read_dataset",
    "read_idx",
    "read_list_file",
    "scan_image_folder",
]


def read_dataset(source: str | os.PathLike, split: str | None = None) -> Dataset:
    """A source exactly as stored: no preprocessing, no cache, any unreadable image refused.

    What ``data show``/``data export --source`` read: ``source`` is any path of the grammar
    of :mod:`digitlab.data.source` and ``split`` picks one split of a source holding several.
    """
    return load_source(
        parse_source(Path(source), split), preprocess=False, strict=True, cache=False
    )
