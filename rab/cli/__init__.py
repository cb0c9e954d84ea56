"""The ``rab`` command line: one typer app, sub-commands registered from small modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rab",
    help="Certified robustness against backdoor attacks (RAB): library, service and experiments.",
    no_args_is_help=True,
    add_completion=False,
)
