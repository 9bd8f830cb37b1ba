"""Samples of a user's own handwriting, saved from the drawing page (``digitlab serve --collect
DIR``) as ``DIR/<label>/<hash>.png``: the class-per-subfolder tree that the image-folder reader
(and so ``digitlab train finetune --data DIR``) reads, with ``DIR/none/`` for "not a digit".

Only the label comes from the client, and only as one of :data:`LABELS`; the file name is the
SHA-256 of the PNG written, so no field of a request can reach outside DIR, and saving the
same drawing twice keeps one file. Each sample is re-encoded as a grey PNG at the size drawn.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from digitlab.data.folders import is_image_name
from digitlab.errors import DigitlabError
from digitlab.fileio import write_bytes_atomic
from digitlab.preprocess import ImageTooLarge, load_image, prepare

LABELS = (*(str(d) for d in range(10)), "none")
MAX_SAMPLE_SIDE = 560  # the widest pad the page draws (number mode): a sample is one canvas


class CollectRefused(Exception):
    """A sample the store will not take for a reason other than its image (HTTP ``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Saved:
    label: str
    file: str  # relative to DIR, e.g. "7/3f2a….png"
    duplicate: bool  # the same drawing was already there


class SampleStore:
    """The folder DIR of ``--collect``: counts its samples and adds new ones, at most
    ``max_files`` in all (counted on disk, under a lock that several workers share)."""

    def __init__(self, folder: str | os.PathLike, max_files: int, max_pixels: int) -> None:
        self.given = os.fspath(folder)
        self.root = Path(folder).expanduser().resolve()
        self.max_files = max_files
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DigitlabError(
                f"--collect {self.given}: cannot create it ({exc.strerror})"
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise DigitlabError(f"--collect {self.given}: the folder is not writable")

    def finetune_command(self) -> str:
        """What to run to personalise the model with these samples."""
        return f"digitlab train finetune --init bundled --data {shlex.quote(self.given)}"

    def counts(self) -> dict[str, int]:
        """Samples per label (images in ``DIR/<label>/``, as the image-folder reader sees them)."""
        return {label: self._count(self.root / label) for label in LABELS}

    def save(self, label: str, data: bytes) -> Saved:
        """Write one sample under ``DIR/label/``; the caller has checked ``label``."""
        if label not in LABELS:  # the endpoint validates; this keeps any other caller inside DIR
            raise CollectRefused(422, f"label must be one of {', '.join(LABELS)}")
        png = sample_png(data, self.max_pixels)
        folder = self._label_folder(label)
        name = hashlib.sha256(png).hexdigest()[:32] + ".png"
        with self._exclusive():
            if (folder / name).is_file():
                return Saved(label, f"{label}/{name}", duplicate=True)
            total = sum(self.counts().values())
            if total >= self.max_files:
                raise CollectRefused(
                    409,
                    f"the collect folder holds {total:,} samples, the most allowed "
                    f"(--collect-max {self.max_files:,}); move some away or raise the limit",
                )
            write_bytes_atomic(folder / name, png)
        return Saved(label, f"{label}/{name}", duplicate=False)

    def _label_folder(self, label: str) -> Path:
        folder = self.root / label
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        # A link or a file planted at DIR/<label> must not send the sample elsewhere.
        if folder.is_symlink() or not folder.is_dir() or folder.resolve().parent != self.root:
            raise CollectRefused(409, f"{label}/ in the collect folder is not a folder inside it")
        return folder

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One writer at a time, across threads and across ``--workers`` processes (an
        ``flock`` on DIR itself), so the count cannot pass ``max_files``."""
        with self._lock:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the only descriptor drops the flock

    @staticmethod
    def _count(folder: Path) -> int:
        try:
            with os.scandir(folder) as entries:
                return sum(1 for e in entries if is_image_name(e.name) and e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return 0


def sample_png(data: bytes, max_pixels: int) -> bytes:
    """The drawing as a grey PNG at its own size; refused when it is not an image (422), when
    it is larger than a canvas (413) or when nothing is drawn on it (422)."""
    img = load_image(data, max_pixels=max_pixels)
    if max(img.size) > MAX_SAMPLE_SIDE:
        raise ImageTooLarge(
            f"the sample is {img.size[0]}x{img.size[1]} pixels; a sample is one drawing, "
            f"at most {MAX_SAMPLE_SIDE}x{MAX_SAMPLE_SIDE}"
        )
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        paper = Image.new("RGBA", img.size, "white")
        img = Image.alpha_composite(paper, img.convert("RGBA"))  # transparent is paper
    gray = img.convert("L")
    if prepare(gray).empty:
        raise DigitlabError("nothing is drawn in the sample")
    buf = io.BytesIO()
    gray.save(buf, "PNG", optimize=True)
    return buf.getvalue()
