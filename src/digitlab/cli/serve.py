"""``digitlab export`` and ``serve``: ONNX files and the HTTP API."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("model", metavar="RUN_OR_MODEL_OR_CHECKPOINT")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="File to write [model.onnx beside model.json; required for a checkpoint].",
)
def export_cmd(model: str, fmt: str, out: str | None) -> None:
    """Export a model to ONNX (normalisation included, input uint8 pixels N x 28 x 28), checked
    against torch on MNIST test digits; `digitlab serve` runs it on ONNX Runtime.

    A checkpoint (RUN/checkpoints/iter_0005000.safetensors or RUN@5000) exports too, to --out:
    it has no model folder to write model.onnx into.
    """
    from digitlab.export import export_checked
    from digitlab.train.checkpoint_models import is_checkpoint, model_folder

    if out is None and is_checkpoint(model):
        raise click.UsageError("a checkpoint has no model folder to write into: give --out FILE")
    with model_folder(model) as folder:
        r = export_checked(folder, out)
    click.echo(
        f"wrote {r.path} ({r.path.stat().st_size:,} bytes); max |logit difference| "
        f"from torch on {r.checked:,} MNIST test digits: {r.max_abs_diff:.2g}"
    )


@click.command("serve")
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
    "--collect",
    "collect_dir",
    type=click.Path(file_okay=False),
    help="Add a collect mode to the page that saves your own samples as DIR/<digit>/*.png "
    "(for digitlab train finetune --data DIR). Off unless given.",
    metavar="DIR",
)
@click.option(
    "--collect-max",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Most samples --collect keeps in DIR; more are refused.",
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
    collect_dir: str | None,
    collect_max: int,
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
        collect_dir=collect_dir,
        collect_max=collect_max,
    )
    serve(settings, host=host, port=port, workers=workers, log_level=log_level)


COMMANDS = [export_cmd, serve_cmd]
