"""``digitlab data ...``: fetch, inspect, export and augment data sets."""

from __future__ import annotations

import json

import click

from digitlab.cli.common import set_option
from digitlab.errors import DigitlabError


@click.group()
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
    "--split",
    "--data",
    "split",
    default="train50k",
    show_default=True,
    metavar="SOURCE",
    help="An MNIST split or any data source (an exported folder, a list file ...).",
)
@click.option("--no-preprocess", is_flag=True, help="The source is MNIST-style already.")
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
    no_preprocess: bool,
    originals: bool,
    overrides: tuple[str, ...],
    seed: int,
    fmt: str,
) -> None:
    """Write an augmented SPLIT as OUT/train/000000_5.png … plus Caffe/MXNet list files."""
    from digitlab.augment import augment_to_folder, describe
    from digitlab.data.source import load_source
    from digitlab.recipes import load_recipe

    cfg = load_recipe(recipe, overrides).augment
    dataset = load_source(split, preprocess=not no_preprocess)
    report = augment_to_folder(dataset, cfg, out, copies, seed, originals, fmt=fmt)
    click.echo(f"augmentation: {describe(cfg)}")
    click.echo(f"wrote {report.count:,} images ({len(dataset):,} x {copies}) to {report.folder}")
    click.echo(f"lists: {report.caffe_list} (Caffe), {report.mxnet_list} (MXNet)")


COMMANDS = [data]
