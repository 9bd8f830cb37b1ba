"""Caffe's LMDB databases, read only: what ``convert_imageset`` and ``create_mnist.sh`` write.

Each value is a ``caffe.Datum`` protobuf: ``channels``, ``height``, ``width``, the pixels as
``data`` (uint8, channel-major, BGR for colour) or, with ``encoded`` set, the image file's
bytes; and an int ``label``. The message is defined here from Caffe's ``caffe.proto`` field
numbers with protobuf's runtime, so nothing is generated or hand-parsed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from digitlab.data.decode import ImageInput, Unreadable
from digitlab.errors import DigitlabError

# caffe.proto, message Datum (field name, number, type, repeated)
_DATUM_FIELDS = (
    ("channels", 1, "TYPE_INT32", False),
    ("height", 2, "TYPE_INT32", False),
    ("width", 3, "TYPE_INT32", False),
    ("data", 4, "TYPE_BYTES", False),
    ("label", 5, "TYPE_INT32", False),
    ("float_data", 6, "TYPE_FLOAT", True),
    ("encoded", 7, "TYPE_BOOL", False),
)


@functools.cache
def datum_class() -> type:
    """The ``caffe.Datum`` message class (proto2), built from its descriptor at run time."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="digitlab_caffe_datum.proto", package="caffe", syntax="proto2"
    )
    message = proto.message_type.add(name="Datum")
    for name, number, kind, repeated in _DATUM_FIELDS:
        label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        message.field.add(name=name, number=number, type=getattr(F, kind), label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.Datum"))


def lmdb_file(path: Path) -> Path:
    """The ``data.mdb`` of an LMDB folder (or the file itself): the bytes that define it."""
    return path if path.is_file() else path / "data.mdb"


def read_lmdb(path: str | os.PathLike) -> tuple[list[ImageInput], list[str], np.ndarray]:
    """Images (encoded bytes, or raw (H,W[,3]) pixels), record keys and labels of a Caffe
    LMDB; a record that is no usable Datum comes back as :class:`Unreadable`."""
    try:
        import lmdb
    except ImportError:
        raise DigitlabError(
            "reading a Caffe LMDB needs the lmdb package: pip install 'digitlab[caffe]'"
        ) from None
    from google.protobuf.message import DecodeError

    path = Path(path)
    folder = path.parent if path.is_file() else path
    Datum = datum_class()
    images: list[ImageInput] = []
    keys: list[str] = []
    labels: list[int] = []
    try:
        env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as exc:
        raise DigitlabError(f"{folder}: not a readable LMDB ({exc})") from None
    try:
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                name = f"{folder.name}[{key.decode('utf-8', 'replace')}]"
                datum = Datum()
                try:
                    datum.ParseFromString(value)
                except DecodeError as exc:
                    images.append(Unreadable(f"not a Caffe Datum ({exc})"))
                    keys.append(name)
                    labels.append(0)
                    continue
                if not 0 <= datum.label <= 9:
                    raise DigitlabError(f"{name}: label {datum.label} is outside 0-9")
                images.append(_datum_image(datum))
                keys.append(name)
                labels.append(datum.label)
    except lmdb.Error as exc:
        raise DigitlabError(f"{folder}: cannot read the LMDB ({exc})") from None
    finally:
        env.close()
    return images, keys, np.asarray(labels, np.int64)


def _datum_image(datum) -> ImageInput:  # noqa: ANN001 - a caffe.Datum
    if datum.encoded:
        return bytes(datum.data)
    c, h, w = datum.channels, datum.height, datum.width
    if not datum.data:
        what = "float_data (not supported)" if len(datum.float_data) else "no pixels"
        return Unreadable(f"the Datum holds {what}")
    if c not in (1, 3) or h < 1 or w < 1 or len(datum.data) != c * h * w:
        return Unreadable(f"{len(datum.data)} data bytes do not make {c}x{h}x{w} pixels")
    pixels = np.frombuffer(datum.data, np.uint8).reshape(c, h, w).transpose(1, 2, 0)
    return pixels[..., 0].copy() if c == 1 else pixels[..., ::-1].copy()  # Caffe stores BGR
