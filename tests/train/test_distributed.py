"""Data-parallel training on real MNIST with 2 gloo workers: the same weights as one process,
only rank 0 writes, a killed worker stops the job, and a torchelastic restart resumes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from digitlab.recipes import load_recipe
from digitlab.train.checkpoint import load_checkpoint, parse_checkpoint
from digitlab.train.distributed import LOST_PEER_EXIT, check_shards, threads_per_worker
from digitlab.train.launch import _failure
from digitlab.train.loop import train
from digitlab.train.runlog import read_metrics
from digitlab.train.world import World
from testkit import write_recipe as small_recipe

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers

# mlp has neither BatchNorm nor dropout and the recipe no augmentation, so two workers must
# reproduce one process up to float rounding; 63 images split 32 + 31, so the share weighting
# is exercised too.


def write_recipe(folder: Path, iters: int) -> Path:
    path = folder / "ddp.toml"
    small_recipe(
        path,
        name="ddp",
        seed=5,
        model={"name": "mlp"},
        data={"batch_size": 63},
        train={"iters": iters, "val_interval": 10, "checkpoint_interval": 10},
    )
    return path


def digitlab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "digitlab", *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), k


def worker_pid(parent: int, rank: int, timeout: float = 60) -> int:
    """The pid of the descendant of ``parent`` whose environment says RANK=rank."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _descends(int(entry.name), parent):
                try:
                    env = (entry / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


def spawned_worker_pid(parent: int, run: Path, rank: int, timeout: float = 60) -> int:
    """The pid of a ``--nproc`` worker of rank 1 or more: workers are Python functions in
    spawned processes, so their RANK is not in /proc/PID/environ; rank 0 is the worker whose
    pid is in the run folder's lock file."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            main = int((run / ".lock").read_text())
        except (OSError, ValueError):
            main = None
        workers = sorted(
            int(e.name)
            for e in Path("/proc").iterdir()
            if e.name.isdigit() and _descends(int(e.name), parent) and _is_spawned_worker(e)
        )
        if main in workers and len(workers) > rank:
            return [w for w in workers if w != main][rank - 1]
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} under pid {parent}")


def _is_spawned_worker(entry: Path) -> bool:
    try:
        return b"spawn_main" in (entry / "cmdline").read_bytes()
    except OSError:
        return False


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == ancestor:
            return True
    return False


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# ---------------------------------------------------------------------------- fast checks


def test_shares_cover_a_batch_once_and_differ_by_at_most_one():
    for n, size in [(63, 2), (64, 2), (10, 3), (7, 7)]:
        parts = [World(rank=r, size=size).part(n) for r in range(size)]
        covered = [i for p in parts for i in range(n)[p]]
        assert covered == list(range(n))
        lengths = [p.stop - p.start for p in parts]
        assert max(lengths) - min(lengths) <= 1


def test_a_batch_too_small_to_share_is_refused_before_any_worker_starts(tmp_path):
    from digitlab.errors import DigitlabError

    check_shards(50000, 64, 16)  # the epoch's last batch holds 50000 % 64 = 16 images
    with pytest.raises(DigitlabError, match="17 workers cannot share a batch of 16"):
        check_shards(50000, 64, 17)
    with pytest.raises(DigitlabError, match="3 workers cannot share a batch of 2"):
        check_shards(64 + 2, 64, 3)

    proc = digitlab(
        "train", str(write_recipe(tmp_path, 30)), "--out", str(tmp_path / "run"),
        "--nproc", "2", "--set", "data.batch_size=1", cwd=tmp_path,
    )  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "2 workers cannot share a batch of 1" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_threads_per_worker_follow_omp_num_threads_else_share_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_worker(2) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) <= cores
    assert threads_per_worker(2 * cores) == 1


def test_a_checkpoint_parses_the_same_from_its_bytes(tmp_path):
    recipe = load_recipe(str(write_recipe(tmp_path, 10)))
    train(recipe, tmp_path / "run", progress=False, threads=1)
    path = tmp_path / "run" / "checkpoints" / "iter_0000010.safetensors"
    a, b = load_checkpoint(path), parse_checkpoint(path.read_bytes())
    assert a["info"] == b["info"]
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k])


# ---------------------------------------------------------------------------- two workers


def test_two_workers_give_one_process_weights_and_only_rank_0_writes(tmp_path):
    recipe_path = write_recipe(tmp_path, 30)
    single = tmp_path / "single"
    train(load_recipe(str(recipe_path)), single, progress=False, threads=1)

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ddp = tmp_path / "ddp"
    proc = digitlab(
        "train", str(recipe_path), "--out", str(ddp), "--nproc", "2", "--no-progress", cwd=cwd
    )
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()
    assert out.decode().count("test accuracy") == 1  # rank 0 alone reports

    assert_same_weights(single, ddp)
    # rank 0 alone wrote: nothing in the workers' folder, each event once, no temp files
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "ddp", "ddp.toml", "single"]
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == [
        "iter_0000010.safetensors", "iter_0000020.safetensors", "iter_0000030.safetensors"
    ]  # fmt: skip
    one, two = read_metrics(single), read_metrics(ddp)
    assert [(e["phase"], e["iter"]) for e in two] == [(e["phase"], e["iter"]) for e in one]
    for a, b in zip(one, two, strict=True):  # metrics are summed over both workers
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
        assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1e-3), (a, b)
    assert "data-parallel on 2 workers (gloo)" in (ddp / "train.log").read_text()


@pytest.mark.parametrize(
    ("codes", "blamed"),
    [
        # the killed worker, its peer aborted by gloo in the same poll (CI saw rank 0 blamed)
        ({0: -signal.SIGABRT, 1: -signal.SIGKILL}, "worker 1 of 2 (pid 101) was killed by SIGKILL"),
        ({0: LOST_PEER_EXIT, 1: -signal.SIGSEGV}, "worker 1 of 2 (pid 101) was killed by SIGSEGV"),
        ({0: -signal.SIGTERM, 1: 3}, "worker 1 of 2 (pid 101) exited with 3"),
        ({0: -signal.SIGTERM, 1: -signal.SIGABRT}, "worker 1 of 2 (pid 101) was killed by SIGABRT"),
        ({0: 5, 1: 4}, "worker 0 of 2 (pid 100) exited with 5"),
    ],
)
def test_the_worker_that_caused_a_stop_is_blamed_not_those_that_lost_it(codes, blamed):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    failures = {
        rank: ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=code, error_file="/none")
        for rank, code in codes.items()
    }
    error = _failure(ChildFailedError("digitlab", failures), nproc=2)
    assert str(error) == f"{blamed}; all workers stopped"


def test_killing_one_worker_stops_the_job_with_one_clear_error(tmp_path):
    run = tmp_path / "run"
    proc = digitlab(
        "train", str(write_recipe(tmp_path, 100000)), "--out", str(run), "--nproc", "2",
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_for(run / "checkpoints" / "iter_0000010.safetensors", proc)
        victim = spawned_worker_pid(proc.pid, run, rank=1)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert stopped_in < 30
    last = err.decode().strip().splitlines()[-1]
    assert last == f"digitlab: error: worker 1 of 2 (pid {victim}) was killed by SIGKILL; " + (
        "all workers stopped"
    )
    assert "Traceback" not in err.decode()
    assert not (run / "model.json").exists()


def test_torchrun_restart_resumes_from_the_last_checkpoint(tmp_path):
    recipe_path = write_recipe(tmp_path, 60)
    reference = tmp_path / "reference"
    train(load_recipe(str(recipe_path)), reference, progress=False, threads=1)

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "--max-restarts=1", "-m", "digitlab",
            "train", str(recipe_path), "--out", str(run), "--no-progress",
        ],
        cwd=tmp_path,
        # torchrun's shared store hands a restarted worker the last attempt's address
        env={**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        victim = worker_pid(proc.pid, rank=1)
        wait_for(run / "checkpoints" / "iter_0000020.safetensors", proc)
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-3000:]
    log = (run / "train.log").read_text()
    assert "resumed from iter_" in log, log
    assert [e["iter"] for e in read_metrics(run) if e["phase"] == "val"] == list(range(10, 61, 10))
    assert_same_weights(reference, run)
