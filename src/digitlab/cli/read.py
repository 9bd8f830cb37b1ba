"""``digitlab predict`` and ``evaluate``: reading images and scoring models."""

from __future__ import annotations

import json
import sys

import click

from digitlab.errors import DigitlabError


@click.command("evaluate")
@click.argument("model", metavar="RUN_OR_MODEL_OR_CHECKPOINT")
@click.option(
    "--data",
    "--split",
    "split",
    metavar="SOURCE",
    help="An MNIST split (train, test, train50k, val) or your own labelled digits: a folder, "
    "a list, a CSV, a parquet file, an LMDB ...  [default: test]",
)
@click.option("--no-preprocess", is_flag=True, help="Images are MNIST-style already (28x28).")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1))
@click.option("--per-batch", is_flag=True, help="Each batch's accuracy, as `caffe test`.")
@click.option(
    "--checkpoints",
    is_flag=True,
    help="Score every checkpoint of the run on its validation data and name the best.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_cmd(
    model: str,
    split: str | None,
    no_preprocess: bool,
    batch_size: int,
    per_batch: bool,
    checkpoints: bool,
    as_json: bool,
) -> None:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix.

    The model is a run or model folder, or a checkpoint: RUN/checkpoints/iter_0005000.safetensors
    or RUN@5000. With --checkpoints, RUN's checkpoints are compared on the recipe's validation
    data (never test) and the best is named.
    """
    if checkpoints:
        if split is not None or per_batch:
            raise click.UsageError("--checkpoints scores on the recipe's validation data only")
        _evaluate_checkpoints(model, batch_size, as_json)
        return
    from digitlab.evaluate import evaluate_artifact
    from digitlab.train.checkpoint_models import model_folder

    with model_folder(model) as folder:
        r = evaluate_artifact(
            str(folder), split or "test", batch_size, per_batch, preprocess=not no_preprocess
        )
    r["model"] = model
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


def _evaluate_checkpoints(run: str, batch_size: int, as_json: bool) -> None:
    from digitlab.train.checkpoint_models import score_checkpoints

    r = score_checkpoints(run, batch_size)
    if as_json:
        click.echo(json.dumps(r))
        return
    best = r["best"]
    click.echo(f"{r['run']}: checkpoints on {r['split']} ({r['n']:,} images)")
    click.echo("iteration  val accuracy  val loss")
    for c in r["checkpoints"]:
        if "error" in c:
            click.echo(f"{c['iteration']:>9}  unreadable: {c['error']}")
            continue
        mark = "  <- best" if c["iteration"] == best["iteration"] else ""
        click.echo(f"{c['iteration']:>9}  {c['val_accuracy']:>11.2%}  {c['val_loss']:>8.4f}{mark}")
    by = r["selected_by"].replace("_", " ")
    click.echo(f"best by {by}: iteration {best['iteration']} ({best['ref']})")


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, metavar="[RUN_OR_MODEL] PATH...")
@click.option(
    "--model", "model", help="Run or model folder or checkpoint [the bundled default model]."
)
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
    bundled default. A checkpoint (RUN/checkpoints/iter_0005000.safetensors or RUN@5000) is
    a model too.
    """
    from pathlib import Path

    from digitlab.predict import Predictor, expand_inputs
    from digitlab.train.checkpoint_models import is_checkpoint, model_folder

    named = (Path(paths[0]) / "model.json").is_file() or is_checkpoint(paths[0])
    if model is None and len(paths) > 1 and named:
        model, paths = paths[0], paths[1:]
    inputs = expand_inputs(paths)
    if not inputs:  # only empty folders or list files: saying nothing would look like success
        raise DigitlabError(f"no images found in {', '.join(paths)}")
    with model_folder(model) as folder:  # the Predictor holds all it needs once built
        predictor = Predictor(folder)
    failed = False
    results = predictor.predict_paths(
        inputs, number=number, show_input=show_input, preprocess=not no_preprocess, workers=None
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


COMMANDS = [evaluate_cmd, predict_cmd]
