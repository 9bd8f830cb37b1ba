"""The downloader against real failure modes, served by a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from digitlab.data.sources import MIRROR_ENV, MNIST_FILES, PUBLIC_MIRRORS, fetch_mnist, mirror_list
from digitlab.errors import DigitlabError


def _break_deflate(gz: bytes) -> bytes:
    """The same file with its first deflate block marked as the reserved type 3, which every
    inflater rejects ("invalid block type") instead of failing a checksum later."""
    flags, pos = gz[3], 10
    if flags & 4:  # FEXTRA
        pos += 2 + int.from_bytes(gz[pos : pos + 2], "little")
    for flag in (8, 16):  # FNAME, FCOMMENT: NUL-terminated
        if flags & flag:
            pos = gz.index(b"\0", pos) + 1
    if flags & 2:  # FHCRC
        pos += 2
    return gz[:pos] + bytes([gz[pos] | 0b110]) + gz[pos + 1 :]


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    """GET /<mode>/<file>: serves the mirror folder, misbehaving as <mode> says."""

    def do_GET(self) -> None:
        mode, _, name = self.path.strip("/").partition("/")
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        file = Path(self.server.folder) / name  # type: ignore[attr-defined]
        if mode == "missing" or not file.is_file():
            self.send_error(404)
            return
        if mode in ("drip", "drip-head", "huge", "endless"):
            self._misbehave(mode, file)
            return
        if mode == "flaky":  # every file's first request: 503, as an overloaded server says
            seen = self.server.requests.count(self.path)  # type: ignore[attr-defined]
            if seen == 1:
                self.send_error(503)
                return
        body = file.read_bytes()
        if mode == "garbage":  # not HTTP at all
            self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
            return
        if mode == "chunked-cut":  # a chunk promises more than arrives
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            self.wfile.write(f"{len(body):x}\r\n".encode() + body[: len(body) // 2])
            self.close_connection = True
            return
        declared = len(body)
        if mode == "corrupt":
            body = _break_deflate(body)
        elif mode == "bitrot":  # inflates, but to the wrong bytes
            body = body[:40] + bytes([body[40] ^ 0x01]) + body[41:]
        elif mode == "short":  # Content-Length larger than the body
            body = body[: len(body) // 2]
        elif mode == "cut":  # a consistent response holding half a gzip
            body = body[: len(body) // 2]
            declared = len(body)
        elif mode == "html":
            body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            declared = len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)

    def _misbehave(self, mode: str, file: Path) -> None:
        """drip: the headers, then one byte a second; drip-head: the status line itself one
        byte a second; huge: a Content-Length above the file's cap; endless: zeros with no
        Content-Length until the client hangs up. Each ends after 60 s at most."""
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + b"Content-Length: %d\r\n\r\n" % file.stat().st_size
        )
        drip = head if mode == "drip-head" else file.read_bytes()
        if mode in ("drip", "huge"):
            size = 100 << 20 if mode == "huge" else file.stat().st_size
            self.wfile.write(head.replace(b"%d" % file.stat().st_size, b"%d" % size))
        elif mode == "endless":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        ends = time.monotonic() + 60
        try:
            while time.monotonic() < ends:
                if mode in ("drip", "drip-head"):
                    self.wfile.write(drip[:1])
                    drip = drip[1:]
                    self.wfile.flush()
                    time.sleep(1)
                else:
                    self.wfile.write(bytes(1 << 16))
                    self.server.sent += 1 << 16  # type: ignore[attr-defined]
        except OSError:  # the client gave up: what the test waits for
            pass
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(mnist_mirror: str):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MirrorHandler)
    httpd.folder = mnist_mirror
    httpd.requests = []
    httpd.sent = 0
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def url(server):
    server.requests.clear()
    server.sent = 0
    return lambda mode: f"http://127.0.0.1:{server.server_address[1]}/{mode}/"


@pytest.fixture
def hanging_socket():
    """A socket that accepts connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


@pytest.fixture
def hanging_url(hanging_socket):
    return f"http://127.0.0.1:{hanging_socket.getsockname()[1]}/"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not go through a proxy set in the environment."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def _fetch(cache: Path, *mirrors: str, retries: int = 0):
    return fetch_mnist(cache, mirrors=list(mirrors), timeout=1, retries=retries)


def _expected_digests() -> dict[str, str]:
    return {spec.name: spec.raw_sha256 for spec in MNIST_FILES}


def test_good_http_mirror_fills_the_cache_with_verified_files(tmp_path, url):
    report = _fetch(tmp_path, url("good"))
    assert report.digests == _expected_digests()
    assert set(report.sources.values()) == {url("good")}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [spec.name for spec in MNIST_FILES] + ["manifest.json"]
    )


@pytest.mark.parametrize(
    "mode", ["corrupt", "bitrot", "short", "cut", "chunked-cut", "missing", "html", "garbage"]
)
def test_broken_mirror_falls_back_to_the_next(tmp_path, url, mode):
    report = _fetch(tmp_path, url(mode), url("good"))
    assert report.digests == _expected_digests()
    assert set(report.sources.values()) == {url("good")}
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.slow
def test_a_503_is_retried_and_the_second_answer_is_used(tmp_path, url, server):
    progress: dict[str, list[int]] = {}

    def record(name: str, done: int, total: int | None) -> None:
        progress.setdefault(name, []).append(done)

    report = fetch_mnist(tmp_path, mirrors=[url("flaky")], timeout=5, retries=1, progress=record)
    assert report.digests == _expected_digests()
    for spec in MNIST_FILES:
        assert server.requests.count(f"/flaky/{spec.name}") == 2
        done = progress[spec.name]
        assert done == sorted(done) and done[-1] == (tmp_path / spec.name).stat().st_size


def test_without_retries_a_503_moves_on_and_is_named(tmp_path, url):
    with pytest.raises(DigitlabError, match="HTTP 503"):
        _fetch(tmp_path, url("flaky"))


def test_the_chosen_mirror_goes_first_then_the_public_ones(monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, "/from/env")
    assert mirror_list() == ["/from/env", *PUBLIC_MIRRORS]
    assert mirror_list("https://mine.example/") == ["https://mine.example/", *PUBLIC_MIRRORS]
    monkeypatch.delenv(MIRROR_ENV)
    assert mirror_list() == list(PUBLIC_MIRRORS)
    assert "ossci-datasets" in PUBLIC_MIRRORS[0] and "lecun" in PUBLIC_MIRRORS[-1]


def test_hanging_mirror_times_out_quickly_and_falls_back(tmp_path, url, hanging_url):
    start = time.monotonic()
    report = _fetch(tmp_path, hanging_url, url("good"))
    assert set(report.sources.values()) == {url("good")}
    assert time.monotonic() - start < 4 * 1 + 6  # one 1 s timeout per file, plus transfer


def test_a_mirror_that_never_answers_is_not_waited_on_again_for_the_other_files(
    tmp_path, url, hanging_socket, hanging_url
):
    report = _fetch(tmp_path, hanging_url, url("good"))
    assert set(report.sources.values()) == {url("good")}
    hanging_socket.setblocking(False)
    connections = 0
    while True:
        try:
            conn, _ = hanging_socket.accept()
        except BlockingIOError:
            break
        conn.close()
        connections += 1
    assert connections == 1  # the first file's attempt only, not one per file


def test_a_mirror_that_never_answers_is_not_retried(tmp_path, url, hanging_socket, hanging_url):
    """Retries are for servers that answer badly (5xx); with no network, three attempts per
    mirror would triple the wait before the user hears that nothing could be fetched."""
    report = _fetch(tmp_path, hanging_url, url("good"), retries=2)
    assert set(report.sources.values()) == {url("good")}
    hanging_socket.setblocking(False)
    connections = 0
    while True:
        try:
            hanging_socket.accept()[0].close()
        except BlockingIOError:
            break
        connections += 1
    assert connections == 1


def test_unreadable_local_mirror_file_is_a_failure_not_a_crash(tmp_path, url, monkeypatch):
    import shutil

    def denied(src, dst, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for spec in MNIST_FILES:
        (mirror / spec.name).write_bytes(b"x")
    monkeypatch.setattr(shutil, "copyfile", denied)
    with pytest.raises(DigitlabError, match="unreadable \\(Permission denied\\)"):
        _fetch(tmp_path / "cache", str(mirror))


def test_all_mirrors_failing_names_each_and_leaves_nothing_in_the_cache(tmp_path, url, hanging_url):
    cache = tmp_path / "cache"
    mirrors = [url("html"), url("missing"), url("short"), hanging_url, str(tmp_path / "nowhere")]
    with pytest.raises(DigitlabError) as err:
        _fetch(cache, *mirrors)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message
    for mirror, why in zip(
        mirrors, ["gzip", "HTTP 404", "truncated", "timed out", "no such file"], strict=True
    ):
        assert f"{mirror} (" in message
        assert why in message
    assert list(cache.iterdir()) == []


def test_second_fetch_is_served_from_cache_without_network(tmp_path, url, server):
    _fetch(tmp_path, url("good"))
    server.requests.clear()
    report = _fetch(tmp_path, "http://127.0.0.1:1/")
    assert set(report.sources.values()) == {"cache"}
    assert report.digests == _expected_digests()
    assert server.requests == []


def test_cache_refetches_a_file_changed_after_verification(tmp_path, url):
    _fetch(tmp_path, url("good"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    report = _fetch(tmp_path, url("good"))
    assert report.sources["t10k-labels-idx1-ubyte.gz"] == url("good")
    assert report.sources["train-images-idx3-ubyte.gz"] == "cache"
    assert report.digests == _expected_digests()


def test_a_copied_cache_or_a_lost_manifest_is_checked_again_offline(tmp_path, url, server):
    """``cp -r`` gives the files new times, so the manifest no longer vouches for them: their
    content is verified again instead of being downloaded (or refused with no network)."""
    first = tmp_path / "first"
    _fetch(first, url("good"))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, copy_function=shutil.copyfile)  # new mtimes, like cp -r
    (copy / "manifest.json").unlink()
    server.requests.clear()
    report = _fetch(copy, "http://127.0.0.1:1/")
    assert set(report.sources.values()) == {"cache"}
    assert report.digests == _expected_digests()
    assert server.requests == []
    again = _fetch(copy, "http://127.0.0.1:1/")  # recorded: trusted without hashing now
    assert set(again.sources.values()) == {"cache"}


def test_file_url_mirror_works(tmp_path, mnist_mirror):
    mirror = Path(mnist_mirror).resolve().as_uri()
    report = _fetch(tmp_path, mirror)
    assert set(report.sources.values()) == {mirror}
    assert report.digests == _expected_digests()


def test_plain_path_mirror_works_after_a_folder_without_the_files(tmp_path, mnist_mirror):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = _fetch(tmp_path / "cache", str(empty), mnist_mirror)
    assert set(report.sources.values()) == {mnist_mirror}
    assert report.digests == _expected_digests()


def test_cli_fetch_from_a_bad_mirror_exits_2_with_one_line(tmp_path, cli, monkeypatch):
    # the public mirrors come after --mirror; a dead proxy makes them fail without network
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")
    monkeypatch.delenv("no_proxy")
    result = cli(
        "data", "fetch", "--mirror", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path / "c")
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr
    assert "could not fetch" in stderr and str(tmp_path / "nowhere") in stderr
    assert not list((tmp_path / "c").iterdir())


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_cli_fetch_refuses_a_timeout_that_is_not_a_positive_number(tmp_path, cli, timeout):
    r = cli("data", "fetch", "--cache-dir", str(tmp_path / "c"), "--timeout", timeout)
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and "--timeout" in err, err
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------- slow, huge, killed


@pytest.mark.parametrize("mode", ["drip", "drip-head"])
def test_a_mirror_dripping_a_byte_a_second_is_given_up_at_the_deadline(tmp_path, url, mode):
    """Every read gets its byte within the 5 s timeout; only the per-file deadline ends it."""
    start = time.monotonic()
    with pytest.raises(DigitlabError) as err:
        fetch_mnist(tmp_path, mirrors=[url(mode)], timeout=5, retries=2, deadline=2)
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert elapsed < 3.5, elapsed
    assert "\n" not in message and "too slow: gave up after 2s" in message
    assert not list(tmp_path.glob(".*.part"))


def test_a_slow_mirror_is_not_waited_on_again_for_the_other_files(tmp_path, url, server):
    start = time.monotonic()
    report = fetch_mnist(tmp_path, mirrors=[url("drip"), url("good")], timeout=5, deadline=1.5)
    assert report.digests == _expected_digests()
    assert set(report.sources.values()) == {url("good")}
    assert [r for r in server.requests if r.startswith("/drip/")] == [
        f"/drip/{MNIST_FILES[0].name}"
    ]
    assert time.monotonic() - start < 1.5 + 3


def test_the_default_deadline_gives_each_file_its_size_at_50_kb_per_second():
    from digitlab.data.sources import file_deadline

    spec = MNIST_FILES[0]
    assert file_deadline(spec, 30) == pytest.approx(30 + 9912422 / 50_000)
    assert file_deadline(MNIST_FILES[3], 30) < 31


@pytest.mark.parametrize("mode", ["huge", "endless"])
def test_a_mirror_sending_more_than_the_cap_is_refused(tmp_path, url, server, mode):
    """huge declares 100 MB and is refused before its body; endless declares nothing and is
    refused once it passes the cap (canonical size + 50% + 64 KiB)."""
    report = _fetch(tmp_path, url(mode), url("good"), retries=2)
    assert report.digests == _expected_digests()
    assert set(report.sources.values()) == {url("good")}
    biggest = max(spec.max_size for spec in MNIST_FILES)
    assert biggest < 16_000_000
    assert server.sent < 4 * biggest + (8 << 20)  # not retried, not read past the cap
    with pytest.raises(DigitlabError, match="refused: .*cap"):
        _fetch(tmp_path / "again", url(mode))


def test_a_local_mirror_file_larger_than_the_cap_is_refused(tmp_path, mnist_mirror):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for spec in MNIST_FILES:
        shutil.copyfile(Path(mnist_mirror) / spec.name, mirror / spec.name)
    big = MNIST_FILES[3]
    with open(mirror / big.name, "ab") as fh:
        fh.write(bytes(big.max_size))
    with pytest.raises(DigitlabError, match=f"{big.name}.*refused: .* more than this file's cap"):
        _fetch(tmp_path / "cache", str(mirror))


def test_content_that_inflates_past_the_file_size_is_refused_without_inflating_it_all(tmp_path):
    import gzip

    from digitlab.data.sources import verify_file

    spec = MNIST_FILES[3]
    bomb = tmp_path / spec.name
    bomb.write_bytes(gzip.compress(bytes(200 << 20)))  # 200 MB of zeros in 200 kB
    start = time.monotonic()
    with pytest.raises(ValueError, match="decompresses to more than the 10008 bytes"):
        verify_file(bomb, spec)
    assert time.monotonic() - start < 0.5


def _start_fetch_process(cache: Path, mirror: str):
    import subprocess
    import sys

    code = (
        "import sys; from digitlab.data.sources import fetch_mnist; "
        "fetch_mnist(sys.argv[1], mirrors=[sys.argv[2]], timeout=30, deadline=120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cache), mirror])
    ends = time.monotonic() + 30
    while not list(cache.glob(".*.part")):
        assert proc.poll() is None and time.monotonic() < ends, "the fetch never started"
        time.sleep(0.05)
    return proc


def test_partial_files_of_a_killed_fetch_are_removed_by_the_next(tmp_path, url):
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = _start_fetch_process(cache, url("drip"))
    proc.kill()
    proc.wait()
    (cache / ".manifest.json.x8k2.part").write_text("{")  # killed while writing the manifest
    (cache / "notes.part").write_text("mine")  # not ours: kept
    left = sorted(p.name for p in cache.glob(".*.part"))
    assert len(left) == 2 and left[0].startswith(".manifest.json.")
    report = _fetch(cache, url("good"))
    assert report.digests == _expected_digests()
    assert not list(cache.glob(".*.part"))
    assert (cache / "notes.part").read_text() == "mine"


def test_a_running_fetch_keeps_its_partial_file_while_another_fetch_fills_the_cache(tmp_path, url):
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = _start_fetch_process(cache, url("drip"))
    try:
        live = set(cache.glob(".*.part"))
        report = _fetch(cache, url("good"))
        assert report.digests == _expected_digests()
        assert live <= set(cache.glob(".*.part"))  # not pulled from under the other fetch
    finally:
        proc.kill()
        proc.wait()


def _damage_in_place(path: Path) -> None:
    """Flip one byte in the middle; keep the size and restore the time, as bit rot would."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_cached_file_damaged_in_place_is_detected_and_fetched_again(tmp_path, url):
    _fetch(tmp_path, url("good"))
    damaged = tmp_path / "t10k-images-idx3-ubyte.gz"
    _damage_in_place(damaged)
    report = _fetch(tmp_path, url("good"))
    assert report.sources["t10k-images-idx3-ubyte.gz"] == url("good")
    assert report.sources["train-images-idx3-ubyte.gz"] == "cache"
    assert report.digests == _expected_digests()


def test_a_damaged_cached_file_with_no_mirror_names_the_file_and_the_refetch_command(tmp_path, url):
    _fetch(tmp_path, url("good"))
    damaged = tmp_path / "train-labels-idx1-ubyte.gz"
    _damage_in_place(damaged)
    with pytest.raises(DigitlabError) as err:
        _fetch(tmp_path, url("missing"))
    message = str(err.value)
    assert "\n" not in message
    assert f"damaged cached copy {damaged}" in message
    assert "digitlab data fetch" in message and "HTTP 404" in message


def test_cli_fetch_replaces_a_cached_file_damaged_in_place(tmp_path, cli, mnist_mirror):
    cache = tmp_path / "c"
    first = cli("data", "fetch", "--mirror", mnist_mirror, "--cache-dir", str(cache))
    assert first.returncode == 0, first.stderr.decode()
    _damage_in_place(cache / "train-images-idx3-ubyte.gz")
    again = cli("data", "fetch", "--mirror", mnist_mirror, "--cache-dir", str(cache))
    out = again.stdout.decode()
    assert again.returncode == 0, again.stderr.decode()
    assert f"train-images-idx3-ubyte.gz  from {mnist_mirror}  verified" in out
    assert "t10k-images-idx3-ubyte.gz  cached  verified" in out
    from digitlab.data.formats import read_idx

    assert read_idx(cache / "train-images-idx3-ubyte.gz").shape == (60000, 28, 28)
