"""The ``digitlab`` command: parse, call the Python API, print. No logic lives here.

Heavy libraries (torch, matplotlib) are imported inside the commands that need them, so
``digitlab --help`` starts instantly.
"""

from __future__ import annotations

import json
import sys

import click

from digitlab.errors import DigitlabError
from digitlab.version import __version__

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field, e.g. --set solver.lr=0.05 (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digitlab")
def cli() -> None:
    """digitlab: handwritten-digit recognition, from download to served model."""


# ---------------------------------------------------------------------------- data


@cli.group()
def data() -> None:
    """Fetch, inspect and export MNIST."""


@data.command("fetch")
@click.option("--mirror", help="A mirror to try first: https://, http://, file:// URL or a folder.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where to keep the files.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
def data_fetch(mirror: str | None, cache_dir: str | None, timeout: float) -> None:
    """Download and verify the four MNIST files (instant when already cached)."""
    if not 0 < timeout < float("inf"):  # also refuses nan, which every comparison lets through
        raise click.BadParameter("must be a positive number of seconds", param_hint="--timeout")
    from digitlab.data.sources import fetch_mnist, rich_progress

    progress, close = rich_progress()
    try:
        report = fetch_mnist(cache_dir, mirror, timeout=timeout, progress=progress)
    finally:
        close()
    for name, source in report.sources.items():
        click.echo(f"{name}  {'cached' if source == 'cache' else 'from ' + source}  verified")
    click.echo(f"MNIST is in {report.cache_dir}")


@data.command("info")
@click.option("--mirror", help="A mirror to try first if the data is not cached yet.")
@click.option("--cache-dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_info_cmd(mirror: str | None, cache_dir: str | None, as_json: bool) -> None:
    """Counts per split, class histogram, pixel mean/std, digests and cache location."""
    from digitlab.data.info import data_info

    info = data_info(cache_dir, mirror)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file or pipe: no width to fit, keep every column whole
        console = Console(width=160)
    table = Table(title="MNIST splits")
    for col in ("split", "count", "mean", "std", *[str(d) for d in range(10)]):
        table.add_column(col, justify="right")
    for name, s in info["splits"].items():
        table.add_row(
            name,
            f"{s['count']:,}",
            f"{s['pixel_mean']:.2f}",
            f"{s['pixel_std']:.2f}",
            *[f"{c:,}" for c in s["class_counts"]],
        )
    console.print(table)
    for name, f in info["files"].items():
        console.print(f"{name}  sha256 {f['sha256']}")
    console.print(f"cache: {info['cache_dir']}")


# ---------------------------------------------------------------------------- data: export / show


def _dataset_for(split: str | None, source: str | None, default: str):
    """The split of the cached MNIST, or of any readable file/folder given as --source."""
    if source:
        from digitlab.data.formats import read_dataset

        return read_dataset(source, split)
    from digitlab.data.dataset import load_split

    return load_split(split or default)


@data.command("export")
@click.option("--split", help="train, test, train50k or val [test]; with --source, its split.")
@click.option("--out", type=click.Path(), help="Folder to write OUT/<split>/ and the lists into.")
@click.option("--format", "fmt", default="png", show_default=True, help="png (lossless) or jpg.")
@click.option("--workers", type=int, help="Processes to encode with [all cores].")
@click.option("--source", help="Read the split from this file or folder instead of the cache.")
def data_export(
    split: str | None, out: str | None, fmt: str, workers: int | None, source: str | None
) -> None:
    """Write a split as OUT/<split>/000000_7.png … with Caffe (.txt) and MXNet (.lst) lists."""
    from pathlib import Path

    from digitlab.data.export import export_split

    if not out:
        raise DigitlabError("--out is required: the folder to export into")
    dataset = _dataset_for(split, source, "test")
    name = split or (Path(source).name.split(".")[0] if source else "test")
    report = export_split(dataset, out, name, fmt=fmt, workers=workers)
    click.echo(
        f"wrote {report.count:,} images to {report.folder} ({report.images_per_s:,.0f} images/s)"
    )
    click.echo(f"lists: {report.caffe_list} (Caffe), {report.mxnet_list} (MXNet)")


@data.command("show")
@click.option("--split", help="train, test, train50k or val [train]; with --source, its split.")
@click.option("--n", "n", default=25, show_default=True, type=int, help="How many digits.")
@click.option("--out", default="grid.png", show_default=True, help="PNG file to write.")
@click.option("--seed", type=int, help="Draw the digits at random with this seed [the first n].")
@click.option("--source", help="Read the split from this file or folder instead of the cache.")
def data_show(split: str | None, n: int, out: str, seed: int | None, source: str | None) -> None:
    """Save a labelled grid of digits as a PNG."""
    from digitlab.data.show import save_grid

    path = save_grid(_dataset_for(split, source, "train"), out, n, seed)
    click.echo(f"wrote {path}")


# ---------------------------------------------------------------------------- data: augmentation


@data.command("augment-preview")
@click.argument("recipe")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option(
    "--n",
    "n",
    default=8,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Digits (rows), cycling through the classes.",
)
@set_option
@click.option("--seed", default=0, show_default=True, help="Seed of the augmentation draws.")
def data_augment_preview(
    recipe: str, out: str, n: int, overrides: tuple[str, ...], seed: int
) -> None:
    """Grid of training digits beside 7 versions augmented as RECIPE's [augment] says."""
    from digitlab.augment import augment_preview_png, describe
    from digitlab.data.dataset import load_split
    from digitlab.fileio import write_bytes_atomic
    from digitlab.recipes import load_recipe

    if not out.lower().endswith(".png"):
        raise DigitlabError(f"{out}: the preview is written as PNG; name the file .png")
    cfg = load_recipe(recipe, overrides).augment
    write_bytes_atomic(out, augment_preview_png(load_split("train"), cfg, n=n, seed=seed))
    click.echo(f"augmentation: {describe(cfg)}")
    click.echo(f"wrote {out}")


@data.command("augment")
@click.argument("recipe")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--copies",
    default=5,
    show_default=True,
    type=click.IntRange(1),
    help="Versions of every digit (the first is the original unless --no-originals).",
)
@click.option(
    "--split", default="train50k", show_default=True, help="train, test, train50k or val."
)
@click.option(
    "--originals/--no-originals",
    default=True,
    show_default=True,
    help="Keep the untouched digits as the first copy.",
)
@set_option
@click.option("--seed", default=0, show_default=True, help="Seed of the augmentation draws.")
@click.option("--format", "fmt", default="png", show_default=True, help="png or jpg.")
def data_augment(
    recipe: str,
    out: str,
    copies: int,
    split: str,
    originals: bool,
    overrides: tuple[str, ...],
    seed: int,
    fmt: str,
) -> None:
    """Write an augmented SPLIT as OUT/train/000000_5.png … plus Caffe/MXNet list files."""
    from digitlab.augment import augment_to_folder, describe
    from digitlab.data.dataset import load_split
    from digitlab.recipes import load_recipe

    cfg = load_recipe(recipe, overrides).augment
    dataset = load_split(split)
    report = augment_to_folder(dataset, cfg, out, copies, seed, originals, fmt=fmt)
    click.echo(f"augmentation: {describe(cfg)}")
    click.echo(f"wrote {report.count:,} images ({len(dataset):,} x {copies}) to {report.folder}")
    click.echo(f"lists: {report.caffe_list} (Caffe), {report.mxnet_list} (MXNet)")


# ---------------------------------------------------------------------------- train / evaluate


def _run_name(recipe: str) -> str:
    import time
    from pathlib import Path

    return str(Path("runs") / f"{Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}")


@cli.command("train")
@click.argument("recipe", required=False)
@set_option
@click.option("--epochs", type=float, help="Train this many epochs (overrides the recipe).")
@click.option("--iters", type=int, help="Train this many iterations (overrides the recipe).")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [runs/<recipe>-<time>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
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
def train_cmd(
    recipe: str | None,
    overrides: tuple[str, ...],
    epochs: float | None,
    iters: int | None,
    out: str | None,
    resume: bool,
    device: str,
    progress: bool | None,
    tensorboard: bool,
    nproc: int,
    threads: int | None,
    worker_timeout: float,
) -> None:
    """Train a RECIPE (a name from recipes/ or a .toml path; default: `default`).

    With --nproc N, or under torchrun, the workers share every batch (DistributedDataParallel)
    and rank 0 writes the run folder; see the README.
    """
    import os
    from pathlib import Path

    from digitlab.recipes import load_recipe
    from digitlab.train.distributed import WorkerFailedError
    from digitlab.train.launch import WorkerRequest, launch_workers
    from digitlab.train.loop import train

    if epochs is not None and iters is not None:
        raise click.UsageError("give --epochs or --iters, not both")
    if resume and not out:
        raise click.UsageError("--resume needs --out RUN_FOLDER")
    if nproc > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        raise click.UsageError("--nproc starts workers; under torchrun use --nproc_per_node")
    if resume and recipe is None and (Path(out) / "recipe.toml").is_file():
        recipe = str(Path(out) / "recipe.toml")
    if epochs is not None:
        overrides += (f"train.epochs={epochs}",)
    if iters is not None:
        overrides += (f"train.iters={iters}",)
    spec = load_recipe(recipe or "default", overrides)
    run_dir = out or _run_name(recipe or "default")
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


@cli.command("evaluate")
@click.argument("model", metavar="RUN_OR_MODEL")
@click.option("--split", default="test", show_default=True, help="train, test, train50k or val.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1))
@click.option("--per-batch", is_flag=True, help="Each batch's accuracy, as `caffe test`.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_cmd(model: str, split: str, batch_size: int, per_batch: bool, as_json: bool) -> None:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix."""
    from digitlab.evaluate import evaluate_artifact

    r = evaluate_artifact(model, split, batch_size, per_batch)
    if as_json:
        click.echo(json.dumps(r))
        return
    if per_batch:
        for i, acc in enumerate(r["per_batch"]):
            click.echo(f"batch {i}: accuracy = {acc:.4f}")
    click.echo(f"{r['split']}: accuracy {r['accuracy']:.4%}  loss {r['loss']:.4f}  n {r['n']}")
    click.echo("class  precision  recall  f1      support")
    for c in r["per_class"]:
        click.echo(
            f"{c['class']:>5}  {c['precision']:.4f}     {c['recall']:.4f}  "
            f"{c['f1']:.4f}  {c['support']}"
        )
    click.echo("confusion matrix (rows: true, columns: predicted)")
    for c, row in enumerate(r["confusion_matrix"]):
        click.echo(f"{c}: " + " ".join(f"{v:5d}" for v in row))


@cli.command("ensemble")
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


@cli.command("calibrate")
@click.argument("model", metavar="RUN_OR_MODEL")
@click.option(
    "--max-digit-rejection",
    default=0.005,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Operating point: the share of held-out digits allowed to be rejected.",
)
def calibrate_cmd(model: str, max_digit_rejection: float) -> None:
    """Fit temperature scaling and the "not a digit" threshold on the val split."""
    from digitlab.calibrate import calibrate_artifact

    b = calibrate_artifact(model, max_digit_rejection)
    click.echo(
        f"temperature {b['temperature']:.4f}; ECE {b['ece_before']:.4f} -> {b['ece_after']:.4f}"
    )
    line = f"threshold {b['threshold']:.4f}: rejects {b['val_digits_rejected']:.2%} of val digits"
    if "val_non_digits_rejected" in b:
        line += f" and {b['val_non_digits_rejected']:.2%} of held-out non-digits"
    click.echo(line)


@cli.command("train-line")
@click.argument("model", metavar="RUN_OR_MODEL")
@click.option(
    "--lines",
    default=60_000,
    show_default=True,
    type=click.IntRange(100, 1_000_000),
    help="Numbers written with train50k digits to train on.",
)
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=0, show_default=True, type=int)
def train_line_cmd(model: str, lines: int, epochs: int, seed: int) -> None:
    """Train the line recogniser that re-ranks `predict --number`'s readings (line.onnx).

    It is trained with CTC on whole numbers written with train50k digits, checked on numbers
    written with val digits, and saved beside the model; `predict --number` then uses it.
    """
    from digitlab.train.line import train_line

    block = train_line(model, lines=lines, epochs=epochs, seed=seed, log=_echo_stderr)
    click.echo(
        f"line model: {block['val_sequence_accuracy']:.2%} of {block['val_lines']} val lines "
        f"read exactly ({block['parameters']:,} parameters, {block['seconds']:.0f} s)"
    )


@cli.command("predict")
@click.argument("paths", nargs=-1, required=True, metavar="[RUN_OR_MODEL] PATH...")
@click.option("--model", "model", help="Run or model folder [the bundled default model].")
@click.option("--number", is_flag=True, help="Read a line of several digits, e.g. 2026.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input, in order.")
@click.option("--show-input", type=click.Path(file_okay=False), help="Save each 28x28 input here.")
@click.option("--no-preprocess", is_flag=True, help="Inputs are MNIST-style already (28x28).")
def predict_cmd(
    paths: tuple[str, ...],
    model: str | None,
    number: bool,
    as_json: bool,
    show_input: str | None,
    no_preprocess: bool,
) -> None:
    """Predict the digit (or --number) in each image: files, folders, list files, - for stdin.

    Any size, colour and polarity: photos, scans and canvas drawings are turned into MNIST's
    form first. An input that is not a digit says so (is_digit false, digit null). The model
    comes from --model, or from a first argument that is a run/model folder, or is the
    bundled default.
    """
    from pathlib import Path

    from digitlab.predict import Predictor, expand_inputs

    if model is None and len(paths) > 1 and (Path(paths[0]) / "model.json").is_file():
        model, paths = paths[0], paths[1:]
    inputs = expand_inputs(paths)
    if not inputs:  # only empty folders or list files: saying nothing would look like success
        raise DigitlabError(f"no images found in {', '.join(paths)}")
    predictor = Predictor(model)
    failed = False
    results = predictor.predict_paths(
        inputs, number=number, show_input=show_input, preprocess=not no_preprocess
    )
    for r in results:
        failed |= "error" in r
        if as_json:
            click.echo(json.dumps(r))
        elif "error" in r:
            click.echo(f"{r['path']}: error: {r['error']}", err=True)
        elif number:
            digits = " ".join(
                f"{'?' if d['digit'] is None else d['digit']}{'' if d['is_digit'] else '?'}"
                f"({d['confidence']:.0%})"
                for d in r["digits"]
            )
            click.echo(f"{r['path']} \u2192 {r['number'] or 'not a number'}  [{digits}]")
        elif r["is_digit"]:
            click.echo(f"{r['path']} \u2192 {r['digit']} ({r['confidence']:.1%})")
        else:
            click.echo(f"{r['path']} \u2192 not a digit ({r['confidence']:.1%})")
    if failed:
        sys.exit(2)


# ---------------------------------------------------------------------------- sweep


@cli.command("sweep")
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


# ---------------------------------------------------------------------------- models


@cli.command("models")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
def models_cmd(pattern: str, as_json: bool) -> None:
    """The model zoo: names, parameters, FLOPs per image, input scaling and origin."""
    from digitlab.models import count_params, create_model, list_models
    from digitlab.summary import format_count, summarize, totals

    rows = []
    for e in list_models(pattern):
        model = create_model(e.name)
        ops = totals(summarize(model))  # viz helper: MACs/FLOPs of one 28x28 image
        rows.append(
            {
                "name": e.name,
                "params": count_params(model),
                "flops": ops["flops"],
                "macs": ops["macs"],
                "normalization": {"shift": e.normalization.shift, "scale": e.normalization.scale},
                "description": e.description,
                "tutorial": e.tutorial,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="digitlab models", caption="FLOPs and MACs: one 28x28 image, forward")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("FLOPs", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)
    table.add_column("input", no_wrap=True)
    table.add_column("description")
    for r, e in zip(rows, list_models(pattern), strict=True):
        table.add_row(
            r["name"],
            f"{r['params']:,}",
            format_count(r["flops"]),
            format_count(r["macs"]),
            str(e.normalization),
            r["description"],
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a log file: no width to fit, keep rows whole
        console = Console(width=200)
    console.print(table)


# ------------------------------------------------------------- viz: summary, plot, report


@cli.command("summary")
@click.argument("model", metavar="MODEL_OR_RUN")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def summary_cmd(model: str, as_json: bool) -> None:
    """Per-layer output shape, parameters, MACs and FLOPs of one 28x28 image, with totals.

    FLOPs = 2 x MACs for conv/linear layers (bias adds not counted), plus 2 per element for
    batch norm, 1 per element for activations and the kernel area per output for pooling.
    """
    from digitlab.summary import CONVENTION, summarize, totals

    rows = summarize(model)
    total = totals(rows)
    if as_json:
        out = {"model": model, "layers": [r.to_dict() for r in rows], **total}
        click.echo(json.dumps({**out, "convention": CONVENTION}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model}: one 28x28 image", caption=CONVENTION, show_footer=True)
    table.add_column("layer", footer="total", no_wrap=True)
    table.add_column("type")
    table.add_column("output shape", justify="right")
    table.add_column("params", justify="right", footer=f"{total['params']:,}")
    table.add_column("MACs", justify="right", footer=f"{total['macs']:,}")
    table.add_column("FLOPs", justify="right", footer=f"{total['flops']:,}")
    for r in rows:
        shape = "\u00d7".join(map(str, r.output_shape))
        table.add_row(r.name, r.type, shape, f"{r.params:,}", f"{r.macs:,}", f"{r.flops:,}")
    Console().print(table)


def _plot_kind_help() -> str:
    from digitlab.viz.plots import KINDS  # light: no matplotlib import at module level

    return ", ".join(KINDS)


@cli.command("plot")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--kind", required=True, metavar="KIND", help=f"One of: {_plot_kind_help()}.")
@click.option("--out", type=click.Path(dir_okay=False), help="PNG or SVG file [<kind>.png].")
def plot_cmd(runs: tuple[str, ...], kind: str, out: str | None) -> None:
    """Plot a training curve of one or more runs (overlaid, with a legend), as Caffe's
    plot_training_log.py does. "test" means the validation events (Caffe's test net is the
    validation net). Works on a run that is still training."""
    from digitlab.viz.plots import plot_runs

    click.echo(f"wrote {plot_runs(list(runs), kind, out)}")


@cli.command("report")
@click.argument("run", metavar="RUN")
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file [RUN/report.html].")
def report_cmd(run: str, out: str | None) -> None:
    """One self-contained HTML page about a run: recipe, curves, confusion matrix, per-class
    scores, sample digits, confident mistakes, model summary, timings and data digests."""
    from digitlab.viz.report import write_report

    click.echo(f"wrote {write_report(run, out)}")


# ---------------------------------------------------------------------------- bench


@cli.command("bench")
@click.argument("model", metavar="MODEL_OR_RUN")
@click.option(
    "--batch",
    default=64,
    show_default=True,
    type=click.IntRange(1, 65536),  # larger would only ask for tens of GB of memory
    help="Batch size.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N] (torch only).")
@click.option("--threads", type=click.IntRange(1), help="Threads / cores to use [all available].")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="NAME[:VARIANT]",
    help="Backends to time (repeatable) [torch-eager, torch-compile, ort-fp32, ort-int8, "
    "openvino-fp32, openvino-int8]; also openvino-bf16. Int8 variants, e.g. "
    "ort-int8:qdq-pt-s8: qop|qdq, pc|pt (per channel/tensor), s8|u8 weights, rr (7-bit "
    "weights), fc (first conv in fp32).",
)
@click.option(
    "--parallel",
    type=click.Choice(["batch", "intra"]),
    default="batch",
    show_default=True,
    help="ONNX Runtime/OpenVINO: 32-digit slices side by side (one thread each), or the "
    "whole batch on multi-threaded kernels.",
)
@click.option("--repeats", default=7, show_default=True, type=click.IntRange(1),
              help="Interleaved timing rounds; the median is reported.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_cmd(
    model: str,
    batch: int,
    device: str,
    threads: int | None,
    backends: tuple[str, ...],
    parallel: str,
    repeats: int,
    as_json: bool,
) -> None:
    """Time a model as `caffe time` does (forward, backward, per layer) and its inference on
    every backend: images/s, latency, GFLOP/s and MNIST test accuracy side by side.

    MODEL_OR_RUN is a zoo name (random weights: timings only, accuracy n/a) or a run/model
    folder (its trained weights; accuracy on the 10,000 test digits).
    """
    from digitlab.bench import BACKENDS, bench

    r = bench(
        model, batch, device, threads=threads, backends=backends or BACKENDS,
        parallel=parallel, repeats=repeats,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return
    _print_bench(r)


def _print_bench(r) -> None:
    from rich.console import Console
    from rich.table import Table

    from digitlab.bench import BACKEND_COLUMNS, backend_rows, layer_rows

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    t = r.training
    console.print(
        f"{r.model} ({'trained: ' + r.source if r.trained else 'untrained zoo model'}), "
        f"batch {r.batch}, {r.device}, {r.threads} threads; {r.params:,} parameters, "
        f"{r.flops_per_image / 1e6:.2f} MFLOPs per image"
    )
    console.print(
        f"training step: forward {t['forward_ms']:.3f} ms, backward {t['backward_ms']:.3f} ms, "
        f"forward+backward {t['forward_backward_ms']:.3f} ms per batch "
        f"({t['images_per_s']:,.0f} images/s)"
    )
    mem = r.activation_bytes
    console.print(
        f"activation memory per batch: {mem['saved_for_backward'] / 2**20:.2f} MiB saved for "
        f"backward, {mem['layer_outputs'] / 2**20:.2f} MiB of layer outputs"
    )
    layers = Table(title="per layer (training step, mean per batch)")
    for col in ("layer", "type", "output", "params", "MFLOPs", "forward ms", "backward ms"):
        layers.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in layer_rows(r):
        layers.add_row(*row)
    console.print(layers)
    peak = ", ".join(f"{k} {v:.0f}" for k, v in r.peak_gflops.items())
    table = Table(
        title=f"inference, batch {r.batch} (median of {r.repeats} interleaved rounds)",
        caption=f"fp32 2048x2048 matmul peak, GFLOP/s: {peak}; int8/bf16 count fp32 FLOPs"
        if peak
        else None,
    )
    for col in BACKEND_COLUMNS:
        table.add_column(col, justify="left" if col in ("backend", "precision") else "right")
    for row in backend_rows(r):
        table.add_row(*row)
    console.print(table)
    for b in r.backends:
        console.print(f"  {b.name}: {b.detail or b.status}", highlight=False)


# ---------------------------------------------------------------------------- export / serve


@cli.command("export")
@click.argument("model", metavar="RUN_OR_MODEL")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write [model.onnx beside].")
def export_cmd(model: str, fmt: str, out: str | None) -> None:
    """Export a model to ONNX (normalisation included, input uint8 pixels N x 28 x 28), checked
    against torch on MNIST test digits; `digitlab serve` runs it on ONNX Runtime."""
    from digitlab.export import export_checked

    r = export_checked(model, out)
    click.echo(
        f"wrote {r.path} ({r.path.stat().st_size:,} bytes); max |logit difference| "
        f"from torch on {r.checked:,} MNIST test digits: {r.max_abs_diff:.2g}"
    )


@cli.command("serve")
@click.option("--model", help="Run or model folder [the bundled default model].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Processes, each with its own copy of the model.",
)
@click.option(
    "--threads",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Predictions running at once in each worker; 0: one per core.",
)
@click.option(
    "--backend",
    type=click.Choice(["onnx", "torch"]),
    default="onnx",
    show_default=True,
    help="onnx needs model.onnx (digitlab export); torch is slower.",
)
@click.option(
    "--max-upload-mb",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.001),
    help="Largest request body; bigger ones get 413.",
)
@click.option(
    "--max-batch",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Most images in one request to /v1/predict/batch.",
)
@click.option(
    "--timeout",
    "request_timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a client may take to send its request.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve_cmd(
    model: str | None,
    host: str,
    port: int,
    workers: int,
    threads: int,
    backend: str,
    max_upload_mb: float,
    max_batch: int,
    request_timeout: float,
    log_level: str,
) -> None:
    """Serve the prediction API and the drawing page (http://HOST:PORT/, API docs at /docs)."""
    from digitlab.serve.app import Settings
    from digitlab.serve.server import serve

    settings = Settings(
        model=model,
        backend=backend,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_batch=max_batch,
        request_timeout=request_timeout,
        threads=threads,
    )
    serve(settings, host=host, port=port, workers=workers, log_level=log_level)


def main() -> None:
    """Entry point: user errors become one stderr line and exit code 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # one line, like every other user error; --help has the usage
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "digitlab"
        hint = f" (see '{where} --help')" if isinstance(exc, click.UsageError) else ""
        click.echo(f"{where}: error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except DigitlabError as exc:
        click.echo(f"digitlab: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:  # the file system said no (a missing folder, permissions, disk full)
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"digitlab: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
