"""`fstore dev`: the local stack (Kafka KRaft + Cassandra from Maven Central, PyFlink MiniCluster)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from feature_store.stack import check as stack_check
from feature_store.stack import fetch, services
from feature_store.stack.layout import Layout, Ports

app = typer.Typer(help="Run the local stack: Kafka (KRaft) and Cassandra on 127.0.0.1.", no_args_is_help=True)
err = Console(stderr=True)
out = Console()

ServiceArg = Annotated[
    list[str] | None, typer.Argument(help="Services to act on (default: all): kafka, cassandra.")
]


def _selected(names: list[str] | None) -> list[str]:
    chosen = names or list(services.SERVICES)
    unknown = [n for n in chosen if n not in services.SERVICES]
    if unknown:
        err.print(f"[red]unknown service(s): {', '.join(unknown)}[/]; known: {', '.join(services.SERVICES)}")
        raise typer.Exit(2)
    return chosen


@app.command("fetch")
def fetch_cmd(force: Annotated[bool, typer.Option(help="Resolve again even if current.")] = False) -> None:
    """Resolve the pinned jars (Kafka, Cassandra, Flink Kafka connector) into .stack/lib."""
    layout = Layout.default()
    try:
        with err.status("resolving jars from Maven Central (stack/pom.xml)…"):
            did = fetch.fetch_jars(layout, force=force)
    except fetch.FetchError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    out.print("jars resolved into .stack/lib" if did else "jars already current")


@app.command()
def up(names: ServiceArg = None) -> None:
    """Start the stack (idempotent) and wait until every service answers real requests."""
    layout, ports = Layout.default(), Ports.from_env()
    try:
        fetch.fetch_jars(layout)
        for name in _selected(names):
            with err.status(f"starting {name}…") as spinner:
                msg = services.start(layout, ports, name, on_wait=spinner.update)
            out.print(f"[green]✓[/] {msg}")
    except (services.StackError, fetch.FetchError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    out.print(f"Flink: PyFlink MiniCluster with {layout.kafka_connector_jar.name}")


@app.command()
def down(names: ServiceArg = None) -> None:
    """Stop what `up` started (by pid file); leaves data in .stack/data."""
    layout = Layout.default()
    for name in reversed(_selected(names)):
        out.print(services.stop(layout, name))


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show each service's pid, port and readiness; exit 1 if any is not ready."""
    layout, ports = Layout.default(), Ports.from_env()
    rows = services.status(layout, ports)
    if as_json:
        out.print_json(
            json.dumps([{"name": r.name, "pid": r.pid, "port": r.port, "ready": r.ready} for r in rows])
        )
    else:
        table = Table("service", "pid", "port", "ready")
        for r in rows:
            table.add_row(
                r.name, str(r.pid or "-"), str(r.port), "[green]yes[/]" if r.ready else "[red]no[/]"
            )
        out.print(table)
    if not all(r.ready for r in rows):
        raise typer.Exit(1)


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="kafka or cassandra")],
    lines: Annotated[int, typer.Option("-n", help="How many lines.")] = 50,
) -> None:
    """Print the last lines of a service's log."""
    layout = Layout.default()
    svc = services.SERVICES.get(name)
    if svc is None:
        err.print(f"[red]unknown service {name!r}[/]")
        raise typer.Exit(2)
    out.print(services.tail(layout.logs / svc.log_file, lines), markup=False, highlight=False)


@app.command()
def check() -> None:
    """Prove the running stack end to end: Kafka -> PyFlink -> Kafka, and a CQL write/read."""
    ports = Ports.from_env()
    try:
        stack_check.check_cql(ports, out.print)
        stack_check.check_flink_kafka(ports, out.print)
    except stack_check.CheckFailed as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
