"""MNIST from public mirrors: download, verify by digest and IDX header, cache atomically.

A mirror can fail in every way seen in the wild: 403/404/503, a stalled connection, a
truncated body, or an HTML error page served with status 200. Only a digest check of the
content catches the last one, so every file is verified before it enters the cache. A mirror
can also drip a byte every few seconds (every per-read timeout passes) or send without end:
each file has a deadline and a size cap. A cached file is hashed again at every fetch, since
damage in place can keep its size and time.
"""

from __future__ import annotations

import contextlib
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
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
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
    gz_size: int  # bytes of that .gz

    @property
    def magic(self) -> int:
        return 0x00000803 if self.kind == "images" else 0x00000801

    @property
    def raw_size(self) -> int:
        return 16 + self.count * 28 * 28 if self.kind == "images" else 8 + self.count

    @property
    def max_size(self) -> int:
        """The most a mirror may send for this file. Other gzip levels of the same content
        differ by a few percent (gzip -1 of train-images: 10,979,562 bytes, +11%); half as
        much again is refused as not this file."""
        return self.gz_size + self.gz_size // 2 + 65536


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train-images-idx3-ubyte.gz", "images", 60000,
        "6bbc9ace898e44ae57da46a324031adb",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        9912422,
    ),
    MnistFile(
        "train-labels-idx1-ubyte.gz", "labels", 60000,
        "a25bea736e30d166cdddb491f175f624",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        28881,
    ),
    MnistFile(
        "t10k-images-idx3-ubyte.gz", "images", 10000,
        "2646ac647ad5339dbf082846283269ea",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        1648877,
    ),
    MnistFile(
        "t10k-labels-idx1-ubyte.gz", "labels", 10000,
        "27ae3e4e09519cfbb04c329615203637",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        4542,
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
    raw_n = 0
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                if len(header) < 16:
                    header += chunk[: 16 - len(header)]
                raw_md5.update(chunk)
                raw_sha.update(chunk)
                raw_n += len(chunk)
                if raw_n > spec.raw_size:  # a gzip bomb would take minutes to hash in full
                    raise ValueError(f"decompresses to more than the {spec.raw_size} bytes")
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

# A file must arrive at this average rate or faster: 50 kB/s is 0.4 Mbit/s, slower than any
# working line, and gives the largest file 200 s. A mirror dripping a byte every few seconds
# passes every per-read timeout, so only a clock on the whole file ends it.
MIN_RATE = 50_000


def file_deadline(spec: MnistFile, timeout: float = DEFAULT_TIMEOUT) -> float:
    """Seconds one file may take from a mirror, all its attempts together."""
    return timeout + spec.gz_size / MIN_RATE


class _Unreachable(ValueError):
    """The mirror did not answer at all (timeout, refused, no route) or too slowly: the other
    files would fare no better there, so the fetch skips it for them instead of waiting again."""


class _Refused(ValueError):
    """An answer that is wrong however often it is asked for (4xx, too large): not retried."""


class _Transfer:
    """One GET run in a daemon thread, so the caller can stop waiting at the deadline whatever
    the mirror is stuck in (DNS, TLS handshake, headers, body). Stopping also cuts the sockets
    it opened, so the thread ends at its next read instead of dripping on in the background."""

    def __init__(self, url: str, timeout: float, cap: int, progress: Progress | None) -> None:
        self.url, self.timeout, self.cap, self.progress = url, timeout, cap, progress
        self.body = bytearray()
        self.error: BaseException | None = None
        self.stopped = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def run_within(self, seconds: float) -> bytes | None:
        """The body, or None when ``seconds`` passed first; raises what the GET raised."""
        thread = threading.Thread(target=self._run, daemon=True, name="digitlab-fetch")
        thread.start()
        try:
            thread.join(max(seconds, 0.0))
        finally:  # Ctrl-C included: nothing keeps reading after the caller stopped waiting
            if thread.is_alive():
                self.stop()
        if thread.is_alive():
            self.stop()
            return None
        if self.error is not None:
            raise self.error
        return bytes(self.body)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for sock in self._socks:
                _cut(sock)

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.stopped:
                _cut(sock)

    def _run(self) -> None:
        try:
            self._get()
        except BaseException as exc:  # handed to the waiting caller
            self.error = exc

    def _get(self) -> None:
        opener = urllib.request.build_opener(_HTTPHandler(self), _HTTPSHandler(self))
        req = urllib.request.Request(self.url, headers={"User-Agent": "digitlab"})
        with opener.open(req, timeout=self.timeout) as resp:
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            if total_n is not None and total_n > self.cap:
                raise _Refused(f"refused: {total_n} bytes is more than this file's cap {self.cap}")
            name = self.url.rsplit("/", 1)[-1]
            while chunk := resp.read1(_CHUNK):  # read1: returns what one recv brought
                if self.stopped:
                    raise _Unreachable("stopped")
                self.body += chunk
                if len(self.body) > self.cap:
                    raise _Refused(f"refused: sent more than this file's cap of {self.cap} bytes")
                if self.progress:
                    self.progress(name, len(self.body), total_n)
            if total_n is not None and len(self.body) != total_n:
                raise ValueError(f"truncated: got {len(self.body)} of {total_n} bytes")


def _cut(sock: socket.socket) -> None:
    """End a socket another thread may be blocked on: its recv returns at once."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(base: type, transfer: _Transfer) -> type:
    """``base`` (an HTTP(S)Connection) telling ``transfer`` of each socket it opens."""

    class Watched(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            transfer._watch(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, transfer: _Transfer) -> None:
        super().__init__()
        self._conn = _watched(http.client.HTTPConnection, transfer)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, transfer: _Transfer) -> None:
        super().__init__()
        self._conn = _watched(http.client.HTTPSConnection, transfer)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._conn, req, context=self._context)


def _download(
    url: str,
    dest: Path,
    timeout: float,
    retries: int,
    progress: Progress | None,
    deadline: float = float("inf"),
    cap: int = 1 << 26,
) -> None:
    """Fetch ``url`` into ``dest`` (a temp file), retrying what a server may get right next
    time (5xx, 429, a cut body), all within ``deadline`` seconds and ``cap`` bytes. A mirror
    that does not answer at all is not retried: with no network, each retry would add
    ``timeout`` seconds per mirror before the user learns."""
    ends = time.monotonic() + deadline
    last: Exception | None = None
    for attempt in range(retries + 1):
        if isinstance(last, _Unreachable):
            break
        if attempt:
            time.sleep(max(0.0, min(min(2.0**attempt, 8.0) * 0.5, ends - time.monotonic())))
        transfer = _Transfer(url, timeout, cap, progress)
        try:
            body = transfer.run_within(ends - time.monotonic())
        except _Refused:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise _Refused(f"HTTP {exc.code}") from None  # permanent: do not retry
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
        else:
            if body is None:
                raise _Unreachable(f"too slow: gave up after {deadline:g}s for this file")
            _write_part(dest, body)
            return
        if time.monotonic() >= ends and not isinstance(last, _Unreachable):
            last = _Unreachable(f"too slow: gave up after {deadline:g}s for this file ({last})")
    assert last is not None
    raise last


def _write_part(dest: Path, body: bytes) -> None:
    try:
        dest.write_bytes(body)
    except OSError as exc:  # a full disk fails the fetch, whichever mirror is next
        raise DigitlabError(f"cannot write {dest}: {exc.strerror or exc}") from None


def _copy_local(src: Path, dest: Path, cap: int = 1 << 26) -> None:
    if not src.is_file():
        raise ValueError("no such file")
    if src.stat().st_size > cap:
        raise ValueError(f"refused: {src.stat().st_size} bytes is more than this file's cap {cap}")
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


def _gz_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _cached_digest(cache: Path, spec: MnistFile, manifest: dict) -> str | None:
    """The content digest of a cached file still byte-identical to the one verified. Its
    SHA-256 is recomputed every time (12 ms for all four files; a full check, gunzip
    included, is 0.4 s) because damage in place can keep the file's size and time."""
    path = cache / spec.name
    entry = manifest.get(spec.name)
    if not entry or "gz_sha256" not in entry or not path.is_file():
        return None
    if entry.get("size") != path.stat().st_size or entry["gz_sha256"] != _gz_sha256(path):
        return None
    return entry["sha256"]


def _reverify(path: Path, spec: MnistFile) -> tuple[str | None, str]:
    """(SHA-256, "") of a cached file the manifest does not vouch for (a cache copied without
    its times, or a manifest lost) whose content is still the verified one; else (None, why
    it failed), why being "" when there is no file."""
    if not path.is_file():
        return None, ""
    try:
        return verify_file(path, spec), ""
    except ValueError as exc:
        return None, str(exc)  # damaged or foreign: download it again
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _remember(cache: Path, manifest: dict, spec: MnistFile, sha: str) -> None:
    """Record a verified file's size and digests, so the next fetch trusts it after hashing
    the .gz alone."""
    path = cache / spec.name
    manifest[spec.name] = {
        "size": path.stat().st_size, "gz_sha256": _gz_sha256(path), "sha256": sha,
    }  # fmt: skip
    write_text_atomic(cache / MANIFEST, json.dumps(manifest, indent=2))


def _is_partial(name: str) -> bool:
    """A temp file of ours: a download (``.train-images-idx3-ubyte.gz.x1y2.part``) or a
    manifest being written."""
    prefixes = [f".{spec.name}." for spec in MNIST_FILES] + [f".{MANIFEST}."]
    return name.endswith(".part") and any(name.startswith(p) for p in prefixes)


# How long a fetch waits for another one that is removing partial files (it takes
# milliseconds); past it the cache is reported busy rather than waited on for ever.
LOCK_WAIT_S = 10.0


@contextlib.contextmanager
def _fetch_lock(cache: Path) -> Iterator[None]:
    """A shared lock on the cache folder for the whole fetch. A fetch that can take it
    exclusively is the only one alive, so any partial file there was left by a killed fetch
    and is removed; concurrent fetches keep theirs."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): partial files stay, nothing else changes
        yield
        return
    fd = os.open(cache, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            _remove_partials(cache)
        waited_until = time.monotonic() + LOCK_WAIT_S
        while True:  # turns the exclusive lock into a shared one, or joins the others
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > waited_until:
                    raise DigitlabError(
                        f"the MNIST cache {cache} is locked by another digitlab process "
                        f"for more than {LOCK_WAIT_S:g}s; let it finish, or stop it"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _remove_partials(cache: Path) -> None:
    for entry in os.scandir(cache):
        if _is_partial(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):  # a read-only cache: leave it
                os.unlink(entry.path)


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
    deadline: float | None = None,
) -> FetchReport:
    """Make sure the four verified MNIST files are in the cache; download what is missing
    or damaged.

    A second call hashes the cached files and touches no network. ``timeout`` bounds each
    read, ``deadline`` each file from one mirror (default :func:`file_deadline`). Raises
    :class:`DigitlabError` naming every mirror tried and why it failed.
    """
    cache = mnist_cache_dir(cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"cannot create cache directory {cache}: {exc.strerror}") from None
    with _fetch_lock(cache):
        return _fetch_into(cache, mirrors, mirror, timeout, retries, progress, deadline)


def _fetch_into(
    cache: Path,
    mirrors: Sequence[str] | None,
    mirror: str | None,
    timeout: float,
    retries: int,
    progress: Progress | None,
    deadline: float | None,
) -> FetchReport:
    manifest = _load_manifest(cache)
    order = list(mirrors) if mirrors is not None else mirror_list(mirror)
    sources: dict[str, str] = {}
    digests: dict[str, str] = {}
    dead: dict[str, str] = {}  # mirror -> why it did not answer: not tried again this fetch
    for spec in MNIST_FILES:
        sha = _cached_digest(cache, spec, manifest)
        damage = ""
        if sha is None:  # copied, damaged, or no manifest: check it in full
            sha, damage = _reverify(cache / spec.name, spec)
            if sha is not None:
                _remember(cache, manifest, spec, sha)
        if sha is not None:
            sources[spec.name] = "cache"
            digests[spec.name] = sha
            continue
        seconds = deadline if deadline is not None else file_deadline(spec, timeout)
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
                    _copy_local(_local_path(m) / spec.name, tmp, spec.max_size)
                else:
                    url = _join(m, spec.name)
                    _download(url, tmp, timeout, retries, progress, seconds, spec.max_size)
                sha = verify_file(tmp, spec)
                os.replace(tmp, cache / spec.name)
            except ValueError as exc:
                failures.append(f"{m} ({exc})")
                if isinstance(exc, _Unreachable):
                    dead[m] = str(exc)
                continue
            finally:
                tmp.unlink(missing_ok=True)
            _remember(cache, manifest, spec, sha)
            sources[spec.name] = m
            digests[spec.name] = sha
            break
        else:
            raise DigitlabError(_not_fetched(cache / spec.name, damage, failures))
    return FetchReport(cache, sources, digests)


def _not_fetched(path: Path, damage: str, failures: list[str]) -> str:
    """One line: which file, why the cached copy (if any) was not used, every mirror's answer."""
    tried = "tried: " + "; ".join(failures)
    if not damage:
        return f"could not fetch {path.name}; {tried}"
    return (
        f"could not fetch {path.name} to replace the damaged cached copy {path} ({damage}); "
        f"{tried}. Run `digitlab data fetch --mirror URL_OR_FOLDER` once a mirror is reachable"
    )


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
