"""Reading checkpoints: only digitlab's own files are accepted, each refusal is one
DigitlabError, and nothing but a bounded regular file is ever read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from digitlab.errors import DigitlabError
from digitlab.train.checkpoint import (
    find_resume_point,
    load_checkpoint,
    read_checkpoint_bytes,
    save_checkpoint,
)


def write_checkpoint(path, iteration: int) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    info = {"iteration": iteration, "elapsed": 1.0, "best_value": None, "best_iter": 0, "stale": 0}
    save_checkpoint(path, model.state_dict(), optimizer.state_dict(), torch.get_rng_state(), info)


def test_a_checkpoint_round_trips(tmp_path):
    path = tmp_path / "iter_0000010.safetensors"
    write_checkpoint(path, 10)
    ck = load_checkpoint(path)
    assert ck["info"]["iteration"] == 10
    assert set(ck["model_state"]) == {"weight", "bias"}
    assert set(ck["optim_state"]["state"][0]) == {"momentum_buffer"}


def test_a_safetensors_file_without_digitlab_keys_is_one_error(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(DigitlabError, match="not a digitlab checkpoint"):
        load_checkpoint(plain)
    header_only = tmp_path / "header.safetensors"  # digitlab metadata, but no rng state
    save_file({"w": torch.zeros(2)}, str(header_only), metadata={"digitlab": '{"info": {}}'})
    with pytest.raises(DigitlabError, match="not a digitlab checkpoint"):
        load_checkpoint(header_only)


@pytest.mark.parametrize("content", [b"", b"\x08" + b"\0" * 7 + b"not json", b"\xff" * 64])
def test_empty_or_garbled_files_are_one_error(tmp_path, content):
    path = tmp_path / "iter_0000010.safetensors"
    path.write_bytes(content)
    with pytest.raises(DigitlabError, match="iter_0000010"):
        load_checkpoint(path)


@pytest.mark.timeout(20)
def test_a_fifo_or_a_device_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(DigitlabError, match="FIFO .*not a regular checkpoint file"):
        read_checkpoint_bytes(fifo)
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(DigitlabError, match="character device, not a regular checkpoint file"):
        read_checkpoint_bytes(zero)


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "big.safetensors"
    path.write_bytes(b"\0" * 1000)
    assert len(read_checkpoint_bytes(path, limit=1000)) == 1000
    with pytest.raises(DigitlabError, match="1,000 bytes; at most 999"):
        read_checkpoint_bytes(path, limit=999)


@pytest.mark.timeout(20)
def test_the_resume_point_is_the_newest_checkpoint_that_verifies(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert find_resume_point(tmp_path) is None
    write_checkpoint(folder / "iter_0000010.safetensors", 10)
    write_checkpoint(folder / "iter_0000020.safetensors", 20)
    (folder / "iter_0000030.safetensors").write_bytes(b"")  # a full disk
    os.mkfifo(folder / "iter_0000040.safetensors")
    (folder / "iter_0000050.safetensors").symlink_to("/dev/zero")
    point = find_resume_point(tmp_path)
    assert point is not None
    assert point.path.name == "iter_0000020.safetensors"
    assert point.checkpoint["info"]["iteration"] == 20
    assert [Path(s.split(":")[0]).name for s in point.skipped] == [
        "iter_0000050.safetensors", "iter_0000040.safetensors", "iter_0000030.safetensors"
    ]  # fmt: skip


def test_a_run_whose_checkpoints_all_fail_is_refused(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "iter_0000010.safetensors").write_bytes(b"")
    (folder / "iter_0000020.safetensors").write_bytes(b"")
    with pytest.raises(DigitlabError, match="none of its 2 checkpoints can be read"):
        find_resume_point(tmp_path)
