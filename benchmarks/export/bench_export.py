"""Export benchmark (smoke-sized by default): generated events -> archive -> `export` of a service.

    .venv/bin/python -m benchmarks.export.bench_export --events 200000 --spine 20000

Events come from ``feature_store.events.generator`` (the example registry's realistic stream),
are archived in the archiver's layout (two partitions), and a spine samples users that have
events at uniform times over the stream's span. Prints the export's wall time per phase and, as
a floor, a hand-written DuckDB ASOF JOIN computing one feature (a windowed count) of the spine.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.archive import layout
from feature_store.archive.schema import EventSchema
from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventGenerator, EventKind, GeneratorConfig
from feature_store.export.engine import ExportOptions, export

ROOT = Path(__file__).resolve().parents[2]


def write_archive(registry: Registry, root: Path, n_events: int, seed: int) -> tuple[int, int, list[str]]:
    """Archive ``n_events`` generated events; returns (min time, max time, user ids seen)."""
    # spread the stream over a week of event time, so windows of hours and days matter
    config = GeneratorConfig(seed=seed, rate=n_events / (7 * 86_400), users=max(100, n_events // 50))
    gen = EventGenerator(registry, config)
    schemas = {s.name: EventSchema(s) for s in registry.sources}
    buffers: dict[tuple[str, int, int], list[list[Any]]] = {}
    first: dict[tuple[str, int, int], int] = {}
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    users: set[str] = set()
    lo, hi = 1 << 62, -(1 << 62)
    for ev in gen.events(max_events=n_events):
        if ev.kind is not EventKind.VALID or ev.record is None:
            continue
        partition = hash(ev.key) % 2
        offset = offsets[(ev.source, partition)]
        offsets[(ev.source, partition)] += 1
        key = (ev.source, partition, layout.day_of(ev.event_time_ms))
        columns = buffers.setdefault(key, schemas[ev.source].new_columns())
        first.setdefault(key, offset)
        schemas[ev.source].append(columns, ev.record, partition, offset)
        lo, hi = min(lo, ev.event_time_ms), max(hi, ev.event_time_ms)
        if ev.key:
            users.add(ev.key.decode())
    for (source, partition, day), columns in buffers.items():
        date = layout.date_text(day)
        assert date is not None
        path = layout.file_path(
            layout.source_dir(root, source), date, partition, first[(source, partition, day)], columns[-1][-1]
        )
        layout.write_atomic(schemas[source].table(columns), path)
    return lo, hi, sorted(users)


def asof_floor(root: Path, spine: Path) -> float:
    """One feature by hand in DuckDB: matches sent in the last hour (a cumulative-count ASOF JOIN)."""
    files = [str(p) for p in layout.list_files(layout.source_dir(root, "match_request"))]
    started = time.perf_counter()
    relation = duckdb.connect().sql(
        f"""
        WITH ev AS (SELECT user_id, event_time AS t,
                           row_number() OVER (PARTITION BY user_id ORDER BY event_time) AS c
                    FROM read_parquet({files!r}, hive_partitioning = false)),
             sp AS (SELECT row_number() OVER () AS r, user_id, epoch_ms(ts) AS t FROM read_parquet('{spine}'))
        SELECT sp.r, coalesce(a.c, 0) - coalesce(b.c, 0) AS sent_1h
        FROM sp ASOF LEFT JOIN ev a ON sp.user_id = a.user_id AND sp.t >= a.t
                ASOF LEFT JOIN ev b ON sp.user_id = b.user_id AND sp.t - 3600000 >= b.t
        """
    )
    relation.to_arrow_table()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--spine", type=int, default=20_000)
    parser.add_argument("--service", default="ranking_v1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    registry = load_registry(ROOT / "registry")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        started = time.perf_counter()
        lo, hi, users = write_archive(registry, work / "archive", args.events, args.seed)
        generate_s = time.perf_counter() - started
        rng = random.Random(args.seed)
        ts = [lo + rng.randrange(max(1, hi - lo)) for _ in range(args.spine)]
        spine = pa.table(
            {
                "user_id": [rng.choice(users) for _ in range(args.spine)],
                "peer_id": [rng.choice(users) for _ in range(args.spine)],
                "ts": pa.array(ts, type=pa.timestamp("ms", tz="UTC")),
            }
        )
        pq.write_table(spine, work / "spine.parquet")
        summary = export(
            registry,
            args.service,
            work / "spine.parquet",
            work / "archive",
            work / "out.parquet",
            ExportOptions(),
        )
        floor_s = asof_floor(work / "archive", work / "spine.parquet")
        print(
            json.dumps(
                {
                    "events": args.events,
                    "spine_rows": args.spine,
                    "service": args.service,
                    "feature_columns": len(summary.columns) // 2,
                    "generate_and_archive_s": round(generate_s, 2),
                    "export_s": round(summary.seconds, 2),
                    "views": {
                        k: {"events": v.events, "buckets": v.buckets, "s": round(v.seconds, 2)}
                        for k, v in summary.views.items()
                    },
                    "duckdb_asof_one_feature_s": round(floor_s, 3),
                },
                indent=2,
            )
        )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
