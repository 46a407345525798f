"""`fstore demo`: the main path end to end on the local stack, narrated step by step."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.rule import Rule

from feature_store.stack import check as stack_check
from feature_store.stack import services
from feature_store.stack.layout import Layout, Ports

out = Console()
err = Console(stderr=True)


def demo() -> None:
    """Run the whole path on the local stack (started by `make demo` / `fstore dev up`)."""
    layout, ports = Layout.default(), Ports.from_env()
    not_ready = [s.name for s in services.status(layout, ports) if not s.ready]
    if not_ready:
        err.print(f"[red]not running: {', '.join(not_ready)}[/]; start the stack with `fstore dev up`")
        raise typer.Exit(1)
    try:
        out.print(Rule("1. the local stack"))
        stack_check.check_cql(ports, out.print)
        stack_check.check_flink_kafka(ports, out.print)
    except stack_check.CheckFailed as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    out.print(Rule("done"))
