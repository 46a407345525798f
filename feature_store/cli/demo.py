"""`fstore demo`: the main path end to end on the local stack, narrated step by step.

events -> Kafka -> Flink feature job -> CQL store -> gRPC look-up -> point-in-time export,
plus the archive the export reads. Every step runs the same `fstore` command a user would,
in a demo namespace (its own keyspace and topic prefix), so re-running is safe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from feature_store.stack import check as stack_check
from feature_store.stack import services
from feature_store.stack.layout import Layout, Ports

out = Console()
err = Console(stderr=True)

SERVICE = "ranking_v1"


class DemoFailed(RuntimeError):
    pass


def _fstore(*args: str, env: dict[str, str], capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "feature_store.cli.main", *args]
    out.print(f"[dim]$ fstore {' '.join(args)}[/]")
    proc = subprocess.run(cmd, env=env, text=True, capture_output=capture, check=False)
    if proc.returncode != 0:
        detail = (proc.stdout or "")[-1500:] + (proc.stderr or "")[-2500:] if capture else ""
        raise DemoFailed(f"`fstore {' '.join(args)}` failed ({proc.returncode})\n{detail}")
    return proc.stdout if capture else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoFailed("the server exited during start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise DemoFailed(f"the server did not listen on {port} within {timeout_s:.0f}s")


def _spine(path: Path, users: list[str], t_ms: int) -> None:
    import pyarrow as pa  # noqa: PLC0415 - offline-only dependency
    import pyarrow.parquet as pq  # noqa: PLC0415

    pq.write_table(
        pa.table(
            {
                "user_id": users,
                "ts": pa.array([t_ms] * len(users), pa.timestamp("ms", tz="UTC")),
                "label": [i % 2 for i in range(len(users))],
            }
        ),
        path,
    )


def _compare(served: list[dict[str, Any]], exported: list[dict[str, Any]]) -> tuple[int, int]:
    """(values compared, mismatches) between gRPC rows and export rows, feature by feature."""
    compared = mismatched = 0
    for online, offline in zip(served, exported, strict=True):
        for name, value in online["features"].items():
            short = name.split(":", 1)[1]
            if short not in offline:
                continue
            compared += 1
            other = offline[short]
            same = value == other or (
                isinstance(value, float) and isinstance(other, float) and abs(value - other) < 1e-9
            )
            mismatched += not same
    return compared, mismatched


def demo(
    events: Annotated[int, typer.Option(help="How many events to generate.")] = 20_000,
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its archive and files.")] = Path(
        "out/demo"
    ),
) -> None:
    """Run the whole path on the local stack (started by `make demo` / `fstore dev up`)."""
    layout, ports = Layout.default(), Ports.from_env()
    not_ready = [s.name for s in services.status(layout, ports) if not s.ready]
    if not_ready:
        err.print(f"[red]not running: {', '.join(not_ready)}[/]; start the stack with `fstore dev up`")
        raise typer.Exit(1)
    run_id = time.strftime("%Y%m%d%H%M%S")
    keyspace, prefix = f"demo_{run_id}", f"demo{run_id}."
    workdir = workdir.resolve() / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "FSTORE_REGISTRY_STORE": f"cql://127.0.0.1:{ports.cassandra}/{keyspace}",
        "FSTORE_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports.kafka}",
    }
    registry_dir = workdir / "registry"
    try:
        out.print(Rule("1. the local stack"))
        stack_check.check_cql(ports, out.print)

        out.print(Rule("2. the registry: validate, plan, apply"))
        _prefixed_registry(layout.root / "registry", registry_dir, prefix)
        env["FSTORE_REGISTRY"] = str(registry_dir)
        _fstore("validate", env=env)
        _fstore("apply", "-m", "demo", env=env)

        out.print(Rule(f"3. {events:,} user events -> Kafka (Avro, Confluent wire format)"))
        _fstore(
            "events", "produce", "--max-events", str(events), "--rate", "2000", "--unthrottled",
            "--event-time-offset", "-600s", "--malformed-fraction", "0.01", "--seed", "7", env=env,
        )  # fmt: skip

        out.print(Rule("4. the feature job (PyFlink): Kafka -> tiles in the CQL store; bad events -> DLQ"))
        _fstore("job", "run", "--bounded", "--checkpoint-interval-ms", "0", "--group-id", keyspace, env=env)
        out.print(Rule("5. the archive for offline use (Parquet by source and event date)"))
        archive = workdir / "archive"
        _fstore("archive", "run", "--bounded", "--out", str(archive), env=env)

        out.print(Rule("6. gRPC look-up (fstore serve + the Python client)"))
        served, t_ms = _serve_and_get(env, workdir)

        out.print(Rule("7. point-in-time export as of the look-up time"))
        spine, exported_path = workdir / "spine.parquet", workdir / "training.parquet"
        _spine(spine, [row["user_id"] for row in served], t_ms)
        _fstore(
            "export", "--spine", str(spine), "--service", SERVICE, "--out", str(exported_path),
            "--archive", str(archive), env=env,
        )  # fmt: skip
        import pyarrow.parquet as pq  # noqa: PLC0415

        exported = pq.read_table(exported_path).to_pylist()
        compared, mismatched = _compare(served, exported)
        columns = ["user_id", "label", *[c for c in exported[0] if c not in ("user_id", "ts", "label")][:5]]
        table = Table(*columns, title="training rows (first columns)")
        for row in exported[:5]:
            table.add_row(*[str(row[c]) for c in columns])
        out.print(table)
        verdict = "[green]equal[/]" if mismatched == 0 else f"[red]{mismatched} differ[/]"
        out.print(f"export vs. what serving returned at the same time: {compared} values compared, {verdict}")
        if mismatched:
            raise DemoFailed("online and offline values differ")
    except DemoFailed as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    out.print(Rule("done"))
    out.print(f"keyspace {keyspace}, topics {prefix}*, files in {workdir}")


def _prefixed_registry(src: Path, dst: Path, prefix: str) -> None:
    import shutil  # noqa: PLC0415

    shutil.copytree(src, dst, dirs_exist_ok=True)
    for yaml in dst.rglob("*.yaml"):
        yaml.write_text(yaml.read_text().replace("topic: events.", f"topic: {prefix}events."))


def _serve_and_get(env: dict[str, str], workdir: Path) -> tuple[list[dict[str, Any]], int]:
    from feature_store.serving.client import FeatureClient  # noqa: PLC0415

    port, metrics = _free_port(), _free_port()
    server_env = env | {
        "FSTORE_SERVE_LISTEN": f"127.0.0.1:{port}",
        "FSTORE_SERVE_METRICS_PORT": str(metrics),
    }
    log = (workdir / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "feature_store.cli.main", "serve"],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_port(port, server)
        users = _active_users(env)
        client = FeatureClient(f"127.0.0.1:{port}")
        t_ms = int(time.time() * 1000)
        started = time.perf_counter()
        result = client.get_online_features(service=SERVICE, entities={"user_id": users})
        elapsed_ms = (time.perf_counter() - started) * 1000
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    served: list[dict[str, Any]] = [
        {"user_id": u, "features": dict(zip(result.feature_names, values, strict=True))}
        for u, values in zip(users, result.values, strict=True)
    ]
    shown = [n.split(":", 1)[1] for n in result.feature_names[:5]]
    table = Table("user", *shown, title=f"{SERVICE} for {len(users)} users (first features)")
    for u, values in list(zip(users, result.values, strict=True))[:5]:
        table.add_row(u, *[str(v) for v in values[:5]])
    out.print(table)
    out.print(f"one batched GetOnlineFeatures for {len(users)} users took {elapsed_ms:.1f} ms")
    (workdir / "served.json").write_text(json.dumps({"t_ms": t_ms, "rows": served}, default=str))
    return served, t_ms


def _active_users(env: dict[str, str]) -> list[str]:
    """Users the generator made active (the same seed): the first ten distinct acting users."""
    from feature_store.definitions.compiler import load_registry  # noqa: PLC0415
    from feature_store.events.generator import EventKind, GeneratorConfig, generate  # noqa: PLC0415

    registry = load_registry(Path(env["FSTORE_REGISTRY"]))
    users: list[str] = []
    for ev in generate(registry, GeneratorConfig(seed=7, rate=2000), max_events=2000):
        if ev.kind is EventKind.VALID and ev.key and ev.key.decode() not in users:
            users.append(ev.key.decode())
        if len(users) == 10:
            break
    return users
