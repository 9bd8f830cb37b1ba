"""fileio.read_regular: the one bounded reader for inputs, list files, recipes and models —
only regular files, only up to a size, and never a hang (every call has a deadline here)."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from digitlab.errors import DigitlabError
from digitlab.fileio import UnreadableFile, read_bounded, read_regular


def refusal(path, max_bytes: int = 1000, what: str = "file") -> str:
    """read_regular's message, from a thread with a 10 s deadline (a hang fails the test)."""

    def attempt() -> str:
        try:
            read_regular(path, max_bytes, what=what)
        except UnreadableFile as exc:
            assert isinstance(exc, DigitlabError) and str(exc) == f"{exc.path}: {exc.reason}"
            return exc.reason
        return "read"

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(attempt).result(timeout=10)


def test_a_regular_file_is_read_whole_up_to_the_limit(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"\x00\x01" * 500)
    assert read_regular(f, 1000) == b"\x00\x01" * 500
    assert refusal(f, 999) == "the file is 1,000 bytes; at most 999 are read"


def test_fifos_devices_folders_and_missing_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    assert (
        refusal(tmp_path / "pipe", what="model")
        == "is a FIFO (named pipe), not a regular model file"
    )
    assert refusal("/dev/zero") == "is a character device, not a regular file"
    assert refusal(tmp_path) == "is a directory, not a regular file"
    assert refusal(tmp_path / "nope", what="recipe") == (
        "cannot read the recipe (No such file or directory)"
    )
    assert refusal("bad\0name") == "not a valid file path (NUL byte)"


def test_a_fifo_with_a_writer_is_refused_too(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    fd = os.open(pipe, os.O_RDWR | os.O_NONBLOCK)  # a writer holding it open
    try:
        assert refusal(pipe) == "is a FIFO (named pipe), not a regular file"
    finally:
        os.close(fd)


def test_files_that_lie_about_their_size_are_still_bounded():
    """/proc files report size 0; the read itself stops one byte past the limit."""
    assert b"VmRSS" in read_regular("/proc/self/status", 1 << 20)
    assert refusal("/proc/self/status", 10) == "the file is over 10 bytes, the most that is read"


def test_a_stream_is_read_up_to_the_limit():
    assert read_bounded(io.BytesIO(b"0123456789"), 10, name="z") == b"0123456789"
    with open("/dev/zero", "rb") as zero, pytest.raises(UnreadableFile, match="over 10 bytes"):
        read_bounded(zero, 10, name="-", what="image")


def test_a_recipe_is_read_by_the_bounded_reader(tmp_path):
    from digitlab.recipes import load_recipe

    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:
        fh.truncate(2 << 20)  # sparse: 2 MiB of nothing
    with pytest.raises(DigitlabError, match=r"big.toml: the recipe is 2,097,152 bytes; at most"):
        load_recipe(str(big))
    os.mkfifo(tmp_path / "pipe.toml")
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(pytest.raises, DigitlabError, load_recipe, str(tmp_path / "pipe.toml"))
        assert "pipe.toml" in str(job.result(timeout=10).value)
