"""Sweeps: train one recipe many times with different settings and rank the runs by validation.

A grid sweep trains every combination of the listed values; an Optuna sweep lets TPE choose
each next trial from declared ranges and prunes a trial whose validation score falls below the
median of the finished trials at the same iteration. A trial is the recipe with its settings
applied as ``--set`` overrides, trained into its own run folder ``SWEEP/trial-NNN``.

The objective is a validation metric (accuracy or loss); a recipe that validates on the test
split is refused, so nothing is ever chosen on test. Test accuracy is recorded beside, only to
be read.

Optuna keeps its study in ``SWEEP/study.db`` (SQLite) unless ``storage`` names another database
URL; several processes or machines that open the same study share its trials.

    from digitlab.sweep import SweepSpec, parse_grid, run_sweep
    spec = SweepSpec("gluon-lenet5", Path("runs/sweep"), grid=(parse_grid("solver.lr=0.5,1.5"),),
                     overrides=("data.train_split=train50k", "data.val_split=val"))
    run_sweep(spec).best
"""

from digitlab.sweep.results import sort_rows, table, write_results
from digitlab.sweep.run import run_sweep
from digitlab.sweep.space import (
    Axis,
    format_value,
    grid_points,
    overrides_for,
    parse_grid,
    parse_range,
    show_value,
)
from digitlab.sweep.spec import DIRECTIONS, SweepResult, SweepSpec, check_sweep
from digitlab.sweep.study import study_rows
from digitlab.sweep.trials import train_trial, trial_line

__all__ = [
    "DIRECTIONS",
    "Axis",
    "SweepResult",
    "SweepSpec",
    "check_sweep",
    "format_value",
    "grid_points",
    "overrides_for",
    "parse_grid",
    "parse_range",
    "run_sweep",
    "show_value",
    "sort_rows",
    "study_rows",
    "table",
    "train_trial",
    "trial_line",
    "write_results",
]
