"""Shared pieces of the serving benchmarks: the benchmark registry, scenarios, result files."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "benchmarks"
BIN = ROOT / ".stack" / "bin"
GHZ_CANDIDATES = (BIN / "ghz",)
GHZ_MODULE = "github.com/bojand/ghz"
GHZ_VERSION = "v0.120.0"  # used when the module proxy will not resolve @latest
VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.12.0"  # used when the module proxy will not resolve @latest
SUSTAINED_RATIO = 0.95  # a rate is sustained when >= 95 % of it is achieved with no errors
METHOD = "feature_store.serving.v1.FeatureServing/GetOnlineFeatures"
ENTITY_PREFIX = "b"  # benchmark user ids: b0, b1, ...


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    batch: int  # entity rows per request
    features: int  # feature refs per request


SCENARIOS = {
    "1x20": Scenario("1x20", 1, 20),
    "100x50": Scenario("100x50", 100, 50),
}


def bench_registry() -> Registry:
    """The example registry plus benchmarks/serving/bench_views.yaml (57 features of `user`)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "registry"
        shutil.copytree(ROOT / "registry", root)
        shutil.copy(Path(__file__).with_name("bench_views.yaml"), root / "bench_views.yaml")
        return load_registry(root)


def feature_refs(registry: Registry, n: int) -> list[str]:
    """``n`` features of the `user` entity, ranking_v1's first, then round-robin over the views."""
    refs = [str(r) for r in registry.service("ranking_v1").features]
    per_view = [
        [f"{v.name}:{name}" for f in v.features for name in f.served_names]
        for v in registry.views
        if v.entity == "user" and v.online
    ]
    while len(refs) < n and any(per_view):
        for names in per_view:
            while names and names[0] in refs:
                names.pop(0)
            if names and len(refs) < n:
                refs.append(names.pop(0))
    if len(refs) < n:
        raise ValueError(f"the benchmark registry has only {len(refs)} user features")
    return refs[:n]


def request_json(
    scenario: Scenario, refs: list[str], entities: int, templated: bool = True
) -> dict[str, Any]:
    """A GetOnlineFeaturesRequest in proto3 JSON; with ``templated``, ghz picks random entities."""
    values = [
        {
            "string_val": f"{ENTITY_PREFIX}{{{{randomInt 0 {entities}}}}}"
            if templated
            else f"{ENTITY_PREFIX}{i}"
        }
        for i in range(scenario.batch)
    ]
    return {"features": {"refs": refs}, "entities": {"user_id": {"values": values}}}


def ghz_path() -> str | None:
    for candidate in GHZ_CANDIDATES:
        if candidate.exists():
            return str(candidate)
    return shutil.which("ghz")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = OUT / f"serving-{name}-{stamp}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    return path


def run_ghz(
    ghz: str,
    target: str,
    data: dict[str, Any],
    *,
    rps: int,
    duration_s: float,
    concurrency: int,
    connections: int = 1,
    call: str = METHOD,
    use_proto: bool = False,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """Run ghz at a fixed rate for ``duration_s``, then wait for the requests in flight (as vegeta
    does; ghz's default cancels them and counts them as errors); returns a summary (latencies in
    ms, :func:`summarize_ghz`) plus ghz's own report."""
    args = [
        ghz, "--insecure", "--call", call, "--rps", str(rps), "--duration", f"{duration_s}s",
        "--duration-stop", "wait", "--concurrency", str(concurrency), "--connections", str(connections),
        "--timeout", f"{timeout_s}s", "--format", "json", "-d", json.dumps(data),
    ]  # fmt: skip
    if use_proto:  # for servers without reflection (the empty floor server); paths relative to ROOT
        args += ["--import-paths", "proto", "--proto", "proto/feature_store/serving/v1/serving.proto"]
    args.append(target)
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=duration_s + timeout_s + 120, check=False, cwd=ROOT
    )
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"ghz failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    summary = summarize_ghz(report, rps, duration_s)
    summary["load_average_after"] = os.getloadavg()
    return {"summary": summary, "ghz": {k: v for k, v in report.items() if k != "details"}}


def summarize_ghz(report: dict[str, Any], target_rps: float, duration_s: float) -> dict[str, Any]:
    """The common summary (:func:`load_summary`) from ghz's per-request details, plus ghz's own
    percentiles (``ghz_p50_ms``...) for reference."""
    ns = 1e6
    details = report.get("details") or []
    latencies = [d["latency"] / ns for d in details]
    errors = sum(1 for d in details if d.get("error") or d.get("status") != "OK")
    count = int(report.get("count") or len(details))
    summary = load_summary(
        latencies, count=count, errors=errors, duration_s=duration_s, target_rps=target_rps
    )
    summary["elapsed_s"] = (report.get("total") or 0) / 1e9
    for d in report.get("latencyDistribution") or []:
        summary[f"ghz_p{int(d['percentage'])}_ms"] = d["latency"] / ns
    summary["status_codes"] = report.get("statusCodeDistribution")
    summary["error_kinds"] = report.get("errorDistribution")
    return summary


def load_summary(
    latencies_ms: Sequence[float], *, count: int, errors: int, duration_s: float, target_rps: float
) -> dict[str, Any]:
    """What every fixed-rate run reports, whatever drove it: requests, errors, achieved rate,
    latency percentiles (:func:`percentiles`, over every request) and whether the rate was
    sustained.

    Both drivers send at the target rate for ``duration_s`` with a bounded number of requests in
    flight, then wait for the answers: a server that cannot keep up holds every slot and fewer
    requests go out. So the achieved rate is requests answered / ``duration_s``, and the tail of
    the last answers does not count against it."""
    achieved = count / duration_s if duration_s > 0 else 0.0
    stats = percentiles(list(latencies_ms))
    return {
        "count": count,
        "errors": errors,
        "target_rps": target_rps,
        "achieved_rps": round(achieved, 1),
        "p50_ms": stats.get("p50_ms"),
        "p90_ms": stats.get("p90_ms"),
        "p99_ms": stats.get("p99_ms"),
        "mean_ms": stats.get("mean_ms"),
        "max_ms": stats.get("max_ms"),
        "sustained": sustained(count, errors, duration_s, target_rps),
    }


def sustained(count: int, errors: int, duration_s: float, target_rps: float) -> bool:
    """No errors and at least :data:`SUSTAINED_RATIO` of the target rate's requests answered
    (less one: a pacer may send its first request at 0 or one period in)."""
    return count > 0 and errors == 0 and count >= SUSTAINED_RATIO * target_rps * duration_s - 1


def max_sustained(runs: Iterable[dict[str, Any]]) -> float | None:
    """The highest target rate sustained before the first rate that was not (runs in rate order)."""
    best: float | None = None
    for run in runs:
        if not run["summary"]["sustained"]:
            break
        best = run["summary"]["target_rps"]
    return best


# --- vegeta: the HTTP load generator (Feast's server and the empty HTTP floor) ---------------------


def vegeta_path() -> str | None:
    candidate = BIN / "vegeta"
    return str(candidate) if candidate.exists() else shutil.which("vegeta")


def _go_install(name: str, module: str, package: str, version: str) -> None:
    """``go install package@latest`` into .stack/bin; if the proxy will not resolve @latest, build
    ``version`` pinned in a throw-away module."""
    if shutil.which("go") is None:
        sys.exit(f"{name} not found and no Go toolchain: GOBIN=$PWD/.stack/bin go install {package}@latest")
    BIN.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(BIN)}
    print(f"installing {name} into {BIN} (go install)", file=sys.stderr, flush=True)
    done = subprocess.run(["go", "install", f"{package}@latest"], env=env, check=False, cwd=ROOT)
    if done.returncode != 0:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "go.mod").write_text(f"module {name}build\n\ngo 1.22\n\nrequire {module} {version}\n")
            Path(tmp, "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n')
            subprocess.run(["go", "mod", "tidy"], env=env, check=True, cwd=tmp)
            subprocess.run(["go", "install", package], env=env, check=True, cwd=tmp)


def ensure_vegeta() -> str:
    """vegeta in .stack/bin, installed from the Go module proxy when missing."""
    found = vegeta_path()
    if found:
        return found
    _go_install("vegeta", VEGETA_MODULE, VEGETA_MODULE, VEGETA_VERSION)
    found = vegeta_path()
    if found is None:
        sys.exit("vegeta install failed")
    return found


def ensure_ghz() -> str:
    """ghz in .stack/bin, installed from the Go module proxy when missing."""
    found = ghz_path()
    if found:
        return found
    _go_install("ghz", GHZ_MODULE, f"{GHZ_MODULE}/cmd/ghz", GHZ_VERSION)
    found = ghz_path()
    if found is None:
        sys.exit("ghz install failed")
    return found


def vegeta_targets(url: str, bodies: Iterable[dict[str, Any]]) -> str:
    """vegeta's JSON target format: one POST per line, bodies base64-encoded."""
    import base64  # noqa: PLC0415

    lines = [
        json.dumps(
            {
                "method": "POST",
                "url": url,
                "header": {"Content-Type": ["application/json"]},
                "body": base64.b64encode(json.dumps(body).encode()).decode(),
            }
        )
        for body in bodies
    ]
    return "\n".join(lines) + "\n"


def parse_vegeta_csv(text: str) -> tuple[list[float], int, float]:
    """(latencies in ms, errors, seconds from the first request sent to the last answer) of
    ``vegeta encode --to csv`` output: timestamp ns, status code, latency ns, bytes out, bytes in,
    error, ... per request. An error is a transport error or a status outside 2xx."""
    latencies: list[float] = []
    errors = 0
    first = last = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        start, code, latency = int(row[0]), int(row[1]), int(row[2])
        latencies.append(latency / 1e6)
        if row[5] or not 200 <= code < 300:
            errors += 1
        first = start if first is None else min(first, start)
        last = start + latency if last is None else max(last, start + latency)
    elapsed = (last - first) / 1e9 if first is not None and last is not None else 0.0
    return latencies, errors, elapsed


def run_vegeta(
    vegeta: str, targets: str, *, rps: int, duration_s: float, concurrency: int, timeout_s: float = 2.0
) -> dict[str, Any]:
    """Run vegeta at a fixed rate with at most ``concurrency`` requests in flight (as ghz's
    ``--concurrency``; vegeta's workers each hold one keep-alive connection); the summary is
    computed from every request's latency (:func:`load_summary`), like ghz's."""
    with tempfile.TemporaryDirectory() as tmp:
        targets_file, results = Path(tmp, "targets.jsonl"), Path(tmp, "results.bin")
        targets_file.write_text(targets)
        attack = [
            vegeta, "attack", "-format=json", f"-targets={targets_file}", f"-rate={rps}/1s",
            f"-duration={duration_s}s", f"-timeout={timeout_s}s", f"-workers={concurrency}",
            f"-max-workers={concurrency}", "-max-body=0", f"-output={results}",
        ]  # fmt: skip
        proc = subprocess.run(
            attack, capture_output=True, text=True, timeout=duration_s + timeout_s + 120, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"vegeta attack failed: {proc.stderr[-2000:]}")
        encoded = subprocess.run(
            [vegeta, "encode", "--to", "csv", str(results)], capture_output=True, text=True, check=True
        ).stdout
        report = json.loads(
            subprocess.run(
                [vegeta, "report", "-type=json", str(results)], capture_output=True, text=True, check=True
            ).stdout
        )
    latencies, errors, elapsed = parse_vegeta_csv(encoded)
    summary = load_summary(
        latencies, count=len(latencies), errors=errors, duration_s=duration_s, target_rps=rps
    )
    summary["elapsed_s"] = elapsed
    summary["status_codes"] = report.get("status_codes")
    summary["error_kinds"] = sorted(set(report.get("errors") or []))[:10]
    summary["load_average_after"] = os.getloadavg()
    return {"summary": summary, "vegeta": report}


# --- servers ---------------------------------------------------------------------------------------


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


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 120) -> None:
    """Until GET ``url`` answers 200 (or ``proc`` exits: then raise)."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as page:
                if page.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not answering after {timeout_s}s")


def start_server(
    keyspace: str,
    port: int,
    metrics_port: int,
    cql_port: int,
    max_concurrent_reads: int | None = None,
    *,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    """``fstore serve`` in its own process(es) (``workers``; defaults but deadline 1.5 s, no
    reload and, if given, ``max_concurrent_reads``)."""
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
        "FSTORE_SERVE_WORKERS": str(workers),
    }
    if max_concurrent_reads is not None:
        env["FSTORE_SERVE_MAX_CONCURRENT_READS"] = str(max_concurrent_reads)
    return subprocess.Popen([sys.executable, "-m", "feature_store.cli.main", "serve"], env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process (its whole process group if it leads one), then wait; kill if stuck."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    s = sorted(samples_ms)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return {
        "count": len(s),
        "mean_ms": sum(s) / len(s),
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "max_ms": s[-1],
    }


def scenario_dict(scenario: Scenario) -> dict[str, Any]:
    return asdict(scenario)
