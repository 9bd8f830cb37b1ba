"""Export a split as image files in the layout the Caffe/MXNet tutorials use.

``OUT/test/000000_7.png`` … plus two list files naming every image with its label:
Caffe's ``OUT/test.txt`` (``test/000000_7.png 7``) and MXNet's ``OUT/test.lst``
(``0<TAB>7<TAB>test/000000_7.png``). The image folder is filled under a temporary name and
renamed into place, so a reader never sees half an export.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data.dataset import Dataset
from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic

FORMATS = ("png", "jpg")
JPEG_QUALITY = 95
_EXPORTED_NAME = re.compile(r"\d{6,}_\d+\.(png|jpg)")
_SAFE_SPLIT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass
class ExportReport:
    """Where an export went and how fast it ran."""

    folder: Path
    caffe_list: Path
    mxnet_list: Path
    count: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def image_name(index: int, label: int, fmt: str) -> str:
    return f"{index:06d}_{label}.{fmt}"


# ---------------------------------------------------------------------------- encoding

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


_PNG_IEND = _png_chunk(b"IEND", b"")


def encode_png(image: np.ndarray) -> bytes:
    """A valid 8-bit grayscale PNG of a (H,W) uint8 array, written directly with zlib.

    Measured on 28×28 digits: 21 µs and 240 bytes per image, against 46 µs and 254 bytes
    through Pillow; any PNG reader decodes it bit-exactly.
    """
    return next(_encode_pngs(image[None]))


def _encode_pngs(images: np.ndarray) -> Iterator[bytes]:
    n, h, w = images.shape
    rows = np.zeros((n, h, w + 1), np.uint8)  # each scanline starts with filter byte 0 (none)
    rows[:, :, 1:] = images
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit, grayscale, no interlace
    head = _PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
    for scanlines in rows:
        yield head + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)) + _PNG_IEND


def encode_jpg(image: np.ndarray) -> bytes:
    """A grayscale JPEG (lossy: pixels come back within a few levels, not exactly)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _write_images(task: tuple[str, int, np.ndarray, np.ndarray, str]) -> int:
    """Write one chunk of images; runs in a worker process."""
    folder, start, images, labels, fmt = task
    encoded = _encode_pngs(images) if fmt == "png" else map(encode_jpg, images)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i, (data, label) in enumerate(zip(encoded, labels.tolist(), strict=True)):
        fd = os.open(os.path.join(folder, image_name(start + i, label, fmt)), flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return len(labels)


# ---------------------------------------------------------------------------- export


def export_split(
    dataset: Dataset,
    out_dir: str | os.PathLike,
    split_name: str,
    fmt: str = "png",
    workers: int | None = None,
) -> ExportReport:
    """Write ``dataset`` as ``OUT/<split>/NNNNNN_<label>.<fmt>`` plus Caffe and MXNet lists.

    Uses ``workers`` processes (default: every core). An earlier export of the same split is
    replaced; a folder of that name holding anything else is left alone and refused.
    """
    fmt = fmt.lower()
    if fmt == "jpeg":
        fmt = "jpg"
    if fmt not in FORMATS:
        raise DigitlabError(f"unknown image format {fmt!r}; choose png or jpg")
    if not _SAFE_SPLIT.fullmatch(split_name):
        raise DigitlabError(f"split name {split_name!r} cannot be a folder name")
    if workers is None:
        from digitlab.system import cpu_cores

        workers = cpu_cores()
    if workers < 1:
        raise DigitlabError(f"workers must be at least 1, got {workers}")
    out = Path(out_dir).expanduser()
    final = out / split_name
    _check_replaceable(final)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"cannot create output folder {out}: {exc.strerror}") from None

    start = time.perf_counter()
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{split_name}.", suffix=".part", dir=out))
        try:
            _write_all(dataset, tmp, fmt, workers)
            _swap_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        caffe, mxnet = _write_lists(out, split_name, dataset.labels.tolist(), fmt)
    except OSError as exc:  # disk full, permissions: the user can fix these
        raise DigitlabError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    return ExportReport(final, caffe, mxnet, len(dataset), time.perf_counter() - start)


def _write_lists(out: Path, split: str, labels: list[int], fmt: str) -> tuple[Path, Path]:
    """Caffe ``split/000000_7.png 7`` and MXNet ``0<TAB>7<TAB>split/000000_7.png`` lists."""
    names = [f"{split}/{image_name(i, y, fmt)}" for i, y in enumerate(labels)]
    caffe, mxnet = out / f"{split}.txt", out / f"{split}.lst"
    write_text_atomic(caffe, "".join(f"{n} {y}\n" for n, y in zip(names, labels, strict=True)))
    write_text_atomic(
        mxnet,
        "".join(f"{i}\t{y}\t{n}\n" for i, (n, y) in enumerate(zip(names, labels, strict=True))),
    )
    for path in (caffe, mxnet):
        os.chmod(path, 0o644)  # atomic_write's temp files are private (0600); lists are shared
    return caffe, mxnet


def _check_replaceable(final: Path) -> None:
    if not final.exists():
        return
    if not final.is_dir():
        raise DigitlabError(
            f"{final} exists and is not a folder; remove it or choose another --out"
        )
    for entry in os.scandir(final):
        if not _EXPORTED_NAME.fullmatch(entry.name):
            raise DigitlabError(
                f"{final} holds {entry.name}, which is not from an export; refusing to replace it"
            )


def _write_all(dataset: Dataset, folder: Path, fmt: str, workers: int) -> None:
    n = len(dataset)
    # a few chunks per worker balance the load; each carries its images (784 B each)
    bounds = np.linspace(0, n, min(n, workers * 4) + 1, dtype=int) if n else [0]
    tasks = [
        (str(folder), int(a), dataset.images[a:b], dataset.labels[a:b], fmt)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            _write_images(task)
        return
    with ProcessPoolExecutor(workers) as pool:
        for _ in pool.map(_write_images, tasks):
            pass


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder to ``final``, moving an earlier export aside first."""
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    if not final.exists():
        os.rename(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    os.rename(final, old / "x")
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
