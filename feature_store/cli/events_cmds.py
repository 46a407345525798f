"""`fstore events`: realistic, deterministic event traffic for the demo, tests and benchmarks."""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.definitions.durations import parse_duration
from feature_store.definitions.errors import RegistryInvalid
from feature_store.events.generator import (
    EventGenerator,
    EventKind,
    GeneratedEvent,
    GeneratorConfig,
    with_topic_prefix,
)
from feature_store.events.producer import ProduceSummary, create_topics, generate_only, produce_events
from feature_store.stack.layout import Ports

REGISTRY_ENV = "FSTORE_REGISTRY"
BOOTSTRAP_ENV = "FSTORE_KAFKA_BOOTSTRAP"

app = typer.Typer(
    help="Generate events of the registry's sources and produce them to Kafka.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


@app.callback()
def events() -> None:
    """Generate events of the registry's sources and produce them to Kafka."""


def _default_bootstrap() -> str:
    return f"127.0.0.1:{Ports.from_env().kafka}"


def parse_start(start_time: str | None, offset: str | None, now_ms: int | None = None) -> int:
    """The simulated clock's start in epoch ms: an ISO time, or now shifted by ``[+-]<duration>``."""
    if start_time is not None and offset is not None:
        raise typer.BadParameter("give --start-time or --event-time-offset, not both")
    if start_time is not None:
        try:
            parsed = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
        except ValueError as exc:
            raise typer.BadParameter(f"--start-time {start_time!r} is not an ISO 8601 time") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    base = now_ms if now_ms is not None else int(time.time() * 1000)
    if offset is None:
        return base
    text = offset.strip()
    sign = -1 if text.startswith("-") else 1
    raw = text.lstrip("+-")
    try:
        shift = parse_duration(int(raw) if raw.isdigit() else raw, allow_zero=True).ms
    except ValueError as exc:
        raise typer.BadParameter(f"--event-time-offset: {exc}") from exc
    return base + sign * shift


@app.command()
def produce(
    rate: Annotated[float, typer.Option(help="Events per second (simulated clock and send rate).")] = 1000.0,
    duration: Annotated[float, typer.Option(help="Seconds of simulated time to generate.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same events.")] = 0,
    registry: Annotated[
        Path,
        typer.Option(
            "--registry", "-r", envvar=REGISTRY_ENV, help="Registry folder whose sources get events."
        ),
    ] = Path("registry"),
    bootstrap: Annotated[
        str | None,
        typer.Option(
            envvar=BOOTSTRAP_ENV, help="Kafka bootstrap HOST:PORT (default: 127.0.0.1:$FSTORE_KAFKA_PORT)."
        ),
    ] = None,
    late_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of events later than their source's allowed lateness."),
    ] = 0.0,
    malformed_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of undecodable events (for the dead-letter path).")
    ] = 0.0,
    users: Annotated[int, typer.Option(min=2, help="Size of the simulated user population.")] = 10_000,
    start_time: Annotated[
        str | None,
        typer.Option(help="Event time of the first event, ISO 8601 (UTC if no zone); default: now."),
    ] = None,
    event_time_offset: Annotated[
        str | None,
        typer.Option(help="Start event time at now shifted by [+-]DURATION, e.g. -2h to backfill."),
    ] = None,
    max_events: Annotated[int | None, typer.Option(min=0, help="Stop after this many events.")] = None,
    warmup: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Simulated seconds of sessions run before the first event; default: auto."
        ),
    ] = None,
    topic_prefix: Annotated[str, typer.Option(help="Prefix of every topic (isolated runs, tests).")] = "",
    create: Annotated[
        bool, typer.Option("--create-topics/--no-create-topics", help="Create missing topics first.")
    ] = True,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of topics it creates.")] = 2,
    unthrottled: Annotated[
        bool, typer.Option(help="Send as fast as possible; event times still advance at --rate.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Only generate (no Kafka): measures generation speed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Produce realistic events of every source: sessions of Zipf-active users, late and malformed ones."""
    try:
        reg = with_topic_prefix(load_registry(registry), topic_prefix)
    except RegistryInvalid as exc:
        err.print(f"[red]invalid registry {registry}[/]\n{exc}")
        raise typer.Exit(1) from exc
    try:
        config = GeneratorConfig(
            seed=seed,
            rate=rate,
            users=users,
            start_ms=parse_start(start_time, event_time_offset),
            late_fraction=late_fraction,
            malformed_fraction=malformed_fraction,
            warmup_s=warmup,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    server = bootstrap or _default_bootstrap()
    if not dry_run and create:
        try:
            with err.status(f"creating missing topics on {server}…"):
                create_topics(reg, server, partitions)
        except Exception as exc:  # AdminClient raises KafkaException, RuntimeError...
            err.print(f"[red]cannot create topics on {server}: {exc}[/] (is the stack up? `fstore dev up`)")
            raise typer.Exit(1) from exc
    with err.status("warming up sessions…"):
        generator = EventGenerator(reg, config)
    gc.freeze()  # the long-lived setup (imports, population) leaves the collector's scans: ~10% faster
    total = _expected(max_events, duration, rate)
    summary = _run(generator, max_events, duration, total, server, None if unthrottled else rate, dry_run)
    if as_json:
        payload = {"dry_run": dry_run, "registry": str(registry), "seed": seed, **summary.to_json()}
        out.print_json(json.dumps(payload))
    else:
        _print_summary(reg, summary, dry_run)
    if summary.delivery_errors or summary.undelivered_after_flush:
        raise typer.Exit(1)


def _expected(max_events: int | None, duration: float, rate: float) -> int:
    by_time = math.ceil(duration * rate - 1e-9)
    return by_time if max_events is None else min(max_events, by_time)


def _run(
    generator: EventGenerator,
    max_events: int | None,
    duration: float,
    total: int,
    server: str,
    rate: float | None,
    dry_run: bool,
) -> ProduceSummary:
    events: Iterator[GeneratedEvent] = generator.events(max_events=max_events, duration_s=duration)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("generating" if dry_run else f"producing to {server}", total=total)
        report: Callable[[int], None] = lambda n: bar.update(task, completed=n)  # noqa: E731
        if dry_run:
            return generate_only(events, progress=report)
        return produce_events(events, server, rate=rate, progress=report)


def _print_summary(registry: Registry, summary: ProduceSummary, dry_run: bool) -> None:
    kinds = [k.value for k in EventKind]
    table = Table(title="events generated" if dry_run else "events produced")
    table.add_column("source")
    table.add_column("topic")
    for kind in kinds:
        table.add_column(kind, justify="right")
    table.add_column("total", justify="right")
    per_source = summary.by_source()
    for source in registry.sources:
        row = per_source.get(source.name, dict.fromkeys(kinds, 0))
        table.add_row(source.name, source.topic, *(str(row[k]) for k in kinds), str(sum(row.values())))
    totals = summary.by_kind()
    table.add_row("[bold]all", "", *(f"[bold]{totals[k]}" for k in kinds), f"[bold]{summary.produced}")
    out.print(table)
    if dry_run:
        out.print(
            f"generated {summary.produced} events in {summary.produce_seconds:.2f}s: "
            f"[bold]{summary.achieved_rate:,.0f} events/s[/]"
        )
        return
    target = f"target {summary.target_rate:,.0f}/s" if summary.target_rate else "unthrottled"
    out.print(
        f"produced {summary.produced} events in {summary.produce_seconds:.2f}s: "
        f"[bold]{summary.achieved_rate:,.0f} events/s[/] ({target}); "
        f"delivered {summary.delivered} ({summary.delivered_rate:,.0f}/s incl. flush)"
    )
    if summary.delivery_errors or summary.undelivered_after_flush:
        err.print(
            f"[red]{summary.delivery_errors} delivery errors, {summary.undelivered_after_flush} undelivered "
            f"after flush[/]" + "".join(f"\n  {e}" for e in summary.error_samples)
        )
    if summary.interrupted:
        err.print("[yellow]interrupted: stopped early[/]")
