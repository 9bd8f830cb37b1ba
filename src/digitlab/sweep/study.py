"""Optuna sweeps: a TPE search over the declared ranges, pruning trials that fall below the
median, in a study kept in SQLite beside the runs or in any database several processes or
machines share."""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError
from digitlab.sweep.space import Axis
from digitlab.sweep.spec import (
    DIRECTIONS,
    STUDY_FILE,
    Echo,
    SweepSpec,
    describe_identity,
    load_trial_recipe,
)
from digitlab.sweep.trials import (
    METRIC_KEYS,
    make_row,
    say,
    train_trial,
    trial_dir,
    trial_line,
    worker_pool,
)

if TYPE_CHECKING:
    import optuna

    from digitlab.recipes import Recipe


def _optuna():
    try:
        import optuna
    except ImportError:
        raise DigitlabError(
            "--optuna needs the optuna package: pip install 'digitlab[sweep]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our own line says why
    return optuna


def storage_url(spec: SweepSpec) -> str:
    """The study's database: ``--storage`` or SQLite in the sweep folder."""
    return spec.storage or f"sqlite:///{(spec.out / STUDY_FILE).resolve()}"


def study_name(spec: SweepSpec) -> str:
    return spec.study_name or spec.out.resolve().name


def _storage(spec: SweepSpec, attempts: int = 5) -> optuna.storages.BaseStorage:
    """The study's database, its tables made on first use.

    Two processes opening a new database at once race to create its tables; the loser's
    error goes away on a second try, once the winner is done.
    """
    optuna = _optuna()
    url = storage_url(spec)
    # SQLite: wait for the other processes' writes instead of failing on a locked file
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # Optuna flags heartbeats as experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # a trial whose process died is marked FAIL once its heartbeat is 5 minutes old
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=300
                )
        except Exception as exc:  # noqa: BLE001 - any driver's error: one line for the user
            if attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DigitlabError(f"cannot open the study storage {url}: {first}") from None
    raise AssertionError("unreachable")


def _open_study(spec: SweepSpec, worker: int = 0) -> optuna.Study:
    """Create or join the study; a study made for other settings is refused."""
    optuna = _optuna()
    study = optuna.create_study(
        storage=_storage(spec),
        study_name=study_name(spec),
        direction=DIRECTIONS[spec.objective],
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(),
        pruner=(
            optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after)
            if spec.prune
            else optuna.pruners.NopPruner()
        ),
    )
    if spec.seed is not None:  # offset by the trials so far: a continued study must not
        # replay its random start, nor two workers draw the same points
        done = len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=spec.seed + worker + done)
    mine, theirs = spec.identity(), study.user_attrs.get("digitlab")
    if theirs is None:
        study.set_user_attr("digitlab", mine)
    elif theirs != mine:
        raise DigitlabError(
            f"study {study.study_name!r} in {storage_url(spec)} was made for "
            f"{describe_identity(theirs)}; use another --study-name or --out"
        )
    return study


def _suggest(trial: optuna.Trial, axis: Axis) -> Any:
    if not axis.is_range:
        return trial.suggest_categorical(axis.key, list(axis.values))
    if axis.integer:
        return trial.suggest_int(
            axis.key, int(axis.low), int(axis.high), step=int(axis.step or 1), log=axis.log
        )
    return trial.suggest_float(axis.key, axis.low, axis.high, step=axis.step, log=axis.log)


def _planned_iterations(recipe: Recipe) -> int:
    from digitlab.train.data import total_iterations, training_size

    return total_iterations(recipe, math.ceil(training_size(recipe) / recipe.data.batch_size))


def _objective(spec: SweepSpec, trial: optuna.Trial, echo: Echo | None) -> float:
    optuna = _optuna()
    params = {a.key: _suggest(trial, a) for a in spec.ranges}
    recipe = load_trial_recipe(spec, params)
    total = _planned_iterations(recipe)
    metric = spec.objective.removeprefix("val_")
    run_dir = trial_dir(spec, trial.number)
    trial.set_user_attr("run", str(run_dir))
    last: dict[str, Any] = {}

    def on_validation(it: int, val: dict[str, float]) -> None:
        trial.report(val[metric], it)
        last.update(iterations=it, value=val[metric])
        # the last validation is the trial's result, never a reason to prune it
        if it < total and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {it}")

    try:
        row = train_trial(spec, trial.number, params, on_validation)
    except optuna.TrialPruned:
        got = {"iterations": last.get("iterations"), spec.objective: last.get("value")}
        row = make_row(spec, trial.number, params, "PRUNED", got, run_dir, last.get("value"))
        say(echo, trial_line(spec, row))
        raise
    except Exception as exc:
        msg = str(exc) if isinstance(exc, DigitlabError) else f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("error", msg)
        say(
            echo,
            trial_line(spec, make_row(spec, trial.number, params, "FAIL", {}, run_dir, error=msg)),
        )
        raise
    metrics = {k: v for k, v in row.items() if k in METRIC_KEYS}
    trial.set_user_attr("metrics", metrics)
    say(echo, trial_line(spec, row))
    if row["objective"] is None:
        raise DigitlabError(f"trial-{trial.number:03d}: {spec.objective} is not a number")
    return row["objective"]


def optimize(spec: SweepSpec, n_trials: int, worker: int = 0, echo: Echo | None = None) -> None:
    """Run ``n_trials`` trials of the study in this process (one sweep worker)."""
    study = _open_study(spec, worker)
    study.optimize(
        lambda trial: _objective(spec, trial, echo), n_trials=n_trials, catch=(Exception,)
    )


def _shares(total: int, workers: int) -> list[int]:
    return [n for n in (total // workers + (i < total % workers) for i in range(workers)) if n]


def run_optuna(spec: SweepSpec, echo: Echo | None) -> list[dict[str, Any]]:
    _open_study(spec)  # create it (and check it) once, before the workers race to
    shares = _shares(spec.trials, spec.workers)
    if len(shares) == 1:
        optimize(spec, shares[0], 0, echo)
    else:
        with worker_pool(len(shares)) as pool:
            futures = [pool.submit(optimize, spec, n, i, echo) for i, n in enumerate(shares)]
            for future in futures:
                future.result()
    return study_rows(spec)


def study_rows(spec: SweepSpec) -> list[dict[str, Any]]:
    """One row per trial of the whole study, whichever process or machine ran it."""
    study = _open_study(spec)
    rows = []
    for t in study.get_trials(deepcopy=False):
        metrics = dict(t.user_attrs.get("metrics", {}))
        steps = t.intermediate_values
        value = t.value if t.value is not None else (steps[max(steps)] if steps else None)
        if t.state.name == "PRUNED" and steps:  # its last validation score, for the record
            metrics.setdefault("iterations", max(steps))
            metrics.setdefault(spec.objective, value)
        run = t.user_attrs.get("run", str(trial_dir(spec, t.number)))
        error = t.user_attrs.get("error", "")
        rows.append(
            make_row(spec, t.number, t.params, t.state.name, metrics, run, value, error=error)
        )
    return rows
