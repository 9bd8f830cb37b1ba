"""Running a sweep from start to results, or continuing one found in its folder."""

from __future__ import annotations

import json

from digitlab.errors import DigitlabError
from digitlab.fileio import write_text_atomic
from digitlab.sweep.results import write_results
from digitlab.sweep.spec import (
    SPEC_FILE,
    Echo,
    SweepResult,
    SweepSpec,
    check_sweep,
    describe_identity,
)
from digitlab.sweep.study import run_optuna
from digitlab.sweep.trials import run_grid


def run_sweep(spec: SweepSpec, echo: Echo | None = None) -> SweepResult:
    """Run the sweep (continuing one already in ``spec.out``) and write its results and plot.

    ``echo`` receives one line per finished trial; each trial's own log is its train.log.
    """
    check_sweep(spec)
    _claim_folder(spec)
    rows = run_grid(spec, echo) if spec.grid else run_optuna(spec, echo)
    return write_results(spec, rows)


def _claim_folder(spec: SweepSpec) -> None:
    """Record the sweep in its folder; a folder holding a different sweep is refused."""
    path = spec.out / SPEC_FILE
    mine = spec.identity()
    if path.is_file():
        try:
            theirs = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            theirs = None
        if theirs != mine:
            raise DigitlabError(
                f"{spec.out} holds another sweep ({describe_identity(theirs)}); use another --out"
            )
        return
    write_text_atomic(path, json.dumps(mine, indent=2) + "\n")
