"""`fstore export` (point-in-time training data) and `fstore audit consistency`."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from feature_store.cli.archive_cmds import load_cli_registry

err = Console(stderr=True)
out = Console()
audit_app = typer.Typer(help="Checks of online/offline consistency.", no_args_is_help=True)

StoreOpt = Annotated[str | None, typer.Option(help="Registry store URL (default: $FSTORE_REGISTRY_STORE).")]
VersionOpt = Annotated[int | None, typer.Option(help="Pin an applied registry version (default: latest).")]
RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="Use this YAML registry folder instead of an applied version."),
]
ArchiveOpt = Annotated[Path, typer.Option(help="Archive root written by `fstore archive run`.")]
BucketEventsOpt = Annotated[int, typer.Option(min=1, help="Archived events per bucket (bounds memory).")]
MemoryOpt = Annotated[str | None, typer.Option(help="DuckDB memory limit, e.g. 2GB.")]


class RichProgress:
    """A ProgressSink drawing one bar per view (and one for writing the output)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start(self, key: str, description: str, total: int) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, steps: int = 1) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._progress.advance(task, steps)
            if key != "assemble":
                self._progress.update(task, description=f"{key}: replay buckets")


def export(
    spine: Annotated[Path, typer.Option(help="The spine: .parquet or .csv with join keys and a timestamp.")],
    service: Annotated[str, typer.Option(help="The feature service to export.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    version: VersionOpt = None,
    store: StoreOpt = None,
    registry_dir: RegistryOpt = None,
    archive: ArchiveOpt = Path("archive"),
    timestamp_column: Annotated[
        str, typer.Option(help="Spine column with the times (tz-aware timestamps or epoch ms).")
    ] = "ts",
    full_names: Annotated[bool, typer.Option(help="Name columns <view>__<feature>.")] = False,
    event_times: Annotated[
        bool, typer.Option(help="Add <feature>__event_time_ms (newest event behind each value).")
    ] = False,
    bucket_events: BucketEventsOpt = 1_000_000,
    memory_limit: MemoryOpt = None,
    work_dir: Annotated[Path | None, typer.Option(help="Scratch folder (default: temporary).")] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="auto: vectorised where exact, else the core replay; replay: always the replay; "
            "flink: the replay as a Flink batch job (same output)."
        ),
    ] = "auto",
    parallelism: Annotated[int, typer.Option(min=1, help="Flink parallelism (--engine flink).")] = 1,
    buckets: Annotated[
        int | None, typer.Option(min=1, help="Entity buckets per view (--engine flink; default: from sizes).")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="Processes replaying entity buckets (auto/replay; default: one per core)."),
    ] = None,
) -> None:
    """Point-in-time features of a service for every spine row, as serving would have returned them."""
    from feature_store.export.engine import (  # noqa: PLC0415
        ExportError,
        ExportOptions,
        ExportSummary,
        prepare,
        run_export,
    )
    from feature_store.export.spine import SpineError  # noqa: PLC0415

    if engine not in ("auto", "replay", "flink"):
        err.print(f"[red]error:[/] --engine must be auto, replay or flink, not {engine!r}")
        raise typer.Exit(2)
    if engine != "flink" and (parallelism != 1 or buckets is not None):
        err.print("[red]error:[/] --parallelism and --buckets are options of --engine flink")
        raise typer.Exit(2)
    if engine == "flink" and processes is not None:
        err.print("[red]error:[/] --processes is an option of the local engines (use --parallelism)")
        raise typer.Exit(2)
    registry = load_cli_registry(store, version, registry_dir)
    options = ExportOptions(
        engine="auto" if engine == "auto" else "replay",
        timestamp_column=timestamp_column,
        full_names=full_names,
        event_times=event_times,
        bucket_events=bucket_events,
        memory_limit=memory_limit,
        work_dir=work_dir,
        processes=processes,  # None: one per core
    )
    try:
        prepared = prepare(registry, service, spine, archive, options)
    except (ExportError, SpineError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    for warning in prepared.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    try:
        with RichProgress(err) as progress:
            summary: ExportSummary
            if engine == "flink":
                from feature_store.export.flink_batch import FlinkExportOptions, run_flink_export  # noqa: PLC0415

                flink = FlinkExportOptions(parallelism=parallelism, buckets=buckets)
                summary = run_flink_export(prepared, out_file, options, flink, progress)
            else:
                summary = run_export(prepared, out_file, options, progress)
    except SpineError as exc:  # a bad value found while streaming the spine, before any feature work
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    err.print(
        f"wrote {summary.rows} rows x {len(summary.columns)} feature columns to {out_file} "
        f"in {summary.seconds:.1f}s (registry version {registry.version})"
    )


def consistency(
    responses: Annotated[Path, typer.Option(help="JSON Lines response log (see docs/export.md).")],
    service: Annotated[str, typer.Option(help="The feature service the responses are of.")],
    version: VersionOpt = None,
    store: StoreOpt = None,
    registry_dir: RegistryOpt = None,
    archive: ArchiveOpt = Path("archive"),
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Exit 1 if a feature's mismatch rate is above this.")
    ] = 0.0,
    float_tolerance: Annotated[float, typer.Option(min=0.0, help="Relative tolerance for floats.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    bucket_events: BucketEventsOpt = 1_000_000,
    memory_limit: MemoryOpt = None,
) -> None:
    """Compare logged online responses with values recomputed offline; report mismatch rates."""
    from feature_store.export.audit import audit  # noqa: PLC0415
    from feature_store.export.engine import ExportError, ExportOptions  # noqa: PLC0415
    from feature_store.export.responses import ResponseLogError  # noqa: PLC0415
    from feature_store.export.spine import SpineError  # noqa: PLC0415

    registry = load_cli_registry(store, version, registry_dir)
    if not responses.is_file():
        err.print(f"[red]error:[/] no response log at {responses}")
        raise typer.Exit(2)
    try:
        with RichProgress(err) as progress:
            report = audit(
                registry,
                service,
                responses,
                archive,
                threshold=threshold,
                float_tolerance=float_tolerance,
                options=ExportOptions(bucket_events=bucket_events, memory_limit=memory_limit),
                progress=None if as_json else progress,
            )
    except (ExportError, SpineError, ResponseLogError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        table = Table(title=f"online/offline consistency of {service} ({report.rows} logged rows)")
        for name, justify in (
            ("feature", "left"),
            ("rows", "right"),
            ("status diff", "right"),
            ("value diff", "right"),
            ("mismatch rate", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for f in report.features:
            style = "red" if f.rate > threshold else ""
            table.add_row(
                f.ref,
                str(f.rows),
                str(f.status_mismatches),
                str(f.value_mismatches),
                f"{f.rate:.2%}",
                style=style,
            )
        out.print(table)
    if report.failed:
        if not as_json:
            err.print(f"[red]{len(report.failed)} feature(s) above the {threshold:.2%} mismatch threshold[/]")
        raise typer.Exit(1)


audit_app.command("consistency")(consistency)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.add_typer(audit_app, name="audit")
