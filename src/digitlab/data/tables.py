"""Tables of digits: Kaggle's CSV, ``path,label`` CSVs, and Parquet as Hugging Face saves it.

Kaggle's Digit Recognizer ships ``train.csv`` (``label,pixel0..pixel783``, one digit a row)
and ``test.csv`` (the pixel columns only); :func:`read_kaggle_csv` reads both, the second
without labels (for ``predict``). A Hugging Face ``datasets`` Parquet file holds an image
column of structs (``bytes`` of a PNG, ``path``) and a ``label`` column;
:func:`read_parquet_images` returns the encoded images for the decoder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError

PIXELS = [f"pixel{i}" for i in range(784)]
_PATH_COLUMNS = ("path", "file", "filename", "image")


def csv_layout(path: Path) -> str:
    """``"kaggle"`` (label + 784 pixels), ``"kaggle-unlabelled"`` (784 pixels) or ``"paths"``
    (``path,label``), told from the header line."""
    header = _header(path)
    if header == ["label", *PIXELS]:
        return "kaggle"
    if header == PIXELS:
        return "kaggle-unlabelled"
    if len(header) == 2 and header[0].lower() in _PATH_COLUMNS and header[1].lower() == "label":
        return "paths"
    shown = ",".join(header[:3]) + (",..." if len(header) > 3 else "")
    raise DigitlabError(
        f"{path}: not a CSV of digits (header {shown!r}); expected Kaggle's"
        " label,pixel0,...,pixel783 (or pixel0,...,pixel783 alone) or path,label"
    )


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            row = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DigitlabError(f"{path}: cannot read the CSV ({exc})") from None
    return [c.strip() for c in row]


def read_kaggle_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N,28,28) uint8 and labels (N,) int64 of a Kaggle CSV; labels are None for the
    unlabelled ``test.csv`` layout. A row of the wrong length or a value outside 0-255 is
    refused naming its line."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = Path(path)
    layout = csv_layout(path)
    if layout == "paths":
        raise DigitlabError(f"{path}: a path,label CSV, not Kaggle's pixel layout")
    columns = PIXELS if layout == "kaggle-unlabelled" else ["label", *PIXELS]
    types = {c: pa.int32() for c in columns}
    try:
        table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as exc:
        raise DigitlabError(_csv_problem(path, len(columns), exc)) from None
    except OSError as exc:
        raise DigitlabError(f"{path}: cannot read the CSV ({exc})") from None
    values = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns], axis=1)
    pixels = values[:, -784:]
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        row, col = np.argwhere((pixels < 0) | (pixels > 255))[0]
        raise DigitlabError(f"{path}:{row + 2}: pixel{col} = {pixels[row, col]} is outside 0-255")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    if layout == "kaggle-unlabelled":
        return images, None
    labels = values[:, 0].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        row = int(np.argmax((labels < 0) | (labels > 9)))
        raise DigitlabError(f"{path}:{row + 2}: label {labels[row]} is outside 0-9")
    return images, labels


def _csv_problem(path: Path, width: int, exc: Exception) -> str:
    """Arrow's parse error names no line (it parses in parallel): find the first bad row."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for number, row in enumerate(csv.reader(fh), 1):
            if len(row) != width and any(cell.strip() for cell in row):
                return f"{path}:{number}: row has {len(row)} values, expected {width}"
            if number > 1 and any(not cell.strip().lstrip("-").isdigit() for cell in row):
                bad = next(c for c in row if not c.strip().lstrip("-").isdigit())
                return f"{path}:{number}: {bad.strip()!r} is not an integer"
    return f"{path}: cannot parse the CSV ({str(exc).splitlines()[0][:200]})"


@dataclass(frozen=True)
class PathRow:
    """One row of a ``path,label`` CSV, its path resolved against the CSV's folder."""

    path: Path
    label: int
    line: int


def read_path_csv(path: str | os.PathLike) -> list[PathRow]:
    """The rows of a ``path,label`` CSV (a header first; quoted paths may hold commas)."""
    path = Path(path)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for number, row in enumerate(reader, 2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 2:
                    raise DigitlabError(f"{path}:{number}: row has {len(row)} values, expected 2")
                label = row[1].strip()
                if not (len(label) == 1 and label.isdigit()):
                    raise DigitlabError(f"{path}:{number}: label {label!r} is not a digit 0-9")
                rows.append(PathRow(path.parent / row[0].strip(), int(label), number))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DigitlabError(f"{path}: cannot read the CSV ({exc})") from None
    if not rows:
        raise DigitlabError(f"{path}: the CSV lists no images")
    return rows


# ---------------------------------------------------------------------------- Parquet


def read_parquet_images(path: str | os.PathLike) -> tuple[list[bytes | None], np.ndarray]:
    """The encoded images (None where a row has no bytes) and labels of a Parquet file in the
    Hugging Face ``datasets`` layout: an image column of ``{bytes, path}`` structs (or plain
    binary) and an integer ``label`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DigitlabError(f"{path}: not a readable Parquet file ({exc})") from None
    names = ", ".join(schema.names)
    if "label" not in schema.names:
        raise DigitlabError(f"{path}: no 'label' column (columns: {names})")
    if not pa.types.is_integer(schema.field("label").type):
        raise DigitlabError(f"{path}: the 'label' column is {schema.field('label').type}, not int")
    image_col = _image_column(schema)
    if image_col is None:
        raise DigitlabError(
            f"{path}: no image column (a struct with 'bytes', or binary) among: {names}"
        )
    try:
        table = pq.read_table(path, columns=[image_col, "label"])
    except (pa.ArrowException, OSError) as exc:
        raise DigitlabError(f"{path}: cannot read the Parquet file ({exc})") from None
    column = table.column(image_col).combine_chunks()
    if pa.types.is_struct(column.type):
        column = column.field("bytes")
    images = column.to_pylist()
    labels_raw = table.column("label").to_numpy(zero_copy_only=False)
    if labels_raw.dtype.kind == "f":  # nulls turn an integer column into floats
        row = int(np.argmax(np.isnan(labels_raw)))
        raise DigitlabError(f"{path}: row {row} has no label")
    labels = labels_raw.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        row = int(np.argmax((labels < 0) | (labels > 9)))
        raise DigitlabError(f"{path}: row {row} has label {labels[row]}, outside 0-9")
    return images, labels


def _image_column(schema) -> str | None:  # noqa: ANN001 - a pyarrow.Schema
    import pyarrow as pa

    for field in schema:
        t = field.type
        if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
            return field.name
    for field in schema:
        if field.name != "label" and (
            pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
        ):
            return field.name
    return None
