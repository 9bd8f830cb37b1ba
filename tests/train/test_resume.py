"""Resume never costs a run its history: SIGKILL at random moments, damaged checkpoints,
a second trainer, a finished run and a diverged one, each on real MNIST and real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from digitlab.errors import DigitlabError
from digitlab.recipes import load_recipe
from digitlab.train.loop import train
from digitlab.train.runfolder import lock_run_folder
from digitlab.train.runlog import read_metrics
from testkit import write_recipe as small_recipe


def write_recipe(folder: Path, model="softmax", iters=60, lr=0.01, rotation=0.0) -> Path:
    path = folder / f"{model}-{iters}.toml"
    small_recipe(
        path,
        name="resume",
        seed=11,
        model={"name": model},
        solver={"lr": lr},
        train={"iters": iters},
        augment={"rotation": float(rotation)},
    )
    return path


def digitlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "digitlab", *args]


def comparable(events: list[dict]) -> list[tuple]:
    return [(e["phase"], e["iter"], round(e["loss"], 6), round(e["accuracy"], 6)) for e in events]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files(run: Path) -> dict[str, bytes]:
    """The run folder's files (the lock file holds the pid of its last trainer)."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def events_now(run: Path) -> list[dict]:
    return read_metrics(run) if (run / "metrics.jsonl").is_file() else []


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    # fc-keras has dropout and the recipe rotates its images, so the RNG state and the
    # augmentation stream must survive every restart too
    recipe_path = write_recipe(tmp_path, "fc-keras", iters=100, rotation=10)
    reference = tmp_path / "reference"
    train(load_recipe(str(recipe_path)), reference, progress=False, threads=1)
    expected = comparable(read_metrics(reference))

    run = tmp_path / "run"
    # one thread: two cores shared by several trainers run each one several times slower
    cmd = digitlab("train", str(recipe_path), "--out", str(run), "--no-progress", "--threads", "1")
    rng = random.Random(6)  # kills after events 3, 8 and 13 of 16, one at a random time
    # one kill at a random time, start-up included (lock, recipe.toml, truncation); three
    # just after the Nth event, N spread over the run, where validation, checkpoints and
    # the artifact are written
    targets = iter(sorted(rng.sample(range(1, len(expected) + 1), 3)))
    moments = rng.sample(["time", "event", "event", "event"], 4)
    kills = []
    for attempt, moment in enumerate(moments):
        seen = len(events_now(run))
        if seen == len(expected):
            break  # the run finished before it could be killed again
        proc = subprocess.Popen(
            cmd + (["--resume"] if attempt else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if moment == "time":
            time.sleep(rng.uniform(0.0, 6.0))
        else:
            target = next(targets)
            deadline = time.time() + 120
            while proc.poll() is None and len(events_now(run)) < target:
                assert time.time() < deadline, "the trainer made no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append((moment, len(events_now(run))))
        # whatever the moment, what is on disk is a prefix of the uninterrupted history
        assert comparable(events_now(run)) == expected[: len(events_now(run))]

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, timeout=300)
    print("kills (moment, events on disk):", kills)
    if resumed.returncode:  # the last kill came after the test event
        assert "is finished" in one_error_line(resumed)
    assert comparable(read_metrics(run)) == expected, kills
    assert_same_weights(run, reference)
    assert sum(0 < n < len(expected) for _, n in kills) >= 2, kills  # kills came mid-run


@pytest.mark.slow  # 2-4 s: keeps `make test-fast` under 2 minutes
def test_an_empty_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    recipe = load_recipe(str(write_recipe(tmp_path, iters=60)))
    run = tmp_path / "run"
    train(recipe, run, progress=False)
    expected, weights = comparable(read_metrics(run)), (run / "model.safetensors").read_bytes()
    (run / "checkpoints" / "iter_0000060.safetensors").write_bytes(b"")  # a full disk
    (run / "model.json").unlink()  # as if killed before the artifact
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # and its test event

    result = train(recipe, run, resume=True, progress=False)
    assert result.iterations == 60
    log = (run / "train.log").read_text()
    assert "iter_0000060.safetensors: empty file (0 bytes), not a checkpoint" in log
    assert "resumed from iter_0000040.safetensors at iteration 40 of 60" in log
    assert comparable(read_metrics(run)) == expected
    assert (run / "model.safetensors").read_bytes() == weights
    assert (run / "checkpoints" / "iter_0000060.safetensors").stat().st_size > 0  # rewritten


def test_a_checkpoint_that_is_not_digitlabs_is_one_error_line_and_changes_nothing(tmp_path, cli):
    import torch
    from safetensors.torch import save_file

    recipe_path = write_recipe(tmp_path, iters=20)
    run = tmp_path / "run"
    train(load_recipe(str(recipe_path)), run, progress=False)
    only = run / "checkpoints" / "iter_0000020.safetensors"
    save_file({"w": torch.zeros(3)}, str(only))
    before = files(run)

    r = cli("train", str(recipe_path), "--out", str(run), "--resume", "--iters", "40")
    line = one_error_line(r)
    assert "none of its 1 checkpoints can be read" in line, line
    assert "not a digitlab checkpoint" in line, line
    assert files(run) == before


def test_a_second_trainer_on_a_locked_run_is_refused_with_exit_2(tmp_path, cli):
    recipe_path = write_recipe(tmp_path, iters=20)
    run = tmp_path / "run"
    train(load_recipe(str(recipe_path)), run, progress=False)
    metrics = (run / "metrics.jsonl").read_bytes()
    lock = lock_run_folder(run)  # this test process is "the trainer still running"
    try:
        r = cli("train", str(recipe_path), "--out", str(run), "--resume", "--iters", "40")
    finally:
        lock.release()
    line = one_error_line(r)
    assert f"is being trained by another process (pid {os.getpid()})" in line, line
    assert (run / "metrics.jsonl").read_bytes() == metrics
    # released: the next trainer gets the folder
    longer = load_recipe(str(recipe_path), ["train.iters=40"])
    assert train(longer, run, resume=True, progress=False).iterations == 40


@pytest.mark.slow
def test_a_running_trainer_locks_its_folder_until_it_is_killed(tmp_path):
    run = tmp_path / "run"
    cmd = digitlab("train", str(write_recipe(tmp_path, iters=100000)), "--out", str(run))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").is_file():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.02)
        with pytest.raises(DigitlabError, match=f"pid {proc.pid}"):
            lock_run_folder(run)
    finally:
        proc.kill()
        proc.wait()
    lock_run_folder(run).release()  # the kernel dropped the lock with the process


def test_resuming_a_finished_run_says_so_and_adds_no_second_test_event(tmp_path):
    recipe = load_recipe(str(write_recipe(tmp_path, iters=40)))
    run = tmp_path / "run"
    train(recipe, run, progress=False)
    before = files(run)
    with pytest.raises(DigitlabError, match="is finished .40 iterations"):
        train(recipe, run, resume=True, progress=False)
    assert files(run) == before
    tests = [e for e in read_metrics(run) if e["phase"] == "test"]
    assert [e["iter"] for e in tests] == [40]


def test_a_diverging_run_stops_with_one_error_line_and_saves_no_model(tmp_path, cli):
    recipe_path = write_recipe(tmp_path, "mlp", iters=60, lr=100)
    run = tmp_path / "run"
    r = cli("train", str(recipe_path), "--out", str(run), "--no-progress")
    line = one_error_line(r)
    assert "the training loss became nan by iteration 10" in line, line
    assert not (run / "model.json").exists() and not (run / "model.safetensors").exists()
    assert "the training loss became nan" in (run / "train.log").read_text()
    assert [json.loads(s)["phase"] for s in (run / "metrics.jsonl").read_text().splitlines()] == []
