"""The Feast side of the serving benchmark: Feast's own feature server on the same Cassandra.

``bench_serving --target feast|both`` uses it with exactly what the fstore run uses: the same
feature list (``refs``, "view:feature"), the same entity ids (``b0`` .. ``b{entities-1}``, join
key ``user_id``), the same values, rates, duration and concurrency.

Set-up (:class:`FeastServer`), outside any timing:

1. a venv with the latest ``feast[cassandra]`` from PyPI (``.stack/feast-venv``, created and
   installed when missing: :func:`benchmarks.common_feast.ensure_feast_venv`);
2. the values: Feast has no tiles and no windows, so it gets the *finalized* values, read once
   from our running server (``FeatureClient``) for every entity and feature at the benchmark
   time: exactly what ours answers. A view an entity is NOT_FOUND in gets no row in Feast
   (Feast answers NOT_FOUND too); a value that is not PRESENT is written as null;
3. a Feast repository in a temporary folder (``feature_store.yaml``: provider ``local``,
   offline store ``file``, online store ``cassandra`` on 127.0.0.1:9042 in its own keyspace
   ``<keyspace>_feast``), one Feast feature view per view of ours with the same feature names,
   types and TTL, applied and filled with ``FeatureStore.write_to_online_store``
   (:mod:`benchmarks.serving.feast_repo`, run with the Feast venv's Python);
4. ``feast serve``: Feast's standard Python HTTP feature server (FastAPI under gunicorn with
   uvicorn workers) with ONE worker process, as ours is one process (``--workers 1``,
   ``--max-requests 0`` so the worker is not recycled every 1,000 requests mid-run, no access
   log, registry cache TTL 1 h as ours does not reload either).

Load (:func:`run_feast`): vegeta POSTs ``/get-online-features`` (``features`` = the refs,
``entities`` = ``{"user_id": [...]}`` with random entity ids, ``full_feature_names``) at a fixed
rate with the same number of requests in flight as ghz gets for ours; latencies of every
request give p50/p90/p99 computed the same way as for ghz (``common.load_summary``).

:meth:`FeastServer.check_values` asks both servers for a sample of entities and compares every
value (Feast against what was written, and Feast against what ours answers now).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common_feast import ensure_feast_venv
from benchmarks.serving.common import (
    ENTITY_PREFIX,
    ROOT,
    Scenario,
    ensure_vegeta,
    free_port,
    run_vegeta,
    scenario_dict,
    stop,
    vegeta_targets,
    wait_http,
)
from feature_store.core.model import Registry
from feature_store.serving.client import FeatureClient

FEAST_EXTRAS = ("cassandra",)
REPO_SCRIPT = Path(__file__).with_name("feast_repo.py")
EMPTY_HTTP_SCRIPT = Path(__file__).with_name("empty_http.py")
PROJECT = "bench_serving"
JOIN_KEY = "user_id"
TARGETS_PER_RUN = 2000  # distinct request bodies vegeta cycles through (random entities)


def view_features(registry: Registry, refs: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """view -> [(feature, value type)] of ``refs``, views and features in first-seen order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for ref in refs:
        view_name, _, feature = ref.partition(":")
        view = registry.view(view_name)
        types = {name: f.value_type.value for f in view.features for name in f.served_names}
        if (feature, types[feature]) not in out.setdefault(view_name, []):
            out[view_name].append((feature, types[feature]))
    return out


def feast_views_spec(
    registry: Registry,
    refs: Sequence[str],
    entity_ids: Sequence[str],
    values: Sequence[Sequence[Any]],
    statuses: Sequence[Sequence[str]],
) -> list[dict[str, Any]]:
    """Per view of ``refs``: its Feast definition and rows from our answer (``values[row][ref]``).

    An entity NOT_FOUND in every feature of a view gets no row in it; a value that is not
    PRESENT is None (served as null by both)."""
    index = {ref: j for j, ref in enumerate(refs)}
    specs = []
    for view_name, features in view_features(registry, refs).items():
        cols = [index[f"{view_name}:{name}"] for name, _ in features]
        rows: dict[str, list[Any]] = {JOIN_KEY: [], **{name: [] for name, _ in features}}
        for entity, row, row_statuses in zip(entity_ids, values, statuses, strict=True):
            if all(row_statuses[j] == "NOT_FOUND" for j in cols):
                continue
            rows[JOIN_KEY].append(entity)
            for (name, _), j in zip(features, cols, strict=True):
                rows[name].append(row[j] if row_statuses[j] == "PRESENT" else None)
        ttl_ms = registry.view(view_name).ttl_ms
        specs.append({"name": view_name, "ttl_s": (ttl_ms or 0) // 1000, "features": features, "rows": rows})
    return specs


def feast_body(refs: Sequence[str], entity_ids: Sequence[str]) -> dict[str, Any]:
    """A ``/get-online-features`` request body."""
    return {"features": list(refs), "entities": {JOIN_KEY: list(entity_ids)}, "full_feature_names": True}


def feast_bodies(
    scenario: Scenario, refs: Sequence[str], entities: int, n: int, seed: int = 7
) -> list[dict[str, Any]]:
    """``n`` request bodies with random entities (as ghz's ``randomInt`` does for ours)."""
    rng = random.Random(seed)
    return [
        feast_body(refs, [f"{ENTITY_PREFIX}{rng.randrange(entities)}" for _ in range(scenario.batch)])
        for _ in range(n)
    ]


def parse_feast_response(response: dict[str, Any], refs: Sequence[str]) -> list[list[Any]]:
    """values[row][ref] from Feast's column-oriented answer (full feature names ``view__feature``)."""
    names = response["metadata"]["feature_names"]
    columns = {name: result["values"] for name, result in zip(names, response["results"], strict=True)}
    picked = [columns[ref.replace(":", "__", 1)] for ref in refs]
    return [list(row) for row in zip(*picked, strict=True)]


def compare_values(
    refs: Sequence[str],
    entity_ids: Sequence[str],
    want: Sequence[Sequence[Any]],
    got: Sequence[Sequence[Any]],
) -> dict[str, Any]:
    """Cell by cell (floats exactly, lists as lists, None = null); the first mismatches."""
    mismatches = []
    cells = non_null = 0
    for entity, want_row, got_row in zip(entity_ids, want, got, strict=True):
        for ref, a, b in zip(refs, want_row, got_row, strict=True):
            cells += 1
            non_null += a is not None
            if a != b or type(a) is not type(b):
                mismatches.append({"entity": entity, "feature": ref, "want": a, "got": b})
    return {"cells": cells, "non_null": non_null, "mismatches": len(mismatches), "first": mismatches[:5]}


def post_json(url: str, body: dict[str, Any], timeout_s: float = 30) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as page:
        answer: dict[str, Any] = json.loads(page.read())
    return answer


def read_ours(
    client: FeatureClient, refs: Sequence[str], entity_ids: Sequence[str], batch: int = 25
) -> tuple[list[list[Any]], list[list[str]]]:
    """Our server's values and statuses for ``entity_ids`` (batches; retried while any is ERROR)."""
    values: list[list[Any]] = []
    statuses: list[list[str]] = []
    for i in range(0, len(entity_ids), batch):
        chunk = list(entity_ids[i : i + batch])
        for attempt in range(5):
            answer = client.get_online_features(features=list(refs), entities={JOIN_KEY: chunk}, timeout_s=30)
            if not any("ERROR" in row for row in answer.statuses):
                break
            if attempt == 4:
                raise RuntimeError(f"our server keeps answering ERROR for {chunk[0]}..")
            time.sleep(1)
        values += answer.values
        statuses += answer.statuses
    return values, statuses


class FeastServer:
    """Feast's feature server with our values, on the local Cassandra (see the module doc)."""

    def __init__(
        self,
        registry: Registry,
        refs: Sequence[str],
        *,
        keyspace: str,
        entities: int,
        fstore_target: str,
        cql_port: int = 9042,
        upgrade: bool = False,
    ) -> None:
        self.registry = registry
        self.refs = list(refs)  # every ref any scenario reads (1x20's are 100x50's first 20)
        self.keyspace = keyspace
        self.entities = entities
        self.fstore_target = fstore_target
        self.cql_port = cql_port
        self.upgrade = upgrade
        self.work = Path(tempfile.mkdtemp(prefix="feast-serving-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.python: Path | None = None
        self.written: dict[str, dict[str, Any]] = {}  # entity -> ref -> value written
        self.info: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> dict[str, Any]:
        """Venv, values, repository, online store, ``feast serve``; returns what was set up."""
        self.python = ensure_feast_venv(FEAST_EXTRAS, upgrade=self.upgrade)
        entity_ids = [f"{ENTITY_PREFIX}{i}" for i in range(self.entities)]
        started = time.monotonic()
        read_at_ms = int(time.time() * 1000)
        with FeatureClient(self.fstore_target, timeout_s=30) as client:
            values, statuses = read_ours(client, self.refs, entity_ids)
        read_s = time.monotonic() - started
        views = feast_views_spec(self.registry, self.refs, entity_ids, values, statuses)
        for entity, row, row_statuses in zip(entity_ids, values, statuses, strict=True):
            self.written[entity] = {
                ref: (v if s == "PRESENT" else None)
                for ref, v, s in zip(self.refs, row, row_statuses, strict=True)
            }
        repo = self.work / "repo"
        spec = {
            "repo": str(repo),
            "project": PROJECT,
            "host": "127.0.0.1",
            "port": self.cql_port,
            "keyspace": self.keyspace,
            "entity": "user",
            "join_key": JOIN_KEY,
            "read_at_ms": read_at_ms,
            "views": views,
        }
        spec_path, result_path = self.work / "spec.json", self.work / "setup.json"
        spec_path.write_text(json.dumps(spec))
        subprocess.run(
            [str(self.python), str(REPO_SCRIPT), str(spec_path), str(result_path)], check=True, cwd=self.work
        )
        setup = json.loads(result_path.read_text())
        self.port = free_port()
        serve = [
            str(self.python.parent / "feast"), "-c", str(repo), "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1", "--no-access-log", "--max-requests", "0",
            "--registry_ttl_sec", "3600",
        ]  # fmt: skip
        with (self.work / "feast-serve.log").open("wb") as log:
            self.proc = subprocess.Popen(
                serve,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=repo,
                start_new_session=True,  # gunicorn's arbiter and its worker stop together
            )
        wait_http(f"{self.url}/health", self.proc, timeout_s=180)
        counts = {v["name"]: len(v["rows"][JOIN_KEY]) for v in views}
        self.info = {
            **setup,
            "keyspace": self.keyspace,
            "views": len(views),
            "rows_per_view": counts,
            "values_read_from_fstore_s": round(read_s, 1),
            "server": "feast serve (HTTP, gunicorn + 1 uvicorn worker, --max-requests 0, no access log)",
            "online_store": f"cassandra 127.0.0.1:{self.cql_port} keyspace {self.keyspace}",
        }
        return self.info

    def get(self, refs: Sequence[str], entity_ids: Sequence[str]) -> list[list[Any]]:
        return parse_feast_response(
            post_json(f"{self.url}/get-online-features", feast_body(refs, entity_ids)), refs
        )

    def drain(self, timeout_s: float = 300) -> float:
        """Seconds until Feast answers a 1-entity, 1-feature look-up: its thread pool keeps
        working on requests the load generator gave up on (timeouts), so wait for it to finish
        them before anything else is measured."""
        started = time.monotonic()
        post_json(f"{self.url}/get-online-features", feast_body(self.refs[:1], ["b0"]), timeout_s=timeout_s)
        return time.monotonic() - started

    def check_values(self, sample: Sequence[str]) -> dict[str, Any]:
        """Feast vs the values written, and Feast vs what our server answers now, for ``sample``."""
        got = self.get(self.refs, sample)
        written = [[self.written[e][ref] for ref in self.refs] for e in sample]
        with FeatureClient(self.fstore_target, timeout_s=30) as client:
            now_values, now_statuses = read_ours(client, self.refs, sample)
        ours_now = [
            [v if s == "PRESENT" else None for v, s in zip(row, st, strict=True)]
            for row, st in zip(now_values, now_statuses, strict=True)
        ]
        return {
            "entities": list(sample),
            "features": len(self.refs),
            "feast_vs_written": compare_values(self.refs, sample, written, got),
            "feast_vs_fstore_now": compare_values(self.refs, sample, ours_now, got),
        }

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> FeastServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_feast(
    server: FeastServer,
    scenario: Scenario,
    refs: Sequence[str],
    *,
    rps: int,
    duration_s: float,
    concurrency: int,
    warmup_s: float = 0.0,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """One fixed-rate vegeta run against Feast's server, the same layout as ours' runs; then wait
    until Feast has finished what it was still working on (``drain_s``)."""
    vegeta = ensure_vegeta()
    bodies = feast_bodies(
        scenario, refs, server.entities, min(TARGETS_PER_RUN, max(1, int(rps * duration_s)))
    )
    targets = vegeta_targets(f"{server.url}/get-online-features", bodies)
    if warmup_s > 0:
        run_vegeta(
            vegeta, targets, rps=rps, duration_s=warmup_s, concurrency=concurrency, timeout_s=timeout_s
        )
    measured = run_vegeta(
        vegeta, targets, rps=rps, duration_s=duration_s, concurrency=concurrency, timeout_s=timeout_s
    )
    return {"scenario": scenario_dict(scenario), "rps_target": rps, **measured, "drain_s": server.drain()}


class EmptyHttpServer:
    """The HTTP floor: an empty FastAPI ``/get-online-features`` handler under uvicorn, one
    process, in the Feast venv (Feast's web stack with no feature-store work)."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EmptyHttpServer:
        self.proc = subprocess.Popen(
            [str(self.python), str(EMPTY_HTTP_SCRIPT), str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": ""},
        )
        wait_http(f"{self.url}/health", self.proc, timeout_s=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)


def run_empty_http(
    server: EmptyHttpServer,
    scenario: Scenario,
    refs: Sequence[str],
    entities: int,
    *,
    rps: int,
    duration_s: float,
    concurrency: int,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    vegeta = ensure_vegeta()
    bodies = feast_bodies(scenario, refs, entities, min(TARGETS_PER_RUN, max(1, int(rps * duration_s))))
    targets = vegeta_targets(f"{server.url}/get-online-features", bodies)
    return {
        "rps_target": rps,
        **run_vegeta(vegeta, targets, rps=rps, duration_s=duration_s, concurrency=concurrency),
    }
