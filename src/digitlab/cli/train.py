"""``digitlab train``, ``ensemble``, ``calibrate``, ``train-line`` and ``sweep``: making models."""

from __future__ import annotations

import json
import sys

import click

from digitlab.cli.common import set_option
from digitlab.data import SOURCE_HELP


def _run_name(recipe: str) -> str:
    import time
    from pathlib import Path

    return str(Path("runs") / f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}")


@click.command("train")
@click.argument("recipe", required=False)
@set_option
@click.option("--epochs", type=float, help="Train this many epochs (overrides the recipe).")
@click.option("--iters", type=int, help="Train this many iterations (overrides the recipe).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [runs/<recipe>-<time>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--from-checkpoint",
    metavar="ITER_OR_PATH",
    help="With --resume: continue from this checkpoint (an iteration, RUN@ITER or the file) "
    "instead of the newest; the checkpoints and metrics after it are removed.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [on a terminal].")
@click.option(
    "--tensorboard",
    is_flag=True,
    help="Also log to RUN/tensorboard/ (needs the tensorboard package).",
)
@click.option(
    "--nproc",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Train data-parallel in this many local worker processes (several machines: torchrun).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    help="Torch threads per worker [$OMP_NUM_THREADS, else the cores / local workers].",
)
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Seconds a worker waits for the others before the job stops.",
)
@click.option("--data", "data_source", metavar="SOURCE", help=f"Train on: {SOURCE_HELP}.")
@click.option("--val", "val_source", metavar="SOURCE", help="Validate on this source.")
@click.option("--test", "test_source", metavar="SOURCE", help="Score the final model on it.")
@click.option(
    "--init", metavar="MODEL", help="Start from this model's weights ('bundled', a folder)."
)
@click.option(
    "--freeze", type=click.Choice(["none", "features"]), help="Only the classifier learns."
)
def train_cmd(
    recipe: str | None,
    overrides: tuple[str, ...],
    epochs: float | None,
    iters: int | None,
    out: str | None,
    resume: bool,
    from_checkpoint: str | None,
    device: str,
    progress: bool | None,
    tensorboard: bool,
    nproc: int,
    threads: int | None,
    worker_timeout: float,
    data_source: str | None,
    val_source: str | None,
    test_source: str | None,
    init: str | None,
    freeze: str | None,
) -> None:
    """Train a RECIPE (a name from recipes/ or a .toml path; default: `default`).

    --data/--val/--test take any data source (your own digits too); `train finetune --data
    DIR` personalises the bundled model on DIR's class folders and recalibrates it. With
    --nproc N, or under torchrun, the workers share every batch (DistributedDataParallel)
    and rank 0 writes the run folder; see the README.
    """
    import os
    from pathlib import Path

    from digitlab.recipes import load_recipe
    from digitlab.train.checkpoint_models import rewind
    from digitlab.train.distributed import WorkerFailedError
    from digitlab.train.launch import WorkerRequest, launch_workers
    from digitlab.train.loop import train

    if epochs is not None and iters is not None:
        raise click.UsageError("give --epochs or --iters, not both")
    if resume and not out:
        raise click.UsageError("--resume needs --out RUN_FOLDER")
    if from_checkpoint is not None and not resume:
        raise click.UsageError("--from-checkpoint continues a run: give --resume --out RUN")
    if nproc > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        raise click.UsageError("--nproc starts workers; under torchrun use --nproc_per_node")
    if resume and recipe is None and (Path(out) / "recipe.toml").is_file():
        recipe = str(Path(out) / "recipe.toml")
    if epochs is not None:
        overrides += (f"train.epochs={epochs}",)
    if iters is not None:
        overrides += (f"train.iters={iters}",)
    fields = {
        key: value
        for key, value in (
            ("data.train_split", data_source),
            ("data.val_split", val_source),
            ("data.test_split", test_source),
            ("model.init", init),
            ("model.freeze", freeze),
        )
        if value is not None
    }
    if val_source is not None:
        fields["data.val_fraction"] = None
    spec = load_recipe(recipe or "default", overrides, fields)
    run_dir = out or _run_name(recipe or "default")
    if from_checkpoint is not None:  # then --resume continues from it: the newest now
        rewind(Path(run_dir), from_checkpoint, spec)
    try:
        if nproc > 1:
            request = WorkerRequest(
                spec, Path(run_dir), resume, device, progress, tensorboard, threads, worker_timeout
            )
            result = launch_workers(request, nproc)  # rank 0's result
        else:
            result = train(
                spec,
                run_dir,
                resume=resume,
                device=device,
                progress=progress,
                tensorboard=tensorboard,
                threads=threads,
                timeout_s=worker_timeout,
            )
    except WorkerFailedError as exc:
        if str(exc):
            click.echo(f"digitlab: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if result.rank != 0:
        return
    m = result.metrics
    click.echo(
        f"test accuracy {m['test_accuracy']:.2%} (loss {m['test_loss']:.4f}) "
        f"after {result.iterations} iterations, {m['train_seconds']:.1f}s of training"
    )
    click.echo(f"model: {Path(run_dir) / 'model.safetensors'}")
    if spec.model.init is not None and not resume:
        from digitlab.api import recalibrate

        block = recalibrate(run_dir)
        if block is not None:
            click.echo(
                f"recalibrated: threshold {block['threshold']:.3f}, "
                f"{block['val_digits_rejected']:.2%} of held-out digits rejected"
            )


@click.command("ensemble")
@click.argument("models", nargs=-1, required=True, metavar="RUN_OR_MODEL...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--tta", is_flag=True, help="Also average over 1-px shifts of each input (5 views).")
def ensemble_cmd(models: tuple[str, ...], out: str, tta: bool) -> None:
    """Combine trained models into one model that averages their probabilities.

    The result is an ordinary model folder: evaluate, predict, serve and export take it.
    """
    from digitlab.ensemble import make_ensemble

    folder = make_ensemble(list(models), out, tta)
    views = " x 5 shifted views" if tta else ""
    accuracy = json.loads((folder / "model.json").read_text())["metrics"]["test_accuracy"]
    click.echo(f"ensemble of {len(models)} models{views}: {folder} (test accuracy {accuracy:.2%})")


@click.command("calibrate")
@click.argument("model", metavar="RUN_OR_MODEL")
@click.option(
    "--max-digit-rejection",
    default=0.005,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Operating point: the share of held-out digits allowed to be rejected.",
)
@click.option(
    "--data",
    "data_source",
    metavar="SOURCE",
    help="Your own held-out digits (never trained on) to hold the operating point for too.",
)
@click.option("--no-preprocess", is_flag=True, help="The source is MNIST-style already.")
@click.option(
    "--uploads",
    default=4000,
    show_default=True,
    type=click.IntRange(0, 100_000),
    help="Realistic uploads made from the val digits, held to the operating point too.",
)
@click.option(
    "--fonts",
    type=click.IntRange(0, 100_000),
    help="Digits in the training handwriting fonts held to the operating point too "
    "[a fifth of the font digits the model trained on].",
)
def calibrate_cmd(
    model: str,
    max_digit_rejection: float,
    data_source: str | None,
    no_preprocess: bool,
    uploads: int,
    fonts: int | None,
) -> None:
    """Fit temperature scaling and the "not a digit" threshold on the val split (and on
    --data, your own held-out digits, as a population of their own)."""
    from digitlab.calibrate import calibrate_artifact

    held_out = None
    if data_source is not None:
        from digitlab.data.source import load_source

        held_out = load_source(data_source, preprocess=not no_preprocess)
    b = calibrate_artifact(
        model, max_digit_rejection, uploads=uploads, held_out=held_out, fonts=fonts
    )
    click.echo(
        f"temperature {b['temperature']:.4f}; ECE {b['ece_before']:.4f} -> {b['ece_after']:.4f}"
    )
    line = f"threshold {b['threshold']:.4f}: rejects {b['val_digits_rejected']:.2%} of val digits"
    if "font_digits_rejected" in b:
        line += f", {b['font_digits_rejected']:.2%} of {b['font_digits']} digits in fonts"
    if "held_out_rejected" in b:
        line += f", {b['held_out_rejected']:.2%} of your {b['held_out_digits']} digits"
    if "val_non_digits_rejected" in b:
        line += f" and {b['val_non_digits_rejected']:.2%} of held-out non-digits"
    click.echo(line)


@click.command("train-line")
@click.argument("model", metavar="RUN_OR_MODEL")
@click.option("--recipe", default="line", show_default=True, help="A line model's recipe.")
@set_option
@click.option("--lines", type=int, help="Numbers written with train50k digits to train on.")
@click.option("--epochs", type=int, help="Epochs of CTC (overrides the recipe).")
@click.option("--seed", type=int, help="Seed (overrides the recipe).")
def train_line_cmd(
    model: str,
    recipe: str,
    overrides: tuple[str, ...],
    lines: int | None,
    epochs: int | None,
    seed: int | None,
) -> None:
    """Train the line recogniser that re-ranks `predict --number`'s readings (line.onnx).

    It is trained with CTC on whole numbers written with train50k digits, checked on numbers
    written with val digits, and saved beside the model; `predict --number` then uses it.
    Its settings are the `line` recipe's.
    """
    from digitlab.recipes import load_line_recipe
    from digitlab.train.line import train_line

    fields = {
        key: value
        for key, value in (("data.lines", lines), ("train.epochs", epochs), ("seed", seed))
        if value is not None
    }
    spec = load_line_recipe(recipe, overrides, fields)
    block = train_line(model, spec, log=_echo_stderr)
    click.echo(
        f"line model: {block['val_sequence_accuracy']:.2%} of {block['val_lines']} val lines "
        f"read exactly ({block['parameters']:,} parameters, {block['seconds']:.0f} s)"
    )


@click.command("sweep")
@click.argument("recipe")
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Train every combination of these values (repeatable). A,B,...,Z counts from A to Z "
    "in steps of B-A; A,B,C,...,Z with a constant ratio multiplies (32,64,128,...,512).",
)
@click.option(
    "--optuna",
    "trials",
    type=click.IntRange(1),
    metavar="N",
    help="Add N trials of an Optuna TPE search over the --range fields to the study.",
)
@click.option(
    "--range",
    "ranges",
    multiple=True,
    metavar="KEY=LO:HI[:log|:STEP]|KEY=A,B,...",
    help="A field --optuna searches (repeatable): numbers from LO to HI (integers when both "
    "are written as integers), log-uniform with :log, or one of the listed values.",
)
@set_option
@click.option("--epochs", type=float, help="Train each trial this many epochs.")
@click.option("--iters", type=int, help="Train each trial this many iterations.")
@click.option(
    "--objective",
    type=click.Choice(["val_accuracy", "val_loss"]),
    default="val_accuracy",
    show_default=True,
    help="What ranks the trials (validation data only; never test).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Sweep folder: trial-NNN/ runs, results.csv/.json, sweep.png [runs/sweep-<recipe>].",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Trials trained at once, in separate processes of cores/N torch threads each "
    "($OMP_NUM_THREADS when set).",
)
@click.option(
    "--storage",
    metavar="URL",
    help="Optuna database any process or machine can join, e.g. postgresql://u:p@host/db "
    "[sqlite:///OUT/study.db].",
)
@click.option("--study-name", help="The Optuna study to create or join [the --out folder name].")
@click.option(
    "--prune/--no-prune",
    default=True,
    show_default=True,
    help="Stop an Optuna trial scoring below the median of finished trials at a validation.",
)
@click.option(
    "--prune-after",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Finished trials needed before pruning starts.",
)
@click.option(
    "--seed",
    type=int,
    help="Seed of the TPE sampler, offset by the worker and the study's trials so far [random].",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def sweep_cmd(
    recipe: str,
    grids: tuple[str, ...],
    trials: int | None,
    ranges: tuple[str, ...],
    overrides: tuple[str, ...],
    epochs: float | None,
    iters: int | None,
    objective: str,
    out: str | None,
    workers: int,
    storage: str | None,
    study_name: str | None,
    prune: bool,
    prune_after: int,
    seed: int | None,
    device: str,
) -> None:
    """Train RECIPE once per setting and rank the trials by validation score.

    \b
    digitlab sweep gluon-lenet5 --grid solver.lr=0.15,0.5,1.0,1.5 \\
        --grid data.batch_size=64,256 --set data.train_split=train50k --set data.val_split=val
    digitlab sweep caffe-lenet --optuna 30 --range solver.lr=0.001:0.1:log \\
        --range data.batch_size=32,64,128,256 --epochs 2 --workers 2

    Each trial trains into OUT/trial-NNN. Running a grid again reuses its finished trials;
    running --optuna again adds trials to the study, which other processes may share (same
    --out, or the same --storage and --study-name).
    """
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from digitlab.sweep import SweepSpec, parse_grid, parse_range, run_sweep, table

    if epochs is not None and iters is not None:
        raise click.UsageError("give --epochs or --iters, not both")
    if epochs is not None:
        overrides += (f"train.epochs={epochs}",)
    if iters is not None:
        overrides += (f"train.iters={iters}",)
    spec = SweepSpec(
        recipe=recipe,
        out=Path(out or Path("runs") / f"sweep-{Path(recipe).stem}"),
        grid=tuple(parse_grid(g) for g in grids),
        ranges=tuple(parse_range(r) for r in ranges),
        trials=trials or 0,
        overrides=overrides,
        objective=objective,  # type: ignore[arg-type]
        workers=workers,
        storage=storage,
        study_name=study_name,
        prune=prune,
        prune_after=prune_after,
        seed=seed,
        device=device,
    )
    result = run_sweep(spec, echo=_echo_stderr)
    header, rows = table(result)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    view = Table(
        title=f"{spec.recipe}: {len(rows)} trials, best first by {spec.objective}",
        caption="* test accuracy is shown for reference only; trials are ranked on validation",
    )
    for col in header:
        view.add_column(col, justify="left" if col == "state" else "right")
    for row in rows:
        view.add_row(*row)
    console.print(view)
    for path in result.files:
        click.echo(f"wrote {path}")


def _echo_stderr(line: str) -> None:
    """Progress lines of a sweep (module level, so worker processes can receive it)."""
    click.echo(line, err=True)


COMMANDS = [train_cmd, ensemble_cmd, calibrate_cmd, train_line_cmd, sweep_cmd]
