"""`fstore archive`: archive every valid event as Parquet partitioned by event date."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from feature_store.cli.options import SchemaRegistryUrl, schema_registry_config
from feature_store.core.model import Registry

app = typer.Typer(help="The Parquet event archive (input of `fstore export`).", no_args_is_help=True)
err = Console(stderr=True)
out = Console()


def load_cli_registry(store: str | None, version: int | None, registry_dir: Path | None = None) -> Registry:
    """The registry a command runs with: a YAML folder, or an applied version from a store.

    Exits with code 2 (bad arguments) or 1 (nothing applied) and a one-line reason.
    """
    from feature_store.definitions.apply import load_applied  # noqa: PLC0415
    from feature_store.definitions.stores import (  # noqa: PLC0415
        StoreUrlError,
        open_registry_store,
        resolve_store_url,
    )

    if registry_dir is not None:
        from feature_store.definitions.compiler import load_registry  # noqa: PLC0415
        from feature_store.definitions.errors import RegistryInvalid  # noqa: PLC0415

        try:
            return load_registry(registry_dir)
        except (RegistryInvalid, OSError) as exc:
            err.print(f"[red]registry {registry_dir} is not valid:[/] {exc}")
            raise typer.Exit(2) from exc
    url = resolve_store_url(store)
    if url is None:
        err.print("[red]no registry store: pass --store or set FSTORE_REGISTRY_STORE[/]")
        raise typer.Exit(2)
    try:
        registry = load_applied(open_registry_store(url), version)
    except (StoreUrlError, ValueError, LookupError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if registry is None:
        what = f"version {version}" if version is not None else "nothing"
        err.print(f"[red]{what} applied in {url}: run `fstore apply` first[/]")
        raise typer.Exit(1)
    return registry


@app.command()
def run(
    store: Annotated[
        str | None, typer.Option(help="Registry store URL (default: $FSTORE_REGISTRY_STORE).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Pin an applied registry version (default: latest).")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option(help="Sources to archive (repeatable; default: all).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Archive root folder.")] = Path("archive"),
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    group_id: Annotated[str, typer.Option(help="Kafka consumer group of the archiver.")] = "fstore-archive",
    bounded: Annotated[bool, typer.Option(help="Stop at the end offsets present at start.")] = False,
    max_rows: Annotated[int, typer.Option(min=1, help="Buffered rows that trigger a flush.")] = 200_000,
    flush_interval_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds between flushes (and offset commits).")
    ] = 30.0,
    dead_letters: Annotated[bool, typer.Option(help="Also archive the dead-letter topics.")] = True,
    schema_registry: SchemaRegistryUrl = None,
) -> None:
    """Consume the sources' topics and write `<out>/source=S/date=D/part-P-FIRST-LAST.parquet`."""
    from feature_store.archive.archiver import ArchiveConfig, Archiver  # noqa: PLC0415
    from feature_store.bootstrap import kafka_bootstrap  # noqa: PLC0415

    registry = load_cli_registry(store, version)
    known = [s.name for s in registry.sources]
    names = tuple(source or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        err.print(f"[red]unknown source(s): {', '.join(unknown)}; known: {', '.join(known)}[/]")
        raise typer.Exit(2)
    config = ArchiveConfig(
        registry=registry,
        sources=names,
        out=out_dir,
        bootstrap=bootstrap or kafka_bootstrap(),
        group_id=group_id,
        bounded=bounded,
        max_rows=max_rows,
        flush_interval_s=flush_interval_s,
        dead_letters=dead_letters,
        schema_registry=schema_registry_config(schema_registry, err),
    )
    archiver = Archiver(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    mode = "bounded" if bounded else "until stopped"
    err.print(f"archiving {', '.join(names)} (registry version {registry.version}) into {out_dir} ({mode})")
    try:
        stats = archiver.run(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    table = Table(title="archive run")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in stats.as_dict().items():
        table.add_row(name, str(value))
    out.print(table)
