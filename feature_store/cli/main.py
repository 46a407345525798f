"""`fstore`: the command line of the feature store."""

from __future__ import annotations

import typer

from feature_store import bootstrap  # noqa: F401 - registers the cql:// store
from feature_store.cli import (
    archive_cmds,
    demo,
    dev,
    events_cmds,
    export_cmds,
    job_cmds,
    registry_cmds,
    serve_cmds,
)

app = typer.Typer(
    name="fstore",
    help="Streaming feature store: registry, local stack, jobs, serving and export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(job_cmds.app, name="job")
app.add_typer(events_cmds.app, name="events")
registry_cmds.register(app)
serve_cmds.register(app)
app.command("demo")(demo.demo)
app.add_typer(archive_cmds.app, name="archive")
export_cmds.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":
    main()
