"""Feast's ``get_historical_features`` on precomputed feature tables (runs in the Feast venv).

    .stack/feast-venv/bin/python benchmarks/export/feast_contender.py SPEC.json RESULT.json

Standalone on purpose: the Feast venv has Feast and its dependencies, not this project (their
pins conflict with PyFlink). ``SPEC.json`` (written by ``bench_export``) names the spine, the
output file, the offline store (``duckdb`` or ``file``, Feast's Dask-based file store) and per
feature view its Parquet table (``user_id``, ``event_timestamp``, one column per feature), TTL
and feature types, and the DuckDB memory limit, threads and spill folder every contender gets.
Feast is imported and the repository applied *before* the clock starts;
the timed part reads the spine into the entity DataFrame, runs the point-in-time join, and
writes the result (spine order is not restored: Feast does not promise it, and the checks join
on ``row_idx``). ``RESULT.json`` gets the timings and Feast's version.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _apply(spec: dict[str, Any], repo: Path) -> tuple[Any, list[str]]:
    feast: Any = importlib.import_module("feast")
    types: Any = importlib.import_module("feast.types")
    repo.mkdir(parents=True, exist_ok=True)
    config = feast.RepoConfig(
        project="bench_export",
        provider="local",
        registry=str(repo / "registry.db"),
        offline_store={"type": spec["store"]},
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    store = feast.FeatureStore(config=config)
    user = feast.Entity(name="user", join_keys=["user_id"], value_type=feast.ValueType.STRING)
    views = []
    refs: list[str] = []
    for view in spec["views"]:
        schema = [
            feast.Field(name=name, dtype=types.Float64 if kind == "float64" else types.Int64)
            for name, kind in view["features"]
        ]
        source = feast.FileSource(
            name=f"{view['name']}_source", path=view["path"], timestamp_field="event_timestamp"
        )
        views.append(
            feast.FeatureView(
                name=view["name"],
                entities=[user],
                ttl=timedelta(seconds=view["ttl_s"]),
                schema=schema,
                source=source,
                online=False,
            )
        )
        refs.extend(f"{view['name']}:{name}" for name, _ in view["features"])
    store.apply([user, *views])
    return store, refs


def _limit_duckdb(spec: dict[str, Any]) -> None:
    """The DuckDB store runs on ibis's default backend: give it the other contenders' limits."""
    ibis: Any = importlib.import_module("ibis")
    config: dict[str, Any] = {"temp_directory": spec["temp_dir"]}
    if spec.get("memory_limit"):
        config["memory_limit"] = spec["memory_limit"]
    if spec.get("threads"):
        config["threads"] = spec["threads"]
    ibis.set_backend(ibis.duckdb.connect(**config))


def main() -> None:
    spec_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    if spec["store"] == "duckdb":
        _limit_duckdb(spec)
    started = time.perf_counter()
    store, refs = _apply(spec, Path(spec["repo"]))
    setup_s = time.perf_counter() - started

    started = time.perf_counter()
    spine = pq.read_table(spec["spine"], columns=["user_id", "ts"])
    entity_df = pa.table(
        {
            "user_id": spine.column("user_id"),
            "event_timestamp": spine.column("ts"),
            "row_idx": pa.array(range(spine.num_rows), type=pa.int64()),
        }
    ).to_pandas()
    job = store.get_historical_features(entity_df=entity_df, features=refs)
    table: pa.Table = job.to_arrow()
    joined_s = time.perf_counter() - started
    pq.write_table(table, spec["out"])
    seconds = time.perf_counter() - started

    feast: Any = importlib.import_module("feast")
    result = {
        "seconds": seconds,
        "join_s": joined_s,
        "setup_s": setup_s,
        "rows": table.num_rows,
        "features": len(refs),
        "feast_version": feast.__version__,
        "store": spec["store"],
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
