"""Caffe LMDB and MXNet RecordIO: written here as Caffe's and MXNet's tools write them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.data.caffe_lmdb import datum_class
from digitlab.data.export import encode_png
from digitlab.data.recordio import MAGIC, _frame, records, write_recordio
from digitlab.data.source import load_source
from digitlab.errors import DigitlabError

# ---------------------------------------------------------------------------- Caffe LMDB


def test_datum_has_caffe_protos_wire_format():
    """caffe.proto: channels=1 height=2 width=3 data=4 label=5 float_data=6 encoded=7; the
    bytes below are protoc's encoding of Datum{1, 2, 2, "\\1\\2\\3\\4", 7, encoded: true}."""
    Datum = datum_class()
    golden = bytes.fromhex("08011002180222040102030428073801")
    d = Datum(channels=1, height=2, width=2, data=b"\x01\x02\x03\x04", label=7, encoded=True)
    assert d.SerializeToString() == golden
    back = Datum()
    back.ParseFromString(golden)
    assert (back.channels, back.height, back.width, back.label) == (1, 2, 2, 7)


def write_caffe_lmdb(folder: Path, datums: list[bytes]) -> Path:
    """An LMDB as convert_imageset writes it: keys ``%08d_<file>``, serialized Datums."""
    import lmdb

    env = lmdb.open(str(folder), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, value in enumerate(datums):
            txn.put(f"{i:08d}_img{i}.png".encode(), value)
    env.close()
    return folder


def raw_datum(image: np.ndarray, label: int) -> bytes:
    """A raw Datum: channel-major uint8 pixels (BGR for colour), as create_mnist.sh writes."""
    chw = image[None] if image.ndim == 2 else image[..., ::-1].transpose(2, 0, 1)
    c, h, w = chw.shape
    return datum_class()(
        channels=c, height=h, width=w, data=chw.tobytes(), label=label
    ).SerializeToString()


def test_caffe_lmdb_of_raw_and_encoded_datums(tmp_path, digits, source_cache):
    datums = [
        raw_datum(im, y)
        for im, y in zip(digits.images[:60], digits.labels[:60].tolist(), strict=True)
    ]
    encoded = datum_class()(
        channels=1, height=28, width=28, encoded=True, label=int(digits.labels[60])
    )
    encoded.data = encode_png(digits.images[60])
    datums.append(encoded.SerializeToString())
    db = write_caffe_lmdb(tmp_path / "train_lmdb", datums)
    for spec in (db, db / "data.mdb"):
        assert np.array_equal(load_source(spec, preprocess=False).images, digits.images[:61])
    assert load_source(db, preprocess=False).labels.tolist() == digits.labels[:61].tolist()


def test_caffe_lmdb_colour_datums_are_bgr(tmp_path, digits, source_cache):
    """Red ink stored BGR comes back with red's weight in the grey (0.299, blue's is 0.114)."""
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = digits.images[0]
    db = write_caffe_lmdb(tmp_path / "colour", [raw_datum(rgb, int(digits.labels[0]))])
    ds = load_source(db, preprocess=False)
    assert np.array_equal(ds.images[0], np.asarray(Image.fromarray(rgb).convert("L")))
    assert ds.images[0].max() == round(0.299 * digits.images[0].max())


def test_lmdb_with_a_label_outside_0_9_or_a_bad_record(tmp_path, digits, source_cache):
    db = write_caffe_lmdb(tmp_path / "bad", [raw_datum(digits.images[0], 10)])
    with pytest.raises(DigitlabError, match=r"bad\[00000000_img0.png\]: label 10 is outside 0-9"):
        load_source(db)
    good = raw_datum(digits.images[1], 2)
    db = write_caffe_lmdb(tmp_path / "junk", [good, b"\xff\xff\xff not protobuf"])
    ds = load_source(db, preprocess=False)
    assert len(ds) == 1 and "not a Caffe Datum" in ds.skipped[0]
    with pytest.raises(DigitlabError, match="not a Caffe Datum .*strict"):
        load_source(db, preprocess=False, strict=True)


# ---------------------------------------------------------------------------- RecordIO


def test_record_framing_is_dmlc_recordio():
    """dmlc-core recordio.cc: magic, lrecord = flag << 29 | length, payload, zero padding;
    a magic at a 4-byte boundary of the payload splits it (flags 1, 2, 3)."""
    magic = struct.pack("<I", MAGIC)
    assert _frame(b"abcde") == magic + struct.pack("<I", 5) + b"abcde\0\0\0"
    split = _frame(b"AAAA" + magic + b"BBBB" + magic + b"C")
    assert split == (
        magic + struct.pack("<I", 1 << 29 | 4) + b"AAAA"
        + magic + struct.pack("<I", 2 << 29 | 4) + b"BBBB"
        + magic + struct.pack("<I", 3 << 29 | 1) + b"C\0\0\0"
    )  # fmt: skip
    assert _frame(b"A" + magic + b"xyz") == magic + struct.pack("<I", 8) + b"A" + magic + b"xyz"


def test_rec_file_with_split_records_reads_back(tmp_path, digits, source_cache):
    pngs = [encode_png(im) for im in digits.images[:50]]
    # a payload with the magic at a 4-byte boundary (after the 24-byte IRHeader) is split in
    # parts; Pillow ignores bytes after a PNG's end
    pad = -(24 + len(pngs[3])) % 4
    pngs[3] += b"\0" * pad + struct.pack("<I", MAGIC) + b"tail"
    rec = write_recordio(
        tmp_path / "train.rec", zip(digits.labels[:50].tolist(), pngs, strict=True)
    )
    assert len(list(records(rec))) == 50
    assert (tmp_path / "train.idx").read_text().splitlines()[1].startswith("1\t")
    for spec in (rec, tmp_path / "train.idx"):
        ds = load_source(spec, preprocess=False)
        assert np.array_equal(ds.images, digits.images[:50])
        assert ds.labels.tolist() == digits.labels[:50].tolist()


def test_bad_rec_files_say_what_is_wrong(tmp_path, digits, source_cache):
    rec = write_recordio(tmp_path / "a.rec", [(3, encode_png(digits.images[0]))] * 3)
    data = rec.read_bytes()
    rec.write_bytes(data[:-10])
    with pytest.raises(DigitlabError, match="a.rec: record at byte .* is truncated"):
        load_source(rec)
    rec.write_bytes(b"\0" * 16)
    with pytest.raises(DigitlabError, match="a.rec: not a RecordIO file"):
        load_source(rec)
    write_recordio(rec, [(12, encode_png(digits.images[0]))])
    with pytest.raises(DigitlabError, match=r"a.rec\[0\]: label 12 is outside 0-9"):
        load_source(rec)
