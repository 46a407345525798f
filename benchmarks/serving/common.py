"""Shared pieces of the serving benchmarks: the benchmark registry, scenarios, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "benchmarks"
GHZ_CANDIDATES = (ROOT / ".stack" / "bin" / "ghz",)
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
) -> dict[str, Any]:
    """Run ghz at a fixed rate; returns a summary (latencies in ms) plus ghz's own report."""
    args = [
        ghz, "--insecure", "--call", call, "--rps", str(rps), "--duration", f"{duration_s}s",
        "--concurrency", str(concurrency), "--connections", str(connections), "--timeout", "2s",
        "--format", "json", "-d", json.dumps(data),
    ]  # fmt: skip
    if use_proto:  # for servers without reflection (the empty floor server); paths relative to ROOT
        args += ["--import-paths", "proto", "--proto", "proto/feature_store/serving/v1/serving.proto"]
    args.append(target)
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=duration_s + 120, check=False, cwd=ROOT
    )
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"ghz failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    summary = summarize_ghz(report)
    summary["load_average_after"] = os.getloadavg()
    return {"summary": summary, "ghz": {k: v for k, v in report.items() if k != "details"}}


def summarize_ghz(report: dict[str, Any]) -> dict[str, Any]:
    ns = 1e6
    quantiles = {
        f"p{int(d['percentage'])}": d["latency"] / ns for d in report.get("latencyDistribution") or []
    }
    return {
        "count": report.get("count"),
        "rps": report.get("rps"),
        "average_ms": (report.get("average") or 0) / ns,
        "fastest_ms": (report.get("fastest") or 0) / ns,
        "slowest_ms": (report.get("slowest") or 0) / ns,
        **{f"{k}_ms": v for k, v in quantiles.items()},
        "status_codes": report.get("statusCodeDistribution"),
        "errors": report.get("errorDistribution"),
    }


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
