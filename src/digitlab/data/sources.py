"""MNIST from public mirrors: download, verify by digest and IDX header, cache atomically.

A mirror can fail in every way seen in the wild: 403/404/503, a stalled connection, a
truncated body, or an HTML error page served with status 200. Only a digest check of the
content catches the last one, so every file is verified before it enters the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic
from digitlab.paths import mnist_cache_dir


@dataclass(frozen=True)
class MnistFile:
    """One of the four canonical files, with its published digests."""

    name: str
    kind: str  # "images" or "labels"
    count: int
    raw_md5: str  # of the decompressed bytes
    raw_sha256: str
    gz_md5: str  # of the .gz as the public mirrors serve it
    gz_sha256: str

    @property
    def magic(self) -> int:
        return 0x00000803 if self.kind == "images" else 0x00000801


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train-images-idx3-ubyte.gz", "images", 60000,
        "6bbc9ace898e44ae57da46a324031adb",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    MnistFile(
        "train-labels-idx1-ubyte.gz", "labels", 60000,
        "a25bea736e30d166cdddb491f175f624",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    MnistFile(
        "t10k-images-idx3-ubyte.gz", "images", 10000,
        "2646ac647ad5339dbf082846283269ea",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    MnistFile(
        "t10k-labels-idx1-ubyte.gz", "labels", 10000,
        "27ae3e4e09519cfbb04c329615203637",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
)  # fmt: skip

# Tried in this order. yann.lecun.com is last: it has answered 403/503/404 and error pages
# with status 200.
PUBLIC_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://dataset.bj.bcebos.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

MIRROR_ENV = "DIGITLAB_MNIST_MIRROR"
MANIFEST = "manifest.json"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 2
_CHUNK = 1 << 16


def mirror_list(mirror: str | None = None) -> list[str]:
    """Mirrors to try: ``mirror`` (or ``$DIGITLAB_MNIST_MIRROR``) first, then the public ones."""
    first = mirror or os.environ.get(MIRROR_ENV) or None
    mirrors = list(PUBLIC_MIRRORS)
    if first:
        mirrors.insert(0, first)
    return mirrors


def _is_local(mirror: str) -> bool:
    return "://" not in mirror or mirror.startswith("file://")


def _local_path(mirror: str) -> Path:
    if mirror.startswith("file://"):
        return Path(urllib.request.url2pathname(mirror[len("file://") :]))
    return Path(mirror).expanduser()


def _join(mirror: str, name: str) -> str:
    return mirror.rstrip("/") + "/" + name


# ---------------------------------------------------------------------------- verification


def verify_file(path: Path, spec: MnistFile) -> str:
    """Check ``path`` is ``spec``: a digest of its content, then its IDX header.

    Returns the SHA-256 of the decompressed content; raises ``ValueError`` saying what is wrong.
    """
    gz_md5, gz_sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            gz_md5.update(chunk)
            gz_sha.update(chunk)
    raw_md5, raw_sha = hashlib.md5(), hashlib.sha256()
    header = b""
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                if len(header) < 16:
                    header += chunk[: 16 - len(header)]
                raw_md5.update(chunk)
                raw_sha.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream
        raise ValueError(f"not a complete gzip file ({exc})") from None
    gz_ok = spec.gz_md5 == gz_md5.hexdigest() or spec.gz_sha256 == gz_sha.hexdigest()
    raw_ok = spec.raw_md5 == raw_md5.hexdigest() or spec.raw_sha256 == raw_sha.hexdigest()
    if not (gz_ok or raw_ok):
        raise ValueError(f"digest mismatch (md5 of content {raw_md5.hexdigest()})")
    check_idx_header(header, spec)
    return raw_sha.hexdigest()


def check_idx_header(header: bytes, spec: MnistFile) -> None:
    """The IDX header must carry the right magic, count and (for images) 28x28."""
    need = 16 if spec.kind == "images" else 8
    if len(header) < need:
        raise ValueError("IDX header is truncated")
    magic, count = struct.unpack(">II", header[:8])
    if magic != spec.magic:
        raise ValueError(f"bad IDX magic 0x{magic:08x}, expected 0x{spec.magic:08x}")
    if count != spec.count:
        raise ValueError(f"IDX header says {count} records, expected {spec.count}")
    if spec.kind == "images":
        rows, cols = struct.unpack(">II", header[8:16])
        if (rows, cols) != (28, 28):
            raise ValueError(f"IDX images are {rows}x{cols}, expected 28x28")


# ---------------------------------------------------------------------------- transfer


Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


class _Unreachable(ValueError):
    """The mirror did not answer at all (timeout, refused, no route): the other files would
    fare no better there, so the fetch skips it for them instead of waiting again."""


def _download(
    url: str, dest: Path, timeout: float, retries: int, progress: Progress | None
) -> None:
    """Fetch ``url`` into ``dest`` (a temp file), retrying what a server may get right next
    time (5xx, 429, a cut body). A mirror that does not answer at all is not retried: with
    no network, each retry would add ``timeout`` seconds per mirror before the user learns."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        if isinstance(last, _Unreachable):
            break
        if attempt:
            time.sleep(min(2.0**attempt, 8.0) * 0.5)
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "digitlab"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as out:
                total = resp.headers.get("Content-Length")
                total_n = int(total) if total and total.isdigit() else None
                done = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(url.rsplit("/", 1)[-1], done, total_n)
                if total_n is not None and done != total_n:
                    raise ValueError(f"truncated: got {done} of {total_n} bytes")
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise ValueError(f"HTTP {exc.code}") from None  # permanent: do not retry
            last = ValueError(f"HTTP {exc.code}")
        except TimeoutError:
            last = _Unreachable(f"timed out after {timeout:g}s")
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError | socket.timeout):
                last = _Unreachable(f"timed out after {timeout:g}s")
            else:
                last = _Unreachable(f"unreachable ({reason})")
        except (ConnectionError, OSError) as exc:
            last = _Unreachable(f"connection failed ({exc})")
        except http.client.HTTPException as exc:  # a cut chunked body, a non-HTTP server
            last = ValueError(f"bad HTTP response ({type(exc).__name__})")
        except ValueError as exc:
            last = exc
    assert last is not None
    raise last


def _copy_local(src: Path, dest: Path) -> None:
    if not src.is_file():
        raise ValueError("no such file")
    try:
        shutil.copyfile(src, dest)
    except OSError as exc:  # a permission error, a disk error: this mirror fails, not the fetch
        raise ValueError(f"unreadable ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------- cache


def _load_manifest(cache: Path) -> dict:
    try:
        return json.loads((cache / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _cached_ok(cache: Path, spec: MnistFile, manifest: dict) -> bool:
    """A cached file counts as verified if it is unchanged since we verified it."""
    path = cache / spec.name
    entry = manifest.get(spec.name)
    if not entry or not path.is_file():
        return False
    st = path.stat()
    return entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def _reverify(path: Path, spec: MnistFile) -> str | None:
    """The SHA-256 of a cached file the manifest does not vouch for (a cache copied without
    its times, or a manifest lost), when its content is still the verified one."""
    if not path.is_file():
        return None
    try:
        return verify_file(path, spec)
    except (ValueError, OSError):
        return None  # damaged or foreign: download it again


def _remember(cache: Path, manifest: dict, spec: MnistFile, sha: str) -> None:
    """Record a verified file's size and time, so the next fetch trusts it without hashing."""
    st = (cache / spec.name).stat()
    manifest[spec.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    write_text_atomic(cache / MANIFEST, json.dumps(manifest, indent=2))


@dataclass
class FetchReport:
    """What :func:`fetch_mnist` did for each file."""

    cache_dir: Path
    sources: dict[str, str]  # file name -> "cache" or the mirror it came from
    digests: dict[str, str]  # file name -> SHA-256 of decompressed content


def fetch_mnist(
    cache_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    progress: Progress | None = None,
) -> FetchReport:
    """Make sure the four verified MNIST files are in the cache; download what is missing.

    A second call finds everything cached and touches no network. Raises
    :class:`DigitlabError` naming every mirror tried and why it failed.
    """
    cache = mnist_cache_dir(cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"cannot create cache directory {cache}: {exc.strerror}") from None
    manifest = _load_manifest(cache)
    order = list(mirrors) if mirrors is not None else mirror_list(mirror)
    sources: dict[str, str] = {}
    digests: dict[str, str] = {}
    dead: dict[str, str] = {}  # mirror -> why it did not answer: not tried again this fetch
    for spec in MNIST_FILES:
        if _cached_ok(cache, spec, manifest):
            sources[spec.name] = "cache"
            digests[spec.name] = manifest[spec.name]["sha256"]
            continue
        sha = _reverify(cache / spec.name, spec)  # copied, touched, or no manifest: check it
        if sha is not None:
            _remember(cache, manifest, spec, sha)
            sources[spec.name] = "cache"
            digests[spec.name] = sha
            continue
        failures: list[str] = []
        for m in order:
            if m in dead:
                failures.append(f"{m} (skipped: {dead[m]} for an earlier file)")
                continue
            fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=cache)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                if _is_local(m):
                    _copy_local(_local_path(m) / spec.name, tmp)
                else:
                    _download(_join(m, spec.name), tmp, timeout, retries, progress)
                sha = verify_file(tmp, spec)
                os.replace(tmp, cache / spec.name)
            except ValueError as exc:
                failures.append(f"{m} ({exc})")
                if isinstance(exc, _Unreachable):
                    dead[m] = str(exc)
                continue
            except KeyboardInterrupt:
                raise
            finally:
                tmp.unlink(missing_ok=True)
            _remember(cache, manifest, spec, sha)
            sources[spec.name] = m
            digests[spec.name] = sha
            break
        else:
            raise DigitlabError(f"could not fetch {spec.name}; tried: " + "; ".join(failures))
    return FetchReport(cache, sources, digests)


def rich_progress() -> tuple[Progress, Callable[[], None]]:
    """A progress callback drawing a Rich bar on stderr, and a function that closes it."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    bar = RichProgress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=False,
        disable=not sys.stderr.isatty(),
    )
    tasks: dict[str, int] = {}

    def update(name: str, done: int, total: int | None) -> None:
        if name not in tasks:
            if not tasks:
                bar.start()
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done)

    def close() -> None:
        if tasks:
            bar.stop()

    return update, close
