"""Labelled images as files: list files (Caffe, MXNet) and labelled folder layouts.

:func:`read_list_file` is the one parser of list files in digitlab (``predict`` reads its
list inputs with it too) and :func:`scan_image_folder` the one reader of folder layouts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.fileio import UnreadableFile, read_regular

MAX_LIST_BYTES = 256 * 2**20  # a list of a few million lines

# the one set of image suffixes a folder or list is read for (what Pillow decodes of what
# people save digits as)
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file: the image (resolved against the list's folder) and its label."""

    path: Path
    label: int | None
    line: int


def read_list_file(path: str | os.PathLike, *, labelled: bool = True) -> list[ListEntry]:
    """The entries of a Caffe list (``path label``) or an MXNet ``.lst``
    (``index<TAB>label<TAB>path``, labels written as floats by im2rec).

    Paths may hold spaces (Caffe's label is the last field; MXNet's fields are tab-separated)
    and relative ones are resolved against the list file's folder. With ``labelled=False``
    (lists of inputs for ``predict``) a line may be just a path and labels are not checked.
    """
    path = Path(path)
    mxnet = path.name.lower().endswith(".lst")
    data = read_regular(path, MAX_LIST_BYTES, what="list file")  # never a FIFO or a device
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        where = f"{exc.reason} at byte {exc.start}"
        raise UnreadableFile(path, f"cannot read the list file: not UTF-8 text ({where})") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, label_text = _split_list_line(line, mxnet, labelled, f"{path}:{number}")
        label = None
        if label_text is not None:
            label = _digit_label(label_text)
            if label is None and labelled:
                raise DigitlabError(
                    f"{path}:{number}: label {label_text.strip()!r} is not a digit 0-9"
                )
        entries.append(ListEntry(path.parent / name, label, number))
    return entries


def _split_list_line(line: str, mxnet: bool, labelled: bool, where: str) -> tuple[str, str | None]:
    if mxnet:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) == 3:
            return fields[2].strip(), fields[1]
        if labelled or len(fields) < 2:
            raise DigitlabError(
                f"{where}: expected index<TAB>label<TAB>path, got {len(fields)} fields"
            )
        return fields[-1].strip(), None
    fields = line.strip().rsplit(None, 1)
    if len(fields) == 2 and (labelled or _digit_label(fields[1]) is not None):
        return fields[0], fields[1]
    if labelled:
        raise DigitlabError(f"{where}: expected 'path label'")
    return line.strip(), None


def _digit_label(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and 0 <= value <= 9 else None


NOT_A_DIGIT_FOLDERS = ("none", "not-a-digit")  # class folders whose images are label 10
NOT_A_DIGIT = 10
_FLAT_NAME = re.compile(r"(\d+)_(\d+)\.[A-Za-z]+")


def is_image_name(name: str) -> bool:
    """Whether a file name is an image's (by suffix; hidden files are not)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


def class_of_folder(name: str) -> int | None:
    """The label a class folder stands for: ``0``-``9``, or 10 for ``none``/``not-a-digit``."""
    if len(name) == 1 and name.isdigit():
        return int(name)
    return NOT_A_DIGIT if name.lower() in NOT_A_DIGIT_FOLDERS else None


def scan_image_folder(folder: str | os.PathLike) -> list[tuple[str, int]]:
    """(name, label) for every image of a labelled folder, names relative to the folder
    (``3/scan 12.png``, always with ``/``), in a stable order.

    Two layouts: class subfolders ``0/`` ... ``9/`` (torchvision's ImageFolder, searched
    recursively, with ``none/`` for images that are not a digit, label 10), or digitlab's
    flat ``INDEX_LABEL.png`` names (what ``data export`` and ``data augment`` write).
    Files that are not images are ignored; hidden files and folders too. Names stay strings:
    60,000 ``Path`` objects alone cost a third of a second.
    """
    folder = Path(folder)
    try:
        entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    except OSError as exc:
        raise DigitlabError(f"{folder}: cannot list the folder ({exc.strerror})") from None
    dirs = {e.name: class_of_folder(e.name) for e in entries if e.is_dir()}
    if any(label is not None for label in dirs.values()):
        return _scan_class_folders(folder, entries, dirs)
    return _scan_flat_names(folder, [e.name for e in entries if e.is_file()])


def _scan_class_folders(
    folder: Path, entries: list[os.DirEntry], dirs: dict[str, int | None]
) -> list[tuple[str, int]]:
    unknown = sorted(name for name, label in dirs.items() if label is None)
    if unknown:
        raise DigitlabError(
            f"{folder / unknown[0]}: unknown class folder; expected 0-9, or none/ for images"
            " that are not a digit"
        )
    loose = sorted(e.name for e in entries if e.is_file() and is_image_name(e.name))
    if loose:
        raise DigitlabError(f"{folder / loose[0]}: image outside the class folders 0-9")
    out: list[tuple[str, int]] = []
    for name, label in sorted(dirs.items(), key=lambda item: item[1] or 0):
        files = sorted(_images_under(folder / name, name), key=_natural_key)
        if not files:
            raise DigitlabError(f"{folder / name}: the class folder holds no images")
        out += [(f, label) for f in files]  # type: ignore[misc]
    return out


def _images_under(folder: Path, prefix: str) -> list[str]:
    out = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            out += _images_under(Path(entry.path), f"{prefix}/{entry.name}")
        elif is_image_name(entry.name):
            out.append(f"{prefix}/{entry.name}")
    return out


def _scan_flat_names(folder: Path, names: list[str]) -> list[tuple[str, int]]:
    found = []
    for name in names:
        if not is_image_name(name):
            continue
        m = _FLAT_NAME.fullmatch(name)
        if not m:
            raise DigitlabError(
                f"{folder / name}: name is not INDEX_LABEL.png (e.g. 000000_7.png) and the folder"
                " has no 0-9 subfolders"
            )
        label = int(m.group(2))
        if label > NOT_A_DIGIT:
            raise DigitlabError(f"{folder / name}: label {label} is outside 0-9 (10: not a digit)")
        found.append((int(m.group(1)), label, name))
    found.sort(key=lambda e: e[0])
    for (i, _, name), (j, _, _) in zip(found, found[1:], strict=False):
        if i == j:
            raise DigitlabError(f"{folder / name}: index {i} appears twice in {folder}")
    return [(name, label) for _, label, name in found]


_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> tuple:
    """``img2`` before ``img10``: digit runs compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(name))
