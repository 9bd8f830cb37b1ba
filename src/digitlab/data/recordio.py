"""MXNet's RecordIO image files (``im2rec`` output: ``.rec`` with its ``.idx``), read and written
without MXNet (whose last release, 1.9.1, needs numpy < 2).

A record is ``magic (0xced7230a) | lrecord | payload | zero padding to 4 bytes``, little
endian, where ``lrecord`` holds a continuation flag (top 3 bits) and the payload length; a
payload holding the magic at a 4-byte boundary is split there into parts flagged 1 (first),
2 (middle), 3 (last), and the magic is put back between them on reading (dmlc-core
``recordio.cc``). An image payload starts with MXNet's ``IRHeader`` (flag uint32, label
float32, id uint64, id2 uint64; when flag > 0, flag float32 labels follow) and then the
encoded image. The ``.idx`` beside lists ``id<TAB>byte offset``; reading goes through the
``.rec`` in order and does not need it.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from digitlab.data.decode import ImageInput
from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_HEADER = struct.Struct("<IfQQ")
_LENGTH_BITS = (1 << 29) - 1


def records(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) of every record of a ``.rec`` file, split parts joined."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                yield from _records(buf, size, path)
    except OSError as exc:
        raise DigitlabError(f"{path}: cannot read ({exc.strerror})") from None


def _records(buf: mmap.mmap, size: int, path: Path) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < size:
        start, parts = pos, []
        while True:
            if pos + 8 > size:
                raise DigitlabError(f"{path}: truncated record header at byte {pos}")
            magic, lrec = struct.unpack_from("<II", buf, pos)
            if magic != MAGIC:
                raise DigitlabError(f"{path}: not a RecordIO file (bad magic at byte {pos})")
            flag, length = lrec >> 29, lrec & _LENGTH_BITS
            end = pos + 8 + length
            if end > size:
                raise DigitlabError(f"{path}: record at byte {start} is truncated")
            parts.append(buf[pos + 8 : end])
            pos = end + (-length % 4)
            if flag in (0, 3):
                break
            if flag not in (1, 2):
                raise DigitlabError(f"{path}: bad continuation flag {flag} at byte {start}")
        yield start, _MAGIC_BYTES.join(parts)


def read_recordio(path: str | os.PathLike) -> tuple[list[ImageInput], list[str], np.ndarray]:
    """The encoded images, names (``file.rec[id]``) and labels of an image ``.rec`` file."""
    path = Path(path)
    images: list[ImageInput] = []
    names: list[str] = []
    labels: list[int] = []
    for offset, payload in records(path):
        if len(payload) < _IR_HEADER.size:
            raise DigitlabError(f"{path}: record at byte {offset} is too short for an IRHeader")
        flag, label, record_id, _ = _IR_HEADER.unpack_from(payload)
        body = payload[_IR_HEADER.size :]
        name = f"{path.name}[{record_id}]"
        if flag > 0:  # an array of `flag` labels precedes the image
            if flag != 1:
                raise DigitlabError(f"{name}: holds {flag} labels; a digit needs one")
            (label,) = struct.unpack_from("<f", body)
            body = body[4:]
        if not (float(label).is_integer() and 0 <= label <= 9):
            raise DigitlabError(f"{name}: label {label:g} is outside 0-9")
        images.append(body)
        names.append(name)
        labels.append(int(label))
    return images, names, np.asarray(labels, np.int64)


def write_recordio(path: str | os.PathLike, items: Iterable[tuple[int, bytes]]) -> Path:
    """Write (label, encoded image) pairs as ``path`` (.rec) and its ``.idx``, as MXNet's
    ``im2rec`` does (ids count from 0); returns the ``.rec`` path."""
    path = Path(path)
    index = []
    with atomic_write(path) as fh:
        offset = 0
        for record_id, (label, image) in enumerate(items):
            index.append(f"{record_id}\t{offset}\n")
            blob = _frame(_IR_HEADER.pack(0, float(label), record_id, 0) + image)
            fh.write(blob)
            offset += len(blob)
    with atomic_write(path.with_suffix(".idx"), "w") as fh:
        fh.write("".join(index))
    return path


def _frame(payload: bytes) -> bytes:
    """One record, split at every 4-byte-aligned magic as dmlc's RecordIOWriter does."""
    out, start = [], 0
    i = payload.find(_MAGIC_BYTES)
    while i != -1:
        if i % 4 == 0:
            out.append(_part(1 if start == 0 else 2, payload[start:i]))
            start = i + 4
        i = payload.find(_MAGIC_BYTES, i + 1)
    last = payload[start:]
    out.append(_part(3 if start else 0, last) + b"\0" * (-len(last) % 4))
    return b"".join(out)


def _part(flag: int, data: bytes) -> bytes:
    return struct.pack("<II", MAGIC, flag << 29 | len(data)) + data
