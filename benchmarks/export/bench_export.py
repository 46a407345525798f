"""Offline export benchmark: ours vs Feast vs a hand-written DuckDB query, on the same data.

    .venv/bin/python -m benchmarks.export.bench_export --events 200000 --spine 20000      # smoke
    .venv/bin/python -m benchmarks.export.bench_export --events 10000000 --spine 1000000  # goal

Data. ``feature_store.events.generator`` produces the example registry's realistic stream
(power-law users, sessions) spread over a week of event time; it is archived in the archiver's
layout (two partitions, Parquet by source and date). The spine samples users seen in the stream
uniformly, each with a uniform time over the stream's span (``user_id``, ``peer_id``, ``ts``;
no two rows share a ``(user_id, ts)``). Data and Feast's tables are cached in the work folder
(``.stack/bench-export/...`` by default) keyed by the sizes and seed.

The service is ``ranking_v1`` (18 features over 8 views: counts, sums, an avg, a max, a
lifetime count and a count_distinct, windows of 1 h to 30 d). Contenders, each timed in its
own child process (wall time of the part after imports and set-up; peak RSS of the process by
``wait4``):

ours
    ``feature_store.export.engine.export`` from the raw archive: values *and* statuses, the
    job's key rules, dedup of replayed events and the dead-letter anti-join (both no-ops here),
    tile-granular windows.
hand
    :mod:`benchmarks.export.handwritten`: one DuckDB query typed in for this service from the
    raw archive, values only (0 or null where ours has a NOT_FOUND status), exact distinct
    counts, no dedup or dead letters (this archive has none).
feast
    Feast's ``get_historical_features`` (latest Feast from PyPI, in its own venv
    ``.stack/feast-venv``; offline store ``duckdb`` by default, ``--feast-store file`` for the
    Dask file store). Feast does not compute windowed aggregations from raw events: it
    point-in-time joins precomputed feature rows. Its tables are computed *untimed* by the
    hand-written query, per view: one row per (user, time) for every event time (what a
    streaming pipeline pushing features per event would write) *and* every spine time (the only
    way a precomputed table can hold windows that decayed since the entity's last event), with
    the view's TTL from the registry. So Feast returns exactly the hand-written values while
    doing only the join; its timed part is reading the spine into the entity DataFrame, the
    join, and writing the result.

Checks (``--no-verify`` skips them), over every row: ours against hand (ours ``PRESENT`` ->
equal; another status -> hand says 0 or null) and Feast against hand (equal, nulls equal).
``distinct_partners_7d`` is a HyperLogLog estimate in ours: exact while a sketch is sparse (up
to 512 distinct values), within a few percent past that; its differences are reported with the
largest relative error.

The machine is small and shared, so the load average is sampled while each contender runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common_feast import ensure_feast_venv
from benchmarks.export import handwritten
from feature_store.archive import layout
from feature_store.archive.schema import EventSchema
from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventGenerator, EventKind, GeneratorConfig
from feature_store.export.plan import plan_export

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "ranking_v1"
FEAST_EXTRAS = ("duckdb",)
_FLUSH_ROWS = 200_000  # archived rows buffered per (source, partition, day) before a file is written
_DATA_VERSION = 1


# --- data ------------------------------------------------------------------------------------------


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
    newest_day = -(1 << 62)

    def flush(key: tuple[str, int, int]) -> None:
        source, partition, day = key
        columns = buffers.pop(key)
        date = layout.date_text(day)
        assert date is not None
        path = layout.file_path(
            layout.source_dir(root, source), date, partition, first.pop(key), columns[-1][-1]
        )
        layout.write_atomic(schemas[source].table(columns), path)

    for ev in gen.events(max_events=n_events):
        if ev.kind is not EventKind.VALID or ev.record is None:
            continue
        partition = zlib.crc32(ev.key or b"") % 2
        offset = offsets[(ev.source, partition)]
        offsets[(ev.source, partition)] += 1
        day = layout.day_of(ev.event_time_ms)
        if day > newest_day:  # a new day: the older days' files are done (a late event opens another)
            for stale in [k for k in buffers if k[2] < day]:
                flush(stale)
            newest_day = day
        key = (ev.source, partition, day)
        columns = buffers.get(key)
        if columns is None:
            columns = buffers[key] = schemas[ev.source].new_columns()
            first[key] = offset
        schemas[ev.source].append(columns, ev.record, partition, offset)
        lo, hi = min(lo, ev.event_time_ms), max(hi, ev.event_time_ms)
        if ev.key:
            users.add(ev.key.decode())
        if len(columns[-1]) >= _FLUSH_ROWS:
            flush(key)
    for key in list(buffers):
        flush(key)
    return lo, hi, sorted(users)


def write_spine(path: Path, users: list[str], lo: int, hi: int, rows: int, seed: int) -> None:
    """Uniform users and times; no two rows share (user_id, ts), so every contender's row
    identity is the same (Feast identifies entity rows by their keys and time)."""
    rng = random.Random(seed)
    seen: set[tuple[str, int]] = set()
    user_ids: list[str] = []
    peers: list[str] = []
    times: list[int] = []
    while len(times) < rows:
        user, t = rng.choice(users), lo + rng.randrange(max(1, hi - lo))
        if (user, t) in seen:
            continue
        seen.add((user, t))
        user_ids.append(user)
        peers.append(rng.choice(users))
        times.append(t)
    table = pa.table(
        {
            "user_id": pa.array(user_ids, type=pa.string()),
            "peer_id": pa.array(peers, type=pa.string()),
            "ts": pa.array(times, type=pa.timestamp("ms", tz="UTC")),
        }
    )
    pq.write_table(table, path)


@dataclass(frozen=True, slots=True)
class Data:
    work: Path
    archive: Path
    spine: Path
    info: dict[str, Any]


def prepare_data(registry: Registry, work: Path, events: int, spine_rows: int, seed: int) -> Data:
    """Generate the archive and spine in ``work``, or reuse them when made with the same sizes."""
    marker = work / "data.json"
    wanted = {"version": _DATA_VERSION, "events": events, "spine_rows": spine_rows, "seed": seed}
    archive, spine = work / "archive", work / "spine.parquet"
    if marker.is_file():
        info: dict[str, Any] = json.loads(marker.read_text())
        if {k: info.get(k) for k in wanted} == wanted and archive.is_dir() and spine.is_file():
            return Data(work, archive, spine, {**info, "cached": True})
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    lo, hi, users = write_archive(registry, archive, events, seed)
    archived = time.perf_counter() - started
    write_spine(spine, users, lo, hi, spine_rows, seed)
    info = {**wanted, "users": len(users), "min_t": lo, "max_t": hi, "generate_and_archive_s": archived}
    marker.write_text(json.dumps(info))
    return Data(work, archive, spine, {**info, "cached": False})


def feast_tables(
    registry: Registry, data: Data, memory_limit: str | None
) -> tuple[list[dict[str, Any]], float]:
    """Per view of the service, Feast's precomputed feature table (cached); its spec entries."""
    plan = plan_export(registry, SERVICE)
    ttl = {job.view.name: job.view.ttl_ms for job in plan.views}
    folder = data.work / "feast_tables"
    marker = folder / "done.json"
    started = time.perf_counter()
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        config: dict[str, Any] = {"temp_directory": str(folder / "duckdb_tmp")}
        if memory_limit:
            config["memory_limit"] = memory_limit
        con = duckdb.connect(config=config)
        rows = {}
        for view in handwritten.VIEWS:
            query = handwritten.feast_table_query(data.archive, view, data.spine)
            dest = str(folder / f"{view}.parquet").replace("'", "''")
            rows[view] = int(con.execute(f"COPY ({query}) TO '{dest}' (FORMAT PARQUET)").fetchall()[0][0])
        con.close()
        shutil.rmtree(folder / "duckdb_tmp", ignore_errors=True)
        marker.write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
    done = json.loads(marker.read_text())
    views = [
        {
            "name": view,
            "path": str(folder / f"{view}.parquet"),
            "rows": done["rows"][view],
            "ttl_s": (ttl[view] or 0) // 1000,
            "features": handwritten.feature_types(view),
        }
        for view in handwritten.VIEWS
    ]
    return views, float(done["seconds"])


# --- running contenders ----------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    name: str
    seconds: float  # the timed part, measured in the child
    process_s: float  # the whole child process, imports and set-up included
    maxrss_mib: float  # peak resident set of the child (wait4)
    load: tuple[float, float, float]  # 1-minute load average: min, mean, max while it ran
    result: dict[str, Any]


def run_child(name: str, command: list[str], result_path: Path) -> Run:
    """Run one contender in a child process; its peak RSS comes from wait4's rusage."""
    result_path.unlink(missing_ok=True)
    samples = [os.getloadavg()[0]]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(2.0):
            samples.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    samples.append(os.getloadavg()[0])
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed with exit code {proc.returncode}: {' '.join(command)}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    load = (min(samples), sum(samples) / len(samples), max(samples))
    return Run(name, float(result["seconds"]), elapsed, usage.ru_maxrss / 1024, load, result)


# --- checks ----------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    return f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}', file_row_number = true)"


def compare(ours: Path | None, hand: Path, feast: Path | None) -> dict[str, Any]:
    """Per feature: rows where ours or Feast disagree with the hand-written query."""
    con = duckdb.connect(config={"temp_directory": str(hand.parent / "duckdb_tmp")})
    checks: dict[str, Any] = {}
    if ours is not None:
        parts = []
        for f in handwritten.FEATURES:
            o, h, s = f"o.{f}", f"h.{f}", f"o.{f}__status"
            wrong = (
                f"({s} = 'PRESENT' AND {o} IS DISTINCT FROM {h}) "
                f"OR ({s} <> 'PRESENT' AND coalesce({h}, 0) <> 0)"
            )
            parts.append(
                f"count(*) FILTER (WHERE {wrong}), "
                f"max(abs({o} - {h}) / greatest(abs({h}), 1)) FILTER (WHERE {s} = 'PRESENT'), "
                f"count(*) FILTER (WHERE {s} <> 'PRESENT')"
            )
        row = con.sql(
            f"SELECT count(*), {', '.join(parts)} FROM {_read(ours)} o "
            f"JOIN {_read(hand)} h USING (file_row_number)"
        ).fetchall()[0]
        checks["ours_vs_hand"] = {
            "rows": row[0],
            "features": {
                f: {"differ": row[1 + 3 * i], "max_rel_err": row[2 + 3 * i], "not_present": row[3 + 3 * i]}
                for i, f in enumerate(handwritten.FEATURES)
            },
        }
    if feast is not None:
        parts = [f"count(*) FILTER (WHERE x.{f} IS DISTINCT FROM h.{f})" for f in handwritten.FEATURES]
        row = con.sql(
            f"SELECT count(*), {', '.join(parts)} FROM read_parquet('{feast}') x "
            f"JOIN {_read(hand)} h ON x.row_idx = h.file_row_number"
        ).fetchall()[0]
        checks["feast_vs_hand"] = {
            "rows": row[0],
            "features": {f: {"differ": row[1 + i]} for i, f in enumerate(handwritten.FEATURES)},
        }
    return checks


# --- main ------------------------------------------------------------------------------------------


def check_lines(checks: dict[str, Any]) -> list[str]:
    """One line per comparison: how many features agree on every row, and the others."""
    lines = []
    for name, check in checks.items():
        features = check["features"]
        agree = [f for f, c in features.items() if not c["differ"]]
        line = (
            f"{name.replace('_', ' ')} ({check['rows']:,} rows): {len(agree)}/{len(features)} features equal"
        )
        for f, c in features.items():
            if c["differ"]:
                err = c.get("max_rel_err")
                line += f"; {f} differs on {c['differ']:,} rows" + (
                    f" (max relative error {err:.2%})" if err is not None else ""
                )
        lines.append(line)
    return lines


def _engine_commit() -> str:
    """HEAD, with "+dirty" when the export's sources differ from it (what "ours" ran)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "feature_store"], check=False, capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _goal(ratio: float | None, met: Callable[[float], bool]) -> bool | None:
    return None if ratio is None else met(ratio)


def _table(runs: list[Run], rows: int, features: int) -> str:
    lines = [
        "| contender | time (s) | process (s) | peak RSS (MiB) | rows | features | load 1m min/mean/max |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.name} | {r.seconds:.1f} | {r.process_s:.1f} | {r.maxrss_mib:,.0f} | "
            f"{r.result.get('rows', rows):,} | {r.result.get('features', features)} | "
            f"{r.load[0]:.1f} / {r.load[1]:.1f} / {r.load[2]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="generated events (default 200k)")
    parser.add_argument("--spine", type=int, default=20_000, help="spine rows (default 20k)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--work", type=Path, default=None, help="default .stack/bench-export/e<N>-s<M>-r<seed>"
    )
    parser.add_argument("--contenders", default="ours,hand,feast", help="comma-separated subset")
    parser.add_argument("--feast-store", choices=["duckdb", "file"], default="duckdb")
    parser.add_argument("--feast-upgrade", action="store_true", help="pip install --upgrade feast first")
    parser.add_argument("--memory-limit", default="8GB", help="DuckDB memory limit of every contender")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: cores)")
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]  # "" only prepares data
    unknown = set(contenders) - {"ours", "hand", "feast"}
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")

    registry = load_registry(ROOT / "registry")
    plan = plan_export(registry, SERVICE)
    assert [c.feature for c in plan.columns] == list(handwritten.FEATURES), "hand query out of date"
    work = args.work or ROOT / ".stack" / "bench-export" / f"e{args.events}-s{args.spine}-r{args.seed}"
    data = prepare_data(registry, work, args.events, args.spine, args.seed)
    print(json.dumps({"data": data.info}), file=sys.stderr)
    out = work / "out"
    out.mkdir(exist_ok=True)
    spec = {
        "archive": str(data.archive),
        "spine": str(data.spine),
        "memory_limit": args.memory_limit,
        "threads": args.threads,
        "temp_dir": str(out / "duckdb_tmp"),
    }
    runs: list[Run] = []
    extra: dict[str, Any] = {}
    for name in contenders:
        spec_path, result_path = out / f"{name}.spec.json", out / f"{name}.result.json"
        if name == "feast":
            python = ensure_feast_venv(FEAST_EXTRAS, args.feast_upgrade)
            views, seconds = feast_tables(registry, data, args.memory_limit)
            extra["feast_tables"] = {"rows": sum(v["rows"] for v in views), "seconds": round(seconds, 1)}
            repo = out / f"feast_repo_{args.feast_store}"
            shutil.rmtree(repo, ignore_errors=True)
            feast_spec = {**spec, "views": views, "store": args.feast_store, "repo": str(repo)}
            spec_path.write_text(
                json.dumps({**feast_spec, "out": str(out / f"feast_{args.feast_store}.parquet")})
            )
            command = [str(python), str(ROOT / "benchmarks" / "export" / "feast_contender.py")]
        else:
            spec_path.write_text(json.dumps({**spec, "out": str(out / f"{name}.parquet")}))
            command = [sys.executable, "-m", "benchmarks.export.contenders", name]
        print(f"running {name}...", file=sys.stderr)
        runs.append(run_child(name, [*command, str(spec_path), str(result_path)], result_path))
        print(json.dumps({name: runs[-1].result}), file=sys.stderr)

    checks: dict[str, Any] = {}
    if not args.no_verify and "hand" in contenders:
        checks = compare(
            out / "ours.parquet" if "ours" in contenders else None,
            out / "hand.parquet",
            out / f"feast_{args.feast_store}.parquet" if "feast" in contenders else None,
        )
    by_name = {r.name: r for r in runs}
    ratios = {}
    if "ours" in by_name and "feast" in by_name:
        ratios["feast_over_ours"] = round(by_name["feast"].seconds / by_name["ours"].seconds, 2)
    if "ours" in by_name and "hand" in by_name:
        ratios["ours_over_hand"] = round(by_name["ours"].seconds / by_name["hand"].seconds, 2)
    report = {
        "events": args.events,
        "spine_rows": args.spine,
        "service": SERVICE,
        "features": len(handwritten.FEATURES),
        "data": data.info,
        "cores": os.cpu_count(),
        "engine_commit": _engine_commit(),
        "memory_limit": args.memory_limit,
        "feast_store": args.feast_store if "feast" in contenders else None,
        **extra,
        "runs": {
            r.name: {
                "seconds": round(r.seconds, 2),
                "process_s": round(r.process_s, 2),
                "maxrss_mib": round(r.maxrss_mib),
                "load_1m": [round(x, 2) for x in r.load],
                **{k: v for k, v in r.result.items() if k not in {"seconds"}},
            }
            for r in runs
        },
        "ratios": ratios,
        "goals": {
            "ours_10x_faster_than_feast": _goal(ratios.get("feast_over_ours"), lambda r: r >= 10),
            "ours_within_2x_of_hand": _goal(ratios.get("ours_over_hand"), lambda r: r <= 2),
        },
        "checks": checks,
    }
    saved = out / f"report-{time.strftime('%Y%m%d-%H%M%S')}.json"
    saved.write_text(json.dumps(report, indent=2, default=str))
    brief = {k: report[k] for k in ("events", "spine_rows", "service", "features", "ratios", "goals")}
    print(json.dumps({**brief, "feast_tables": extra.get("feast_tables"), "report": str(saved)}, indent=2))
    print()
    print(_table(runs, args.spine, len(handwritten.FEATURES)))
    for line in check_lines(checks):
        print(line)


if __name__ == "__main__":
    main()
