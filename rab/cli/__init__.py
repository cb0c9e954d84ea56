"""The ``rab`` command line (``rab.cli.commands``: one typer app, sub-commands registered from
small modules). ``main`` is the console script: without the extra a command needs it prints
which extra to install (``rab.extras``) instead of a traceback."""

from __future__ import annotations

import sys

from rab.extras import MissingExtraError, require

#: Exit status of a command whose extra is not installed.
MISSING_EXTRA = 3


def main() -> None:
    """The ``rab`` console script."""
    try:
        require("cli", "the rab command")
        from rab.cli.commands import app

        app()
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(MISSING_EXTRA) from None
