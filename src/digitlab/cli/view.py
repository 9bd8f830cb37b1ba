"""``digitlab models``, ``summary``, ``plot``, ``report``, ``bench``: looking at models and runs."""

from __future__ import annotations

import json

import click


@click.command("models")
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


@click.command("summary")
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


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--kind", required=True, metavar="KIND", help=f"One of: {_plot_kind_help()}.")
@click.option("--out", type=click.Path(dir_okay=False), help="PNG or SVG file [<kind>.png].")
def plot_cmd(runs: tuple[str, ...], kind: str, out: str | None) -> None:
    """Plot a training curve of one or more runs (overlaid, with a legend), as Caffe's
    plot_training_log.py does. "test" means the validation events (Caffe's test net is the
    validation net). Works on a run that is still training."""
    from digitlab.viz.plots import plot_runs

    click.echo(f"wrote {plot_runs(list(runs), kind, out)}")


@click.command("report")
@click.argument("run", metavar="RUN")
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file [RUN/report.html].")
def report_cmd(run: str, out: str | None) -> None:
    """One self-contained HTML page about a run: recipe, curves, confusion matrix, per-class
    scores, sample digits, confident mistakes, model summary, timings and data digests."""
    from digitlab.viz.report import write_report

    click.echo(f"wrote {write_report(run, out)}")


@click.command("bench")
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


COMMANDS = [models_cmd, summary_cmd, plot_cmd, report_cmd, bench_cmd]
