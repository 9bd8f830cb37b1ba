"""What several command groups share: the ``--set`` option."""

from __future__ import annotations

import click

set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field, e.g. --set solver.lr=0.05 (repeatable).",
)
