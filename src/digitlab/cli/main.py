"""The ``digitlab`` command: parse, call the Python API, print. No logic lives here.

Commands are grouped by what they do (data, train, read, view, serve), one module each.
Heavy libraries (torch, matplotlib) are imported inside the commands that need them, so
``digitlab --help`` starts instantly.
"""

from __future__ import annotations

import sys

import click

from digitlab.cli import data, read, serve, train, view
from digitlab.errors import DigitlabError
from digitlab.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digitlab")
def cli() -> None:
    """digitlab: handwritten-digit recognition, from download to served model."""


for group in (data, train, read, view, serve):
    for command in group.COMMANDS:
        cli.add_command(command)


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
