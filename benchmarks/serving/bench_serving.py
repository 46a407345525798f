"""Serving benchmark: ours (``fstore serve``, gRPC, ghz) and Feast's feature server (HTTP, vegeta),
side by side at the same fixed rates, plus the floors, in one run and one JSON file.

    .venv/bin/python -m benchmarks.serving.bench_serving --target both      # ours, Feast, floors
    .venv/bin/python -m benchmarks.serving.bench_serving                    # ours and floors only
    .venv/bin/python -m benchmarks.serving.bench_serving --smoke --target both   # seconds: it runs

Scenarios: ``1x20`` (1 entity x 20 features, 10 views) and ``100x50`` (100 entities x 50
features, 12 views), with random entities among ``--entities`` per request. Tiles are loaded
first (``load_tiles``), then our server starts in its own process (one process, gc tuned;
defaults except ``deadline_ms`` 1500; ``--max-concurrent-reads`` sets its partition-read permits,
default the server's, 256: a 100x50 look-up takes 100). Answers with (entity, view) reads served as
ERROR (``fstore_serving_field_errors_total``) make a rate unsustained, like failed requests.

For each scenario the rates of ``--rates`` (1x20) / ``--rates-batch`` (100x50) are run in
increasing order, each for ``--duration`` seconds (after a short warm-up at the first rate), ours
then Feast's at each rate, both with ``--concurrency`` requests in flight at most. A rate is
*sustained* when no request failed and the achieved rate (requests / time from the first sent to
the last answered) is at least 95 % of the target; the maximum sustainable RPS is the highest
rate sustained before the first one that was not. A target stops stepping up at its first
unsustained rate (``--keep-stepping`` runs every rate). Latency percentiles are computed the same
way for both from every request's latency (ghz's and vegeta's per-request results).

Feast (``--target feast|both``, :mod:`benchmarks.serving.feast_hook`): the latest ``feast`` from
PyPI in its own venv (``.stack/feast-venv``, created when missing), its Cassandra online store on
the same Cassandra (keyspace ``<keyspace>_feast``), filled with the values our server answers for
every entity at the start of the run (Feast has no windows), served by ``feast serve`` with one
worker process; a sample of entities is checked to get the same values from both.

Floors (unless ``--no-floor``), at the same rates: an empty grpc.aio handler driven by ghz, an
empty FastAPI handler under uvicorn driven by vegeta (Feast's web stack), and a bare
cassandra-driver loop issuing our server's reads: one look-up at a time, and open-loop at each
rate (latency from when a look-up was due: the store's own tail at that rate). The load
average is recorded after every run.

ghz: installed into .stack/bin from the Go module proxy when missing (``go install``);
vegeta is installed into ``.stack/bin`` from the Go module proxy when missing.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from typing import Any

from benchmarks.serving.common import (
    ROOT,
    SCENARIOS,
    ensure_ghz,
    feature_refs,
    free_port,
    max_sustained,
    request_json,
    run_ghz,
    scenario_dict,
    start_server,
    stop,
    wait_healthy,
    wait_port,
    write_result,
)
from benchmarks.serving.floor import driver_floor, driver_floor_at_rate
from benchmarks.serving.load_tiles import load
from feature_store.serving.plans import CompiledRegistry


def scrape(metrics_port: int) -> str:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text: str = page.read().decode()
    return text


def server_side(metrics: str, service: str = "_refs") -> tuple[float, float]:
    """(sum of seconds, count) of the server-side GetOnlineFeatures histogram for ``service``,
    summed over worker processes (``--workers``: one series per worker)."""
    total = count = 0.0
    for line in metrics.splitlines():
        if 'method="GetOnlineFeatures"' in line and f'feature_service="{service}"' in line:
            name, _, value = line.rpartition(" ")
            if name.startswith("fstore_serving_request_duration_seconds_sum"):
                total += float(value)
            elif name.startswith("fstore_serving_request_duration_seconds_count"):
                count += float(value)
    return total, count


# below, around and above each target's capacity on the 2-core machine (Feast's 1x20 tops out near
# 50/s, ours near a few hundred; 100x50: Feast ~1/s, ours tens); the goals are 1,000 and 100 RPS
RATES = [25, 50, 100, 250, 500, 1000]
RATES_BATCH = [1, 2, 5, 10, 25, 50, 100]


def field_error_count(metrics: str) -> float:
    """Sum of ``fstore_serving_field_errors_total`` over views: (entity, view) reads served as ERROR."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in metrics.splitlines()
        if line.startswith("fstore_serving_field_errors_total{")
    )


def rate_list(text: str) -> list[int]:
    rates = sorted({int(r) for r in text.split(",") if r.strip()})
    if not rates or rates[0] <= 0:
        raise argparse.ArgumentTypeError(f"not a list of positive rates: {text!r}")
    return rates


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keyspace", default="bench_serving", help="tiles; Feast gets <keyspace>_feast")
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--events-per-entity", type=int, default=20)
    parser.add_argument("--skip-load", action="store_true", help="reuse tiles already in the keyspace")
    parser.add_argument("--scenarios", default="1x20,100x50")
    parser.add_argument(
        "--rates", "--rps", type=rate_list, default=RATES, help="comma-separated requests/s (1x20)"
    )
    parser.add_argument(
        "--rates-batch", "--rps-batch", type=rate_list, default=RATES_BATCH, help="requests/s (100x50)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before the first rate")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight at most (both targets)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout per request, seconds")
    parser.add_argument(
        "--max-concurrent-reads",
        type=int,
        default=None,
        help="our server's partition-read permits (default: the server's, 256; one per entity)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="our server's processes on the port (fstore serve --workers)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="ghz connections (default: 4 x workers, at most concurrency)",
    )
    parser.add_argument("--floor-duration", type=float, default=5.0, help="seconds per floor run")
    parser.add_argument("--keep-stepping", action="store_true", help="run every rate, even past saturation")
    parser.add_argument("--check-entities", type=int, default=20, help="entities whose values are compared")
    parser.add_argument("--cql-port", type=int, default=9042)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--target", choices=["fstore", "feast", "both"], default="fstore")
    parser.add_argument("--feast-upgrade", action="store_true", help="pip install --upgrade feast first")
    parser.add_argument("--smoke", action="store_true", help="tiny and short: check the benchmark runs")
    args = parser.parse_args()
    if args.connections is None:
        args.connections = min(args.concurrency, 4 * args.workers)
    if args.smoke:
        args.entities, args.events_per_entity, args.duration, args.warmup = 100, 10, 3.0, 1.0
        args.floor_duration = 2.0
        args.rates, args.rates_batch, args.check_entities = [50], [2], 5
    return args


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def step(runs: list[dict[str, Any]], active: set[str], name: str, run: dict[str, Any], keep: bool) -> None:
    """Record a run; a target stops stepping up once a rate is not sustained (unless ``keep``)."""
    runs.append(run)
    summary = run["summary"]
    print(
        f"  {name:6} {summary['target_rps']:>6}/s: p50 / p90 / p99 {_ms(summary['p50_ms'])} / "
        f"{_ms(summary['p90_ms'])} / {_ms(summary['p99_ms'])} ms, achieved {summary['achieved_rps']}/s, "
        f"errors {summary['errors']}, field errors {summary.get('field_errors', '-')}, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if not summary["sustained"] and not keep:
        active.discard(name)


def main() -> None:
    args = parse_args()
    ghz = ensure_ghz()
    targets = {"fstore", "feast"} if args.target == "both" else {args.target}
    scenarios = [SCENARIOS[s] for s in args.scenarios.split(",")]
    result: dict[str, Any] = {
        "target": args.target,
        "args": vars(args),
        "load_average_start": os.getloadavg(),
        "scenarios": {},
    }

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
    all_refs = feature_refs(registry, max(s.features for s in scenarios))

    port, metrics_port = free_port(), free_port()
    server = start_server(
        args.keyspace, port, metrics_port, args.cql_port, args.max_concurrent_reads, workers=args.workers
    )
    target = f"127.0.0.1:{port}"
    feast = None
    try:
        wait_healthy(target)
        if "feast" in targets:
            from benchmarks.serving.feast_hook import FeastServer  # noqa: PLC0415

            feast = FeastServer(
                registry,
                all_refs,
                keyspace=f"{args.keyspace}_feast",
                entities=args.entities,
                fstore_target=target,
                cql_port=args.cql_port,
                upgrade=args.feast_upgrade,
            )
            result["feast_setup"] = feast.start()
            print("feast", result["feast_setup"], flush=True)
            sample = random.Random(11).sample(range(args.entities), min(args.check_entities, args.entities))
            check = feast.check_values([f"b{i}" for i in sample])
            result["value_check"] = check
            print("value check", {k: v for k, v in check.items() if k != "entities"}, flush=True)
        for scenario in scenarios:
            result["scenarios"][scenario.name] = run_scenario(
                args, scenario, registry, compiled, targets, ghz, target, metrics_port, feast
            )
        result["metrics"] = scrape(metrics_port)
    finally:
        if feast is not None:
            feast.stop()
        stop(server)

    if not args.no_floor:
        floors(args, scenarios, registry, targets, ghz, result)
    result["load_average_end"] = os.getloadavg()
    try:
        result["table"] = table(result)
    except (KeyError, TypeError, ValueError) as exc:  # never lose the measurements to the summary
        result["table"] = f"no table: {exc!r}"
    print(result["table"])
    print(write_result("smoke" if args.smoke else args.target, result))


def run_scenario(
    args: argparse.Namespace,
    scenario: Any,
    registry: Any,
    compiled: CompiledRegistry,
    targets: set[str],
    ghz: str,
    target: str,
    metrics_port: int,
    feast: Any,
) -> dict[str, Any]:
    """Every rate of the scenario, ours then Feast's at each; see the module doc."""
    refs = feature_refs(registry, scenario.features)
    plan = compiled.refs_plan(refs)
    rates = args.rates if scenario.batch == 1 else args.rates_batch
    data = request_json(scenario, refs, args.entities)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sorted(targets)}
    active = set(targets)
    print(scenario.name, flush=True)
    for i, rps in enumerate(rates):
        warmup = min(args.warmup, args.duration) if i == 0 else 0.0
        if "fstore" in active:
            if warmup:
                run_ghz(
                    ghz, target, data, rps=rps, duration_s=warmup, concurrency=args.concurrency,
                    connections=args.connections, timeout_s=args.timeout,
                )  # fmt: skip
            before = scrape(metrics_port)
            measured = run_ghz(
                ghz, target, data, rps=rps, duration_s=args.duration, concurrency=args.concurrency,
                connections=args.connections, timeout_s=args.timeout,
            )  # fmt: skip
            after = scrape(metrics_port)
            sum0, count0 = server_side(before)
            sum1, count1 = server_side(after)
            # an OK answer with (entity, view) reads served as ERROR (deadline) is a failed request too
            field_errors = field_error_count(after) - field_error_count(before)
            measured["summary"]["field_errors"] = field_errors
            if field_errors:
                measured["summary"]["sustained"] = False
            run = {
                "rps_target": rps,
                **measured,
                # the server's own histogram over the measured run: time inside the handler
                "server_side_mean_ms": (sum1 - sum0) / (count1 - count0) * 1000 if count1 > count0 else None,
            }
            step(runs["fstore"], active, "fstore", run, args.keep_stepping)
        if "feast" in active:
            from benchmarks.serving.feast_hook import run_feast  # noqa: PLC0415

            run = run_feast(
                feast,
                scenario,
                refs,
                rps=rps,
                duration_s=args.duration,
                concurrency=args.concurrency,
                warmup_s=warmup,
                timeout_s=args.timeout,
            )
            step(runs["feast"], active, "feast", run, args.keep_stepping)
    entry: dict[str, Any] = {
        "scenario": scenario_dict(scenario),
        "refs": refs,
        "views": [vp.view.name for vp in plan.views],
        "rates": rates,
    }
    for name, name_runs in runs.items():
        entry[name] = {"runs": name_runs, "max_sustainable_rps": max_sustained(name_runs)}
    if feast is not None:
        entry["feast"]["notes"] = (
            "feast serve (HTTP/JSON, 1 gunicorn/uvicorn worker), Cassandra online store on the same "
            "Cassandra, finalized values of ours written with write_to_online_store; vegeta"
        )
    return entry


def floors(
    args: argparse.Namespace,
    scenarios: list[Any],
    registry: Any,
    targets: set[str],
    ghz: str,
    result: dict[str, Any],
) -> None:
    """Empty gRPC handler (ghz) and empty HTTP handler (vegeta) at every rate, then the bare driver."""
    empty_port = free_port()
    empty = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serving.floor", "empty-server", "--port", str(empty_port)],
        cwd=ROOT,
    )
    try:
        wait_port(empty_port)
        for scenario in scenarios:
            refs = feature_refs(registry, scenario.features)
            data = request_json(scenario, refs, args.entities)
            runs = []
            for rps in result["scenarios"][scenario.name]["rates"]:
                floor = run_ghz(
                    ghz,
                    f"127.0.0.1:{empty_port}",
                    data,
                    rps=rps,
                    duration_s=max(args.floor_duration, 5 / rps),
                    concurrency=args.concurrency,
                    use_proto=True,
                    timeout_s=args.timeout,
                )
                runs.append({"rps_target": rps, **floor})
                print(scenario.name, "empty grpc", rps, floor["summary"]["p50_ms"], flush=True)
            result["scenarios"][scenario.name]["floor_empty_grpc"] = {"runs": runs}
    finally:
        stop(empty)
    if "feast" in targets:
        from benchmarks.common_feast import ensure_feast_venv  # noqa: PLC0415
        from benchmarks.serving.feast_hook import FEAST_EXTRAS, EmptyHttpServer, run_empty_http  # noqa: PLC0415

        with EmptyHttpServer(ensure_feast_venv(FEAST_EXTRAS)) as http:
            for scenario in scenarios:
                refs = feature_refs(registry, scenario.features)
                runs = []
                for rps in result["scenarios"][scenario.name]["rates"]:
                    floor = run_empty_http(
                        http,
                        scenario,
                        refs,
                        args.entities,
                        rps=rps,
                        duration_s=max(args.floor_duration, 5 / rps),
                        concurrency=args.concurrency,
                        timeout_s=args.timeout,
                    )
                    runs.append(floor)
                    print(scenario.name, "empty http", rps, floor["summary"]["p50_ms"], flush=True)
                result["scenarios"][scenario.name]["floor_empty_http"] = {"runs": runs}
    for scenario in scenarios:
        views = result["scenarios"][scenario.name]["views"]
        lookups = (100 if args.smoke else 500) if scenario.batch == 1 else (5 if args.smoke else 20)
        drv = driver_floor(args.keyspace, views, scenario, args.entities, lookups, port=args.cql_port)
        result["scenarios"][scenario.name]["floor_driver"] = drv
        print(scenario.name, "bare driver", drv, flush=True)
        runs = []
        for rps in result["scenarios"][scenario.name]["rates"]:
            at = driver_floor_at_rate(
                args.keyspace, views, scenario, args.entities, rps, args.floor_duration,
                port=args.cql_port, concurrency=args.concurrency,
            )  # fmt: skip
            runs.append(at)
            print(scenario.name, "bare driver", rps, f"p50 {at['p50_ms']:.1f} p99 {at['p99_ms']:.1f} ms",
                  f"achieved {at['rps_achieved']}/s", flush=True)  # fmt: skip
        result["scenarios"][scenario.name]["floor_driver_at_rate"] = {"runs": runs}


def _cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return "not run (saturated below)"
    s = run["summary"]
    field = f" (+{s['field_errors']:g} field err)" if s.get("field_errors") else ""
    return (
        f"{_ms(s['p50_ms'])} / {_ms(s['p90_ms'])} / {_ms(s['p99_ms'])} "
        f"@ {s['achieved_rps']:g}/s, {s['errors']} err{field}"
    )


def _best(rps: float | None, rates: list[int]) -> str:
    if rps is None:
        return f"< {rates[0]}/s"
    return f">= {rps:g}/s (every rate)" if rps == rates[-1] else f"{rps:g}/s"


def table(result: dict[str, Any]) -> str:
    """A Markdown table of every scenario and rate: p50 / p90 / p99 ms, achieved rate, errors."""
    lines = [
        "| scenario | rate | fstore p50 / p90 / p99 ms | Feast p50 / p90 / p99 ms | "
        "empty gRPC p50 | empty HTTP p50 | bare driver p50 / p99 ms (achieved) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["scenarios"].items():
        for rps in entry["rates"]:

            def at(key: str, rps: int = rps, entry: dict[str, Any] = entry) -> dict[str, Any] | None:
                runs = (entry.get(key) or {}).get("runs", [])
                return next((r for r in runs if r["summary"]["target_rps"] == rps), None)

            floors = [at(k) for k in ("floor_empty_grpc", "floor_empty_http")]
            drv_runs = (entry.get("floor_driver_at_rate") or {}).get("runs", [])
            drv_at = next((r for r in drv_runs if r["rps_target"] == rps), None)
            drv_cell = (
                f"{_ms(drv_at['p50_ms'])} / {_ms(drv_at['p99_ms'])} ({drv_at['rps_achieved']}/s)"
                if drv_at
                else "-"
            )
            lines.append(
                f"| {name} | {rps}/s | {_cell(at('fstore')) if 'fstore' in entry else '-'} | "
                f"{_cell(at('feast')) if 'feast' in entry else '-'} | "
                + " | ".join(_ms(f["summary"]["p50_ms"]) if f else "-" for f in floors)
                + f" | {drv_cell} |"
            )
    lines.append("")
    for name, entry in result["scenarios"].items():
        best = ", ".join(
            f"{k} {_best(entry[k]['max_sustainable_rps'], entry['rates'])}"
            for k in ("fstore", "feast")
            if k in entry
        )
        drv = entry.get("floor_driver") or {}
        lines.append(
            f"{name}: max sustainable RPS: {best} (rates {entry['rates']}); bare driver p50 / p90 "
            f"{_ms(drv.get('p50_ms'))} / {_ms(drv.get('p90_ms'))} ms"
        )
    lines.append(f"load average: start {result['load_average_start']}, end {result.get('load_average_end')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
