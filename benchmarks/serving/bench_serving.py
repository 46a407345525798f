"""Serving benchmark: load tiles, start the real server, drive it with ghz at a fixed rate.

    .venv/bin/python -m benchmarks.serving.bench_serving --entities 1000 --rps 200 --duration 10
    .venv/bin/python -m benchmarks.serving.bench_serving --smoke          # a few seconds, to check it runs

Scenarios: ``1x20`` (1 entity x 20 features, ~9 views) and ``100x50`` (100 entities x 50
features, 12 views). For each: the real server (a separate ``fstore serve`` process, gc tuned)
and, unless ``--no-floor``, the floors: an empty grpc.aio handler under the same ghz load, and a
bare cassandra-driver loop issuing the same reads. One JSON file per run under out/benchmarks/.

ghz: ``GOBIN=$PWD/.stack/bin go install github.com/bojand/ghz/cmd/ghz@latest``; without it the
run stops (ghz is the driver of record; the floors need it too).

Feast: ``--target feast`` calls :func:`benchmarks.serving.feast_hook.run_feast` with the same
scenarios, keyspace and entity ids, and stores its results in the same JSON layout.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.serving.common import (
    ROOT,
    SCENARIOS,
    feature_refs,
    free_port,
    ghz_path,
    request_json,
    run_ghz,
    scenario_dict,
    write_result,
)
from benchmarks.serving.floor import driver_floor
from benchmarks.serving.load_tiles import load
from feature_store.serving.plans import CompiledRegistry


def wait_healthy(target: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{target} not SERVING after {timeout_s}s")


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s}s")


def start_server(keyspace: str, port: int, metrics_port: int, cql_port: int) -> subprocess.Popen[bytes]:
    url = f"cql://127.0.0.1:{cql_port}/{keyspace}"
    env = {
        **os.environ,
        "FSTORE_SERVE_LISTEN": f"127.0.0.1:{port}",
        "FSTORE_SERVE_REGISTRY_STORE": url,
        "FSTORE_SERVE_ONLINE_STORE": url,
        "FSTORE_SERVE_METRICS_PORT": str(metrics_port),
        "FSTORE_SERVE_RELOAD_INTERVAL_S": "0",
        "FSTORE_SERVE_LOG_LEVEL": "WARNING",
        "FSTORE_SERVE_DEADLINE_MS": "1500",  # measure whole answers, also for 100x50 on 2 cores
    }
    return subprocess.Popen([sys.executable, "-m", "feature_store.cli.main", "serve"], env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def scrape(metrics_port: int) -> str:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text: str = page.read().decode()
    return text


def server_side(metrics: str, service: str = "_refs") -> tuple[float, float]:
    """(sum of seconds, count) of the server-side GetOnlineFeatures histogram for ``service``."""
    total = count = 0.0
    for line in metrics.splitlines():
        if 'method="GetOnlineFeatures"' in line and f'feature_service="{service}"' in line:
            name, _, value = line.rpartition(" ")
            if name.startswith("fstore_serving_request_duration_seconds_sum"):
                total = float(value)
            elif name.startswith("fstore_serving_request_duration_seconds_count"):
                count = float(value)
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keyspace", default="bench_serving")
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--events-per-entity", type=int, default=20)
    parser.add_argument("--skip-load", action="store_true", help="reuse tiles already in the keyspace")
    parser.add_argument("--scenarios", default="1x20,100x50")
    parser.add_argument("--rps", type=int, default=200, help="requests per second (1x20)")
    parser.add_argument("--rps-batch", type=int, default=2, help="requests per second (100x50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cql-port", type=int, default=9042)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--target", choices=["fstore", "feast"], default="fstore")
    parser.add_argument("--smoke", action="store_true", help="tiny and short: check the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.entities, args.events_per_entity, args.duration = 100, 10, 3.0
        args.rps, args.rps_batch = 50, 1

    ghz = ghz_path()
    if ghz is None:
        sys.exit("ghz not found: GOBIN=$PWD/.stack/bin go install github.com/bojand/ghz/cmd/ghz@latest")
    scenarios = [SCENARIOS[s] for s in args.scenarios.split(",")]
    result: dict[str, Any] = {"target": args.target, "args": vars(args), "scenarios": {}}

    if args.skip_load:
        from benchmarks.serving.common import bench_registry  # noqa: PLC0415

        registry = bench_registry()
        result["load"] = {"skipped": True}
    else:
        registry, result["load"] = load(
            args.keyspace, args.entities, args.events_per_entity, port=args.cql_port
        )
        print("loaded", result["load"], flush=True)
    compiled = CompiledRegistry(registry)

    if args.target == "feast":
        from benchmarks.serving.feast_hook import run_feast  # noqa: PLC0415

        for scenario in scenarios:
            refs = feature_refs(registry, scenario.features)
            result["scenarios"][scenario.name] = run_feast(
                scenario,
                refs,
                keyspace=args.keyspace,
                entities=args.entities,
                rps=args.rps,
                duration_s=args.duration,
            )
        print(write_result("feast", result))
        return

    port, metrics_port = free_port(), free_port()
    server = start_server(args.keyspace, port, metrics_port, args.cql_port)
    target = f"127.0.0.1:{port}"
    try:
        wait_healthy(target)
        for scenario in scenarios:
            refs = feature_refs(registry, scenario.features)
            plan = compiled.refs_plan(refs)
            rps = args.rps if scenario.batch == 1 else args.rps_batch
            data = request_json(scenario, refs, args.entities)
            run_ghz(
                ghz, target, data, rps=rps, duration_s=min(2.0, args.duration), concurrency=args.concurrency
            )
            sum0, count0 = server_side(scrape(metrics_port))
            measured = run_ghz(
                ghz, target, data, rps=rps, duration_s=args.duration, concurrency=args.concurrency
            )
            sum1, count1 = server_side(scrape(metrics_port))
            entry: dict[str, Any] = {
                "scenario": scenario_dict(scenario),
                "views": [vp.view.name for vp in plan.views],
                "rps_target": rps,
                "server": measured,
                # the server's own histogram over the measured run: time inside the handler
                "server_side_mean_ms": (sum1 - sum0) / (count1 - count0) * 1000 if count1 > count0 else None,
            }
            print(scenario.name, "server", measured["summary"], flush=True)
            result["scenarios"][scenario.name] = entry
        result["metrics"] = scrape(metrics_port)
    finally:
        stop(server)

    if not args.no_floor:
        empty_port = free_port()
        empty = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.serving.floor", "empty-server", "--port", str(empty_port)],
            cwd=ROOT,
        )
        try:
            wait_port(empty_port)
            for scenario in scenarios:
                refs = feature_refs(registry, scenario.features)
                rps = args.rps if scenario.batch == 1 else args.rps_batch
                data = request_json(scenario, refs, args.entities)
                floor = run_ghz(
                    ghz,
                    f"127.0.0.1:{empty_port}",
                    data,
                    rps=rps,
                    duration_s=args.duration,
                    concurrency=args.concurrency,
                    use_proto=True,
                )
                result["scenarios"][scenario.name]["floor_empty_grpc"] = floor
                print(scenario.name, "empty grpc", floor["summary"], flush=True)
        finally:
            stop(empty)
        for scenario in scenarios:
            views = result["scenarios"][scenario.name]["views"]
            lookups = (100 if args.smoke else 500) if scenario.batch == 1 else (5 if args.smoke else 20)
            drv = driver_floor(args.keyspace, views, scenario, args.entities, lookups, port=args.cql_port)
            result["scenarios"][scenario.name]["floor_driver"] = drv
            print(scenario.name, "bare driver", drv, flush=True)

    print(write_result("smoke" if args.smoke else "fstore", result))


if __name__ == "__main__":
    main()
