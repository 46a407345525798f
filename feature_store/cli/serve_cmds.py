"""`fstore serve` (the gRPC feature server) and `fstore get` (look features up from it).

Exit codes of `get`: 0 ok, 1 the server refused or failed (the gRPC status is printed), 2 bad
command line.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from feature_store.serving.client import FeatureClient, FeatureServingError, OnlineFeatures, TlsOptions
from feature_store.serving.v1 import serving_pb2 as pb

TARGET_ENV = "FSTORE_SERVE_TARGET"
TOKEN_ENV = "FSTORE_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_TARGET = "127.0.0.1:50051"

err = Console(stderr=True)
out = Console()


def serve(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML/JSON settings file (also $FSTORE_SERVE_CONFIG)."),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="host:port to listen on (default 127.0.0.1:50051).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Registry store URL (default: $FSTORE_REGISTRY_STORE).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Serve this applied registry version, without reloading.")
    ] = None,
    online_store: Annotated[
        str | None, typer.Option(help="cql:// URL of the online store (default: the registry store's).")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port (default 9464).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Server certificate (PEM) to enable TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Server private key (PEM).")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="CA of client certificates: requires mTLS.")
    ] = None,
    auth: Annotated[
        bool | None, typer.Option("--auth/--no-auth", help="Require API tokens (default: off).")
    ] = None,
    tokens_file: Annotated[Path | None, typer.Option(help="YAML/JSON token grants.")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Most entity rows per request (default 1000).")
    ] = None,
    deadline_ms: Annotated[
        float | None, typer.Option(help="Server-side cap on a look-up (default 200).")
    ] = None,
    reload_interval: Annotated[
        float | None, typer.Option(help="Registry poll period in seconds; 0 disables (default 10).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Server processes sharing the port (SO_REUSEPORT), about one per core (default 1)."
        ),
    ] = None,
) -> None:
    """Run the gRPC feature server until SIGTERM (health goes NOT_SERVING, then in-flight RPCs drain)."""
    from feature_store import bootstrap  # noqa: F401, PLC0415 - registers cql://
    from feature_store.serving.server import run  # noqa: PLC0415
    from feature_store.serving.settings import load_settings  # noqa: PLC0415

    try:
        settings = load_settings(
            config,
            listen=listen,
            registry_store=store,
            registry_version=version,
            online_store=online_store,
            metrics_port=metrics_port,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            tls_client_ca_file=tls_client_ca,
            auth_enabled=auth,
            tokens_file=tokens_file,
            max_batch_size=max_batch_size,
            deadline_ms=deadline_ms,
            reload_interval_s=reload_interval,
            workers=workers,
        )
    except (ValidationError, ValueError, OSError) as exc:
        err.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from exc
    if settings.workers > 1:
        from feature_store.serving.workers import run_workers  # noqa: PLC0415

        raise typer.Exit(run_workers(settings))
    run(settings)


def _parse_keys(keys: list[str]) -> dict[str, list[str]]:
    columns: dict[str, list[str]] = {}
    for item in keys:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--key")
        columns.setdefault(name, []).append(value)
    return columns


def _typed(columns: dict[str, list[str]], schema: pb.FeatureServiceSchema) -> dict[str, list[Any]]:
    """Convert values of int64 join keys to int (the schema says which)."""
    int_keys = {k.join_key for k in schema.entity_keys if k.type == pb.VALUE_TYPE_INT64}
    typed: dict[str, list[Any]] = {}
    for name, values in columns.items():
        if name in int_keys:
            try:
                typed[name] = [int(v) for v in values]
            except ValueError as exc:
                raise typer.BadParameter(f"{name} is an int64 join key: {exc}", param_hint="--key") from None
        else:
            typed[name] = list(values)
    return typed


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _as_json(result: OnlineFeatures) -> dict[str, Any]:
    rows = []
    for i in range(len(result)):
        names = result.feature_names
        rows.append(
            {
                "entity": {k: v[i] for k, v in result.entities.items()},
                "values": {n: _json_value(v) for n, v in zip(names, result.values[i], strict=True)},
                "statuses": dict(zip(names, result.statuses[i], strict=True)),
                "event_timestamps_ms": dict(zip(names, result.event_timestamps_ms[i], strict=True)),
            }
        )
    return {"registry_version": result.registry_version, "features": result.feature_names, "rows": rows}


def _cell(value: Any, status: str) -> Text:
    if status != "PRESENT":
        return Text(status, style="red" if status == "ERROR" else "dim")
    text = repr(value) if isinstance(value, bytes | str) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return Text(text)


def _table(result: OnlineFeatures) -> Table:
    table = Table(title=f"registry version {result.registry_version}", title_justify="left")
    table.add_column("feature", style="cyan", no_wrap=True)
    for i in range(len(result)):
        label = ", ".join(f"{k}={v[i]}" for k, v in result.entities.items())
        table.add_column(label)
    single = len(result) == 1
    if single:
        table.add_column("newest event (UTC)", style="dim")
    for j, name in enumerate(result.feature_names):
        cells = [_cell(result.values[i][j], result.statuses[i][j]) for i in range(len(result))]
        if single:
            ms = result.event_timestamps_ms[0][j]
            when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else ""
            cells.append(Text(when))
        table.add_row(name, *cells)
    return table


def get(
    key: Annotated[
        list[str],
        typer.Option("--key", "-k", help="Entity key KEY=VALUE; repeat a key for more rows."),
    ],
    service: Annotated[str | None, typer.Option("--service", "-s", help="Feature service to read.")] = None,
    feature: Annotated[
        list[str] | None, typer.Option("--feature", "-f", help="A feature 'view:feature' (repeatable).")
    ] = None,
    target: Annotated[str, typer.Option(envvar=TARGET_ENV, help="Server host:port.")] = DEFAULT_TARGET,
    token: Annotated[
        str | None, typer.Option(envvar=TOKEN_ENV, help="API token.", show_default=False)
    ] = None,
    version: Annotated[int, typer.Option(help="Registry version (0 = the server's current).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    timeout: Annotated[float, typer.Option(help="Deadline in seconds.")] = 5.0,
    tls: Annotated[bool, typer.Option(help="Use TLS (system roots unless --ca).")] = False,
    ca: Annotated[Path | None, typer.Option(help="CA of the server certificate (implies --tls).")] = None,
    client_cert: Annotated[Path | None, typer.Option(help="Client certificate for mTLS.")] = None,
    client_key: Annotated[Path | None, typer.Option(help="Client key for mTLS.")] = None,
) -> None:
    """Look features up from a running server: `fstore get -s ranking_v1 -k user_id=u1 -k user_id=u2`."""
    if (service is None) == (not feature):
        err.print("[red]give exactly one of --service or --feature[/]")
        raise typer.Exit(2)
    columns = _parse_keys(key)
    use_tls = tls or ca is not None or client_cert is not None
    options = TlsOptions(ca_file=ca, cert_file=client_cert, key_file=client_key) if use_tls else None
    try:
        with FeatureClient(target, token=token, tls=options, timeout_s=timeout) as client:
            entities: dict[str, list[Any]] = dict(columns)
            if service is not None:
                entities = _typed(columns, client.get_feature_service_schema(service))
                result = client.get_online_features(service, entities=entities, registry_version=version)
            else:
                result = client.get_online_features(
                    features=feature, entities=entities, registry_version=version
                )
    except FeatureServingError as exc:
        err.print(f"[red]{exc.code.name}[/]: {exc.details}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(_as_json(result), indent=2))
    else:
        out.print(_table(result))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("get")(get)
