"""CLI options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from feature_store.adapters.schema_registry import SchemaRegistryClient, SchemaRegistryConfig

SchemaRegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--schema-registry",
        envvar="FSTORE_SCHEMA_REGISTRY_URL",
        help="Confluent-compatible Schema Registry (http(s)://[user:pass@]host:port) for schema "
        "ids the applied registry does not know (default: none).",
    ),
]


def schema_registry_config(url: str | None, err: Console) -> SchemaRegistryConfig | None:
    """Validate ``--schema-registry`` (exit 2 with the reason when it is not a usable URL)."""
    if not url:
        return None
    config = SchemaRegistryConfig(url)
    try:
        SchemaRegistryClient(config)
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    return config
