"""One trial: the recipe with the trial's settings, trained into SWEEP/trial-NNN, and its row
of results; and the grid sweep, which runs its trials here or in worker processes."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError
from digitlab.sweep.space import grid_points, short_key, show_value
from digitlab.sweep.spec import Echo, SweepSpec, load_trial_recipe

METRIC_KEYS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "iterations",
    "epochs",
    "train_seconds",
)


def trial_dir(spec: SweepSpec, number: int) -> Path:
    return spec.out / f"trial-{number:03d}"


def train_trial(
    spec: SweepSpec,
    number: int,
    params: dict[str, Any],
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
    reuse: bool = False,
) -> dict[str, Any]:
    """Train one trial; its result row. With ``reuse`` (a grid trial, whose folder always
    means the same settings) a finished run is reused and a killed one resumed."""
    from digitlab.train.distributed import threads_per_worker
    from digitlab.train.loop import train

    run_dir = trial_dir(spec, number)
    if reuse and (run_dir / "model.json").is_file():
        metrics = json.loads((run_dir / "model.json").read_text())["metrics"]
        return make_row(spec, number, params, "COMPLETE", metrics, run_dir, reused=True)
    recipe = load_trial_recipe(spec, params)
    resume = reuse and (run_dir / "metrics.jsonl").exists()
    # the trial's log goes to its train.log; the sweep prints one line per trial instead
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
        result = train(
            recipe,
            run_dir,
            resume=resume,
            device=spec.device,
            progress=False,
            threads=threads_per_worker(spec.workers),
            on_validation=on_validation,
        )
    return make_row(spec, number, params, "COMPLETE", result.metrics, run_dir)


def make_row(
    spec: SweepSpec,
    number: int,
    params: dict[str, Any],
    state: str,
    metrics: dict[str, Any],
    run_dir: Path | str,
    objective: float | None = None,
    error: str = "",
    reused: bool = False,
) -> dict[str, Any]:
    """One line of the results: the trial's settings, its objective and what else it measured."""
    value = metrics.get(spec.objective, objective)
    return {
        "trial": number,
        "state": state,
        "params": params,
        "objective": None if value is None or math.isnan(value) else float(value),
        "val_accuracy": metrics.get("val_accuracy"),
        "val_loss": metrics.get("val_loss"),
        "test_accuracy": metrics.get("test_accuracy"),  # reported, never used to choose
        "iterations": metrics.get("iterations"),
        "epochs": metrics.get("epochs"),
        "train_seconds": metrics.get("train_seconds"),
        "run": str(run_dir),
        "error": error,
        "reused": reused,
    }


def trial_line(spec: SweepSpec, row: dict[str, Any]) -> str:
    """The progress line printed when a trial ends."""
    params = " ".join(
        f"{short_key(k, spec.axes)}={show_value(v)}" for k, v in row["params"].items()
    )
    head = f"trial-{row['trial']:03d} {params}:"
    value = row["objective"]
    shown = "n/a" if value is None else f"{value:.4f}"
    if row["state"] == "COMPLETE":
        took = "reused" if row["reused"] else f"{row['train_seconds'] or 0:.1f}s"
        return f"{head} {spec.objective} {shown} ({took})"
    if row["state"] == "PRUNED":
        return f"{head} pruned at iteration {row['iterations']} ({spec.objective} {shown})"
    return f"{head} {row['state'].lower()}: {row['error']}"


def say(echo: Echo | None, line: str) -> None:
    if echo is not None:
        echo(line)


# ------------------------------------------------------------------------- grid


def grid_trial(spec: SweepSpec, number: int, params: dict[str, Any]) -> dict[str, Any]:
    """A grid trial in any process; a failure becomes a FAIL row so the other trials go on."""
    try:
        return train_trial(spec, number, params, reuse=True)
    except Exception as exc:  # noqa: BLE001 - reported in the results, the sweep continues
        msg = str(exc) if isinstance(exc, DigitlabError) else f"{type(exc).__name__}: {exc}"
        return make_row(spec, number, params, "FAIL", {}, trial_dir(spec, number), error=msg)


def run_grid(spec: SweepSpec, echo: Echo | None) -> list[dict[str, Any]]:
    """Every grid point, in this process or ``spec.workers`` at a time in worker processes."""
    from concurrent.futures import as_completed

    jobs = list(enumerate(grid_points(spec.grid)))
    rows = []
    if spec.workers == 1:
        for number, params in jobs:
            rows.append(grid_trial(spec, number, params))
            say(echo, trial_line(spec, rows[-1]))
        return rows
    with worker_pool(spec.workers) as pool:
        futures = [pool.submit(grid_trial, spec, n, p) for n, p in jobs]
        for future in as_completed(futures):
            rows.append(future.result())
            say(echo, trial_line(spec, rows[-1]))
    return rows


def worker_pool(workers: int):
    """Worker processes started fresh (spawn): no copied torch thread pools or locks."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
