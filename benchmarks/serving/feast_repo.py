"""Feast's side of the serving benchmark: a Feast repository on the local Cassandra (runs in the Feast venv).

    .stack/feast-venv/bin/python benchmarks/serving/feast_repo.py SPEC.json RESULT.json

Standalone on purpose (stdlib, Feast and its dependencies only): the Feast venv does not have
this project, and this project's venv cannot have Feast (their pins conflict with PyFlink).

``SPEC.json`` (written by :mod:`benchmarks.serving.feast_hook`) names the repository folder,
the Feast project, the Cassandra host/port/keyspace, the time the values were read, and per
feature view its TTL, its features ``[name, type]`` (this project's value types: ``int64``,
``float64``, ``string``, ``bool``, ``*_list``) and its rows: ``user_id`` plus one column per
feature, only for entities the view knows (``None`` for a value that is not PRESENT).

What it does: (re)creates the keyspace (SimpleStrategy, RF 1; Feast expects it to exist),
writes ``feature_store.yaml`` (provider ``local``, offline store ``file``, online store
``cassandra``), writes each view's rows as the Parquet file behind its ``FileSource``, applies
the entity and feature views, and writes the rows into the online store with
``FeatureStore.write_to_online_store`` (event timestamp = the read time, so Feast's TTL check
passes exactly as ours did). ``feast serve`` is started by the caller afterwards.
``RESULT.json`` gets Feast's version, the rows written and the seconds taken.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FEATURE_STORE_YAML = """\
project: {project}
provider: local
registry: {registry}
entity_key_serialization_version: 3
offline_store:
  type: file
online_store:
  type: cassandra
  hosts:
    - {host}
  port: {port}
  keyspace: {keyspace}
"""


def feast_dtype(types: Any, kind: str) -> Any:
    """Feast type of one of this project's value types."""
    scalars = {
        "int64": types.Int64,
        "float64": types.Float64,
        "string": types.String,
        "bool": types.Bool,
        "bytes": types.Bytes,
    }
    if kind.endswith("_list"):
        return types.Array(scalars[kind.removesuffix("_list")])
    return scalars[kind]


def recreate_keyspace(host: str, port: int, keyspace: str) -> None:
    cluster_mod: Any = importlib.import_module("cassandra.cluster")
    cluster = cluster_mod.Cluster([host], port=port)
    try:
        session = cluster.connect()
        session.execute(f'DROP KEYSPACE IF EXISTS "{keyspace}"', timeout=120)
        session.execute(
            f'CREATE KEYSPACE "{keyspace}" WITH replication = '
            "{'class': 'SimpleStrategy', 'replication_factor': 1}",
            timeout=120,
        )
    finally:
        cluster.shutdown()


def setup(spec: dict[str, Any]) -> dict[str, Any]:
    feast: Any = importlib.import_module("feast")
    types: Any = importlib.import_module("feast.types")
    pd: Any = importlib.import_module("pandas")
    pa: Any = importlib.import_module("pyarrow")
    pq: Any = importlib.import_module("pyarrow.parquet")

    started = time.perf_counter()
    repo = Path(spec["repo"])
    repo.mkdir(parents=True, exist_ok=True)
    recreate_keyspace(spec["host"], spec["port"], spec["keyspace"])
    (repo / "feature_store.yaml").write_text(
        FEATURE_STORE_YAML.format(
            project=spec["project"],
            registry=repo / "registry.db",
            host=spec["host"],
            port=spec["port"],
            keyspace=spec["keyspace"],
        )
    )
    store = feast.FeatureStore(repo_path=str(repo))
    join_key = spec["join_key"]
    entity = feast.Entity(name=spec["entity"], join_keys=[join_key], value_type=feast.ValueType.STRING)
    read_at = datetime.fromtimestamp(spec["read_at_ms"] / 1000, tz=UTC)
    views = []
    frames: dict[str, Any] = {}
    for view in spec["views"]:
        rows: dict[str, list[Any]] = view["rows"]
        n = len(rows[join_key])
        frame = pd.DataFrame(
            {
                join_key: pd.Series(rows[join_key], dtype=object),
                **{name: pd.Series(rows[name], dtype=object) for name, _ in view["features"]},
                "event_timestamp": pd.Series([read_at] * n, dtype="datetime64[us, UTC]"),
            }
        )
        path = repo / "data" / f"{view['name']}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        frames[view["name"]] = frame
        views.append(
            feast.FeatureView(
                name=view["name"],
                entities=[entity],
                ttl=timedelta(seconds=view["ttl_s"]) if view["ttl_s"] else timedelta(0),
                schema=[
                    feast.Field(name=name, dtype=feast_dtype(types, kind)) for name, kind in view["features"]
                ],
                source=feast.FileSource(
                    name=f"{view['name']}_source", path=str(path), timestamp_field="event_timestamp"
                ),
                online=True,
            )
        )
    store.apply([entity, *views])
    applied_s = time.perf_counter() - started
    written = {}
    for name, frame in frames.items():
        if len(frame):
            store.write_to_online_store(name, frame)
        written[name] = len(frame)
    return {
        "feast_version": feast.__version__,
        "rows_written": written,
        "apply_s": round(applied_s, 2),
        "setup_s": round(time.perf_counter() - started, 2),
    }


def main() -> None:
    spec_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    result_path.write_text(json.dumps(setup(spec)))


if __name__ == "__main__":
    main()
