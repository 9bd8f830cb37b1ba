"""Sweeps on real MNIST with tiny budgets: a grid records every trial, Optuna prunes, two
processes share one SQLite study without losing trials, and bad sweeps fail in one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitlab.errors import DigitlabError
from digitlab.recipes import load_recipe
from digitlab.sweep import SweepSpec, parse_grid, parse_range, run_sweep
from digitlab.train.loop import train
from digitlab.train.runlog import read_metrics
from testkit import write_recipe as small_recipe

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # also what every trial's process uses


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.toml"
    small_recipe(
        path,
        name="tiny",
        seed=1,
        solver={"lr": 0.1, "momentum": None},
        train={"iters": 20, "val_interval": 5, "checkpoint_interval": None},
    )
    return str(path)


def test_a_grid_of_four_trials_records_all_four_with_their_objective(tmp_path, tiny):
    out = tmp_path / "sweep"
    spec = SweepSpec(
        recipe=tiny,
        out=out,
        grid=(parse_grid("solver.lr=0.001,0.1"), parse_grid("data.batch_size=32,128")),
        workers=2,
    )
    result = run_sweep(spec)

    rows = json.loads((out / "results.json").read_text())["trials"]
    assert len(rows) == 4 and {r["state"] for r in rows} == {"COMPLETE"}
    assert sorted(r["trial"] for r in rows) == [0, 1, 2, 3]
    assert {(r["params"]["solver.lr"], r["params"]["data.batch_size"]) for r in rows} == {
        (0.001, 32), (0.001, 128), (0.1, 32), (0.1, 128),
    }  # fmt: skip
    objectives = [r["objective"] for r in rows]
    assert all(0 < v <= 1 for v in objectives) and objectives == sorted(objectives, reverse=True)
    assert all(r["objective"] == r["val_accuracy"] for r in rows)
    assert rows[0]["params"]["solver.lr"] == 0.1  # 20 steps at lr 0.001 barely move
    for r in rows:
        assert (Path(r["run"]) / "model.json").is_file()
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.best == result.rows[0]

    again = run_sweep(spec)  # a finished grid is reused, not trained again (in two processes)
    assert all(r["reused"] for r in again.rows)
    assert [r["objective"] for r in again.rows] == objectives


def test_an_optuna_sweep_prunes_trials_below_the_median(tmp_path, tiny):
    pytest.importorskip("optuna")
    out = tmp_path / "study"
    spec = SweepSpec(
        recipe=tiny,
        out=out,
        ranges=(parse_range("solver.lr=0.00001,0.1"), parse_range("data.batch_size=32:128")),
        trials=6,
        prune_after=1,
        seed=3,
    )
    result = run_sweep(spec)
    states = [r["state"] for r in result.rows]
    assert len(states) == 6 and set(states) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states and "COMPLETE" in states
    pruned = [r for r in result.rows if r["state"] == "PRUNED"]
    for r in pruned:  # stopped at a validation before the end, no model written
        last = max(e["iter"] for e in read_metrics(r["run"]) if e["phase"] == "val")
        assert last == r["iterations"] < 20
        assert not (Path(r["run"]) / "model.json").exists()
    best = result.best
    assert best is not None and best["params"]["solver.lr"] == 0.1
    assert (out / "study.db").is_file() and (out / "sweep.png").is_file()


def test_on_validation_sees_every_validation_and_can_stop_the_run(tmp_path, tiny):
    seen = []

    class Stop(Exception):
        pass

    def on_validation(it: int, val: dict) -> None:
        seen.append((it, val["accuracy"]))
        if it == 10:
            raise Stop

    with pytest.raises(Stop):
        train(load_recipe(tiny), tmp_path / "run", progress=False, on_validation=on_validation)
    assert [it for it, _ in seen] == [5, 10]
    val_events = [e for e in read_metrics(tmp_path / "run") if e["phase"] == "val"]
    assert [(e["iter"], e["accuracy"]) for e in val_events] == seen


def test_two_processes_sharing_one_sqlite_study_lose_no_trials(tmp_path, tiny):
    optuna = pytest.importorskip("optuna")
    out = tmp_path / "shared"
    cmd = [
        sys.executable, "-m", "digitlab", "sweep", tiny, "--optuna", "2",
        "--range", "solver.lr=0.01:0.5:log", "--out", str(out), "--no-prune",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
        for _ in range(2)
    ]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr.decode()
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 4  # 2 + 2
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert sorted(t.number for t in trials) == list(range(4))
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-{n:03d}" for n in range(4)]


def _run_main(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """The real entry point in this process (no subprocess start-up): exit code, stderr lines."""
    from digitlab.cli.main import main

    monkeypatch.setattr(sys, "argv", ["digitlab", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--grid", "solver.bogus=1,2"], "bogus"),
        (["--grid", "solver.lr=-1,0.1"], "greater than 0"),
        (["--grid", "solver.lr"], "KEY=V1,V2"),
        (["--grid", "solver.lr=0.1,0.3,...,1.0"], "does not land on 1.0"),
        (["--grid", "data.batch_size=1,2,...,100000"], "counts more than 10,000 values"),
        (
            ["--grid", "data.batch_size=1,2,...,200", "--grid", "solver.lr=0.01,0.02,...,1.0"],
            "the grid has 20,000 trials; at most 10,000",
        ),
        (["--optuna", "3", "--range", "bogus.lr=0.1:1"], "bogus"),
        (["--optuna", "3", "--range", "solver.lr=1:0.1"], "LO must be below HI"),
        (["--optuna", "3", "--range", "solver.lr=0:1:log"], "LO > 0"),
        (["--optuna", "3", "--range", "data.batch_size=16.5:64"], "batch_size"),
        (["--optuna", "3", "--range", "solver.lr=0.1:1:two"], "'log' or a step"),
        (["--optuna", "3"], "--range"),
        (["--range", "solver.lr=0.1:1"], "--optuna"),
        (["--grid", "solver.lr=0.1,1", "--set", "solver.lr=0.5"], "both swept and fixed"),
        (["--grid", "data.val_split=test"], "test split"),
    ],
)
def test_a_bad_sweep_fails_with_one_line_and_exit_2(
    tmp_path, tiny, monkeypatch, capsys, args, says
):
    code, err = _run_main(["sweep", tiny, *args, "--out", str(tmp_path / "s")], monkeypatch, capsys)
    assert code == 2
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_a_recipe_that_validates_on_test_is_refused_as_a_real_command(tmp_path, cli):
    r = cli("sweep", "gluon-lenet5", "--grid", "solver.lr=0.5,1.5", "--out", str(tmp_path / "s"))
    assert r.returncode == 2
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "data.val_split=val" in err[0] and "Traceback" not in err[0]


def test_ellipsis_counts_evenly_or_by_a_ratio():
    assert parse_grid("solver.lr=0.15,0.3,...,1.5").values == tuple(
        round(0.15 * k, 2) for k in range(1, 11)
    )
    assert parse_grid("data.batch_size=32,64,128,...,512").values == (32, 64, 128, 256, 512)
    assert parse_grid("data.batch_size=32,64,...,160").values == (32, 64, 96, 128, 160)
    with pytest.raises(DigitlabError, match="step evenly"):
        parse_grid("data.batch_size=32,64,100,...,512")
