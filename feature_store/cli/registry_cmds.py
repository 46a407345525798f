"""Registry commands: init, validate, plan, list, describe (apply/history/rollback live beside)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the registry commands to the top-level app."""
