"""Files in and out: atomic writes (a reader sees the old file or the whole new one, never
half of one) and bounded reads (only a regular file, only up to a size, never a hang)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from digitlab.errors import DigitlabError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


# ------------------------------------------------------------------------------ bounded reads


class UnreadableFile(DigitlabError):
    """A file :func:`read_regular` refused; ``reason`` is the message without the path."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def read_regular(path: str | os.PathLike, max_bytes: int, *, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else is a user error.

    A FIFO would block ``open`` and ``read`` forever and ``/dev/zero`` never ends, so the file
    is opened non-blocking and checked on the opened descriptor (no race with a rename), then
    read to at most ``max_bytes`` + 1 bytes (``/proc`` files and growing files report a size
    that is not what a read returns). ``what`` names the file in messages ("image", "recipe").
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnreadableFile(path, f"cannot read the {what} ({exc.strerror})") from None
    except ValueError:  # a NUL byte in the path, e.g. from a list file
        raise UnreadableFile(path, f"not a valid {what} path (NUL byte)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            noun = "file" if what == "file" else f"{what} file"
            raise UnreadableFile(path, f"is {_kind(info.st_mode)}, not a regular {noun}")
        if info.st_size > max_bytes:
            raise UnreadableFile(path, _too_big(what, max_bytes, info.st_size))
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise UnreadableFile(path, _too_big(what, max_bytes))
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(path, f"cannot read the {what} ({exc.strerror})") from None
    finally:
        os.close(fd)


def read_bounded(stream: BinaryIO, max_bytes: int, *, name: str, what: str = "file") -> bytes:
    """At most ``max_bytes`` from an open stream (stdin, an upload); more is a user error."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnreadableFile(name, _too_big(what, max_bytes))
    return data


def _too_big(what: str, max_bytes: int, size: int | None = None) -> str:
    if size is None:  # only a read found out: the exact size is unknown
        return f"the {what} is over {max_bytes:,} bytes, the most that is read"
    return f"the {what} is {size:,} bytes; at most {max_bytes:,} are read"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"
