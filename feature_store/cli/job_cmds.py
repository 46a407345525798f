"""`fstore job`: run the generic feature job from an applied registry version."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from feature_store.adapters.cql import CqlConfig
from feature_store.bootstrap import LOCAL_STORE_URL, kafka_bootstrap
from feature_store.cli.options import SchemaRegistryUrl, schema_registry_config
from feature_store.definitions.apply import load_applied
from feature_store.definitions.stores import StoreUrlError, open_registry_store, resolve_store_url
from feature_store.stream.environment import FlinkSettings

app = typer.Typer(help="Streaming feature jobs (PyFlink).", no_args_is_help=True)
err = Console(stderr=True)
out = Console()


class StateBackendOption(StrEnum):
    """`--state-backend`: where the job's keyed state lives."""

    HASHMAP = "hashmap"
    ROCKSDB = "rocksdb"


class TileMergeOption(StrEnum):
    """`--tile-merge`: what merges the SQL-eligible views' one-event IRs into tiles."""

    OPERATOR = "operator"
    SQL = "sql"


class WriteBatchingOption(StrEnum):
    """`--write-batching`: which waiting tiles share an UNLOGGED batch."""

    REPLICA_SET = "replica-set"
    PARTITION = "partition"


def checkpoint_uri(checkpoint_dir: Path | None, group_id: str) -> str | None:
    """Where the job's checkpoints go: the option, $FSTORE_CHECKPOINT_DIR, else (a local run) the
    stack's folder; ``None`` leaves it to the cluster's Flink configuration."""
    if checkpoint_dir is not None:
        return checkpoint_dir.resolve().as_uri()
    configured = os.environ.get("FSTORE_CHECKPOINT_DIR")
    if configured:
        return configured
    from feature_store.stack.layout import Layout  # noqa: PLC0415

    try:
        layout = Layout.default()
    except RuntimeError:  # not in a checkout: the cluster's configuration decides
        return None
    return (layout.stack / "checkpoints" / group_id).resolve().as_uri()


@app.command()
def run(
    store: Annotated[
        str | None, typer.Option(help="Registry store URL (default: $FSTORE_REGISTRY_STORE).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Pin an applied registry version (default: latest).")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option(help="Sources to run (repeatable; default: all).")
    ] = None,
    online_store: Annotated[
        str | None, typer.Option(help="cql:// URL of the online store (default: the registry store's).")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    group_id: Annotated[str, typer.Option(help="Kafka consumer group prefix.")] = "fstore-features",
    bounded: Annotated[bool, typer.Option(help="Stop at the offsets present at start.")] = False,
    parallelism: Annotated[int, typer.Option(min=1)] = 1,
    execution_mode: Annotated[str, typer.Option(help="PyFlink python.execution-mode.")] = "thread",
    checkpoint_interval_ms: Annotated[int, typer.Option(help="0 disables checkpoints.")] = 10_000,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where checkpoints are kept (default: $FSTORE_CHECKPOINT_DIR, else the local stack's "
            ".stack/checkpoints/<group id>; Flink's in-memory default caps state at 5 MiB)."
        ),
    ] = None,
    restore_from: Annotated[str | None, typer.Option(help="A retained checkpoint or savepoint.")] = None,
    flush_interval_ms: Annotated[int, typer.Option(help="How often dirty tiles are written.")] = 250,
    catch_up_flush_ms: Annotated[
        int,
        typer.Option(
            help="How often while catching up (newest event > 10 s behind the clock); "
            "at most --flush-interval-ms disables it."
        ),
    ] = 1000,
    idle_timeout_ms: Annotated[
        int, typer.Option(help="Mark a Kafka partition idle after this long without data (0 = never).")
    ] = 0,
    sql_tiles: Annotated[
        bool,
        typer.Option(help="Merge the tiles of integer-IR views in Flink SQL (off: all in Python)."),
    ] = True,
    jvm_route: Annotated[
        bool,
        typer.Option(
            help="Route a source's records in the JVM when all its views merge in SQL (off: in Python)."
        ),
    ] = True,
    state_backend: Annotated[
        StateBackendOption,
        typer.Option(
            help="Where keyed state lives: the JVM heap (hashmap) or local disk (rocksdb, for "
            "state larger than memory; incremental checkpoints)."
        ),
    ] = StateBackendOption.HASHMAP,
    tile_merge: Annotated[
        TileMergeOption,
        typer.Option(
            help="How the JVM merges those views' tiles: a keyed operator (operator) or Flink SQL "
            "mini-batch aggregations (sql); the same tiles either way."
        ),
    ] = TileMergeOption.OPERATOR,
    write_batching: Annotated[
        WriteBatchingOption,
        typer.Option(
            help="Which tiles share a write batch: every entity the same store replicas own "
            "(replica-set), or one entity's tiles in one table (partition)."
        ),
    ] = WriteBatchingOption.REPLICA_SET,
    write_batch_bytes: Annotated[
        int,
        typer.Option(min=1, help="A write batch's size at most, as the store counts it (below its warning)."),
    ] = 16_384,
    schema_registry: SchemaRegistryUrl = None,
) -> None:
    """Run the feature job for the registry's sources on the local MiniCluster (or in a cluster)."""
    from feature_store.stream.feature_job import JobConfig  # noqa: PLC0415 - pulls in PyFlink
    from feature_store.stream.feature_job import run as run_job  # noqa: PLC0415

    url = resolve_store_url(store)
    if url is None:
        err.print("[red]no registry store: pass --store or set FSTORE_REGISTRY_STORE[/]")
        raise typer.Exit(2)
    try:
        registry = load_applied(open_registry_store(url), version)
        online = online_store or (url if url.startswith("cql:") else LOCAL_STORE_URL)
        cql = CqlConfig.from_url(online)
    except (StoreUrlError, ValueError, LookupError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if registry is None:
        err.print(f"[red]nothing applied in {url} yet: run `fstore apply` first[/]")
        raise typer.Exit(1)
    names = tuple(source or [s.name for s in registry.sources])
    unknown = [n for n in names if n not in {s.name for s in registry.sources}]
    if unknown:
        err.print(f"[red]unknown source(s): {', '.join(unknown)}[/]")
        raise typer.Exit(2)
    schemas = schema_registry_config(schema_registry, err)
    ckpt = checkpoint_uri(checkpoint_dir, group_id) if checkpoint_interval_ms else None
    config = JobConfig(
        registry=registry,
        sources=names,
        bootstrap=bootstrap or kafka_bootstrap(),
        cql=cql,
        group_id=group_id,
        flush_interval_ms=flush_interval_ms,
        catch_up_flush_ms=catch_up_flush_ms,
        idleness_ms=idle_timeout_ms,
        bounded=bounded,
        sql_tiles=sql_tiles,
        jvm_route=jvm_route,
        tile_merge="sql" if tile_merge is TileMergeOption.SQL else "operator",
        write_batching="partition" if write_batching is WriteBatchingOption.PARTITION else "replica_set",
        write_batch_bytes=write_batch_bytes,
        schema_registry=schemas,
        flink=FlinkSettings(
            parallelism=parallelism,
            execution_mode=execution_mode,
            checkpoint_interval_ms=checkpoint_interval_ms or None,
            checkpoint_dir=ckpt,
            restore_from=restore_from,
            state_backend="rocksdb" if state_backend is StateBackendOption.ROCKSDB else "hashmap",
        ),
    )
    out.print(f"running the feature job for {', '.join(names)} with registry version {registry.version}")
    net_ms = run_job(config, job_name=f"fstore-features-v{registry.version}")
    out.print(f"job net runtime {net_ms} ms")
