"""The ``rab`` command: one typer app, sub-commands registered from small modules (the console
script is ``rab.cli.main``)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rab",
    help="Certified robustness against backdoor attacks (RAB): library, service and experiments.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_commands() -> None:
    """Attach the sub-command groups; each module adds its commands to ``app``."""
    from rab.cli import demo, experiment, local, remote, service

    for module in (service, remote, demo, local, experiment):
        module.register(app)


_register_commands()
