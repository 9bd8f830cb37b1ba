"""The ``digitlab`` command: parse, call the Python API, print. No logic lives here.

Heavy libraries (torch, matplotlib) are imported inside the commands that need them, so
``digitlab --help`` starts instantly.
"""

from __future__ import annotations

import json
import sys

import click

from digitlab import __version__
from digitlab.errors import DigitlabError


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


def main() -> None:
    """Entry point: user errors become one stderr line and exit code 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
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


if __name__ == "__main__":
    main()
