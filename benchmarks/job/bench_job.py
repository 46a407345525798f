"""Feature-job benchmarks on the local stack: sustained events/s and freshness.

    python -m benchmarks.job.bench_job throughput --events 200000
    python -m benchmarks.job.bench_job freshness --rate 5000 --seconds 60

Both apply the example registry to a fresh keyspace with fresh topics, so runs never see each
other's data. Results are printed and written as JSON under out/benchmarks/.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from feature_store import bootstrap  # noqa: F401 - registers cql://
from feature_store.adapters.cql import CqlConfig, make_cluster
from feature_store.adapters.cql_online_schema import CqlOnlineSchema
from feature_store.adapters.cql_registry_store import CqlRegistryStore
from feature_store.adapters.kafka_topics import KafkaTopics
from feature_store.core.model import Registry
from feature_store.definitions.apply import apply_registry
from feature_store.definitions.compiler import load_registry
from feature_store.events.generator import EventKind, GeneratorConfig, generate, with_topic_prefix

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = os.environ.get("FSTORE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
OUT = ROOT / "out" / "benchmarks"


def isolated(name: str) -> tuple[Registry, CqlConfig, Any]:
    registry = with_topic_prefix(load_registry(ROOT / "registry"), f"{name}.")
    cql = CqlConfig(keyspace=name)
    session = make_cluster(cql).connect()
    result = apply_registry(
        CqlRegistryStore(session, cql, "default"),
        registry,
        [CqlOnlineSchema(session, cql), KafkaTopics(BOOTSTRAP)],
        applied_by="bench",
    )
    assert result.snapshot is not None
    return registry, cql, session


def drop_isolated(name: str, session: Any, brokers: str = BOOTSTRAP) -> None:
    """Drop what ``isolated(name)`` made: its keyspace and its topics. Runs left behind make
    later runs slower (hundreds of idle tables still flush and compact in the same store)."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=120)
    admin = AdminClient({"bootstrap.servers": brokers})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{name}.")]
    for done in admin.delete_topics(topics).values() if topics else ():
        done.result()


def producer() -> Producer:
    return Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "batch.num.messages": 10000})


def send(p: Producer, topic: str, key: bytes | None, value: bytes, timestamp_ms: int) -> None:
    """Produce one record, waiting for room while the producer's queue is full."""
    while True:
        try:
            p.produce(topic, value=value, key=key, timestamp=timestamp_ms)
            return
        except BufferError:
            p.poll(0.01)


def produce_generated(
    registry: Registry,
    n: int,
    start_ms: int,
    rate: float,
    seed: int = 1,
    sources: list[str] | None = None,
    users: int = 10_000,
) -> int:
    """Produce the generator's valid events (only those of ``sources`` if given); returns how many."""
    p = producer()
    sent = 0
    config = GeneratorConfig(seed=seed, rate=rate, start_ms=start_ms, users=users)
    for ev in generate(registry, config, max_events=n):
        if ev.kind is not EventKind.VALID or (sources and ev.source not in sources):
            continue
        send(p, ev.topic, ev.key, ev.value, ev.event_time_ms)
        sent += 1
    p.flush(60)
    return sent


def job_cmd(name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "feature_store.cli.main", "job", "run",
        "--store", f"cql://127.0.0.1:9042/{name}", "--bootstrap", BOOTSTRAP, "--group-id", name, *extra,
    ]  # fmt: skip


def consumer_lag(registry: Registry, group_prefix: str, brokers: str = BOOTSTRAP) -> dict[str, int]:
    """Per source: events in its topic not yet committed by the job's consumer group (Flink
    commits on each completed checkpoint, so up to a checkpoint interval of events shows here
    even when the job keeps up)."""
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    lag: dict[str, int] = {}
    for source in registry.sources:
        if not registry.views_of_source(source.name):
            continue
        consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": f"{group_prefix}.{source.name}",
                "enable.auto.commit": False,
            }
        )
        try:
            meta = consumer.list_topics(source.topic, timeout=10).topics[source.topic]
            parts = [TopicPartition(source.topic, p) for p in meta.partitions]
            committed = consumer.committed(parts, timeout=10)
            total = 0
            for tp in committed:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(source.topic, tp.partition), timeout=10
                )
                total += high - max(tp.offset, 0)
            lag[source.name] = total
        finally:
            consumer.close()
    return lag


def setup_text() -> dict[str, Any]:
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores; Kafka, Cassandra, Flink co-located",
        "python": platform.python_version(),
        "flink": "PyFlink 2.2.1 MiniCluster, parallelism 1, thread mode",
    }


class TreeCpu:
    """CPU seconds used by a process and all its descendants (polled from /proc: the Flink
    JVM is a grandchild that the rusage of waited children does not cover)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _children(self) -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                tree.setdefault(ppid, []).append(int(entry.name))
        return tree

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            tree, todo = self._children(), [self.root]
            while todo:
                pid = todo.pop()
                todo.extend(tree.get(pid, ()))
                try:
                    self.seen[pid] = proc_cpu_s(pid)
                except OSError:
                    continue

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process so far (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_pid() -> int | None:
    """The local Cassandra's pid (the store's CPU per event is part of what a write path costs)."""
    from feature_store.stack import services  # noqa: PLC0415
    from feature_store.stack.layout import Layout  # noqa: PLC0415

    return services.running_pid(Layout.default(), "cassandra")


def _job_args(args: argparse.Namespace) -> list[str]:
    """The job's options a benchmark run varies."""
    sql = [] if args.sql_tiles else ["--no-sql-tiles"]
    route = [] if args.jvm_route else ["--no-jvm-route"]
    return [
        *sql,
        *route,
        "--flush-interval-ms",
        str(args.flush_interval_ms),
        "--catch-up-flush-ms",
        str(args.catch_up_flush_ms),
        "--tile-merge",
        args.tile_merge,
        "--state-backend",
        args.state_backend,
        "--write-batching",
        args.write_batching,
        "--write-batch-bytes",
        str(args.write_batch_bytes),
    ]


def _source_args(args: argparse.Namespace) -> list[str]:
    return [*_job_args(args), *(a for s in args.source or () for a in ("--source", s))]


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    name = f"bj{uuid.uuid4().hex[:8]}"
    registry, _, session = isolated(name)
    try:
        return _throughput(args, name, registry)
    finally:
        if not args.keep:
            drop_isolated(name, session)


def _throughput(args: argparse.Namespace, name: str, registry: Registry) -> dict[str, Any]:
    now = int(time.time() * 1000)
    # events over the last ~hour of event time, so tiles stay live
    rate = args.events / 3000
    sent = produce_generated(
        registry, args.events, now - 3_000_000, rate=rate, sources=args.source, users=args.users
    )
    started = time.monotonic()
    log_offsets = _flink_log_offsets()
    store = store_pid()
    store_cpu = proc_cpu_s(store) if store else None
    job = subprocess.Popen(
        job_cmd(
            name,
            "--bounded",
            "--checkpoint-interval-ms",
            str(args.checkpoint_interval_ms),
            *_source_args(args),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree_cpu = TreeCpu(job.pid)
    stdout, stderr = job.communicate()
    proc = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "last-job-stderr.txt").write_text(stderr)
    wall = time.monotonic() - started
    cpu = tree_cpu.stop()
    store_cpu_used = None if store is None or store_cpu is None else proc_cpu_s(store) - store_cpu
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    net_ms = next(
        (int(line.split()[-2]) for line in proc.stdout.splitlines() if line.startswith("job net runtime")),
        None,
    )
    return {
        "benchmark": "job_throughput",
        "setup": setup_text(),
        "events": sent,
        "sources": args.source or "all",
        "users": args.users,
        "sql_tiles": args.sql_tiles,
        "jvm_route": args.jvm_route,
        "tile_merge": args.tile_merge,
        "state_backend": args.state_backend,
        "write_batching": args.write_batching,
        "write_batch_bytes": args.write_batch_bytes,
        "flush_interval_ms": args.flush_interval_ms,
        "catch_up_flush_ms": args.catch_up_flush_ms,
        "checkpoint_interval_ms": args.checkpoint_interval_ms,
        "wall_s": round(wall, 1),
        "events_per_s_wall": round(sent / wall),
        "job_net_runtime_s": None if net_ms is None else round(net_ms / 1000, 1),
        "events_per_s_net": None if not net_ms else round(sent / (net_ms / 1000)),
        # CPU of the job's processes (driver + Flink JVM with its embedded Python), start-up
        # included: less sensitive to other load on the machine than wall time
        "job_cpu_s": round(cpu, 1),
        "job_cpu_us_per_event": round(cpu / sent * 1e6),
        # the store's CPU over the same time (its background compaction included)
        "store_cpu_us_per_event": None if store_cpu_used is None else round(store_cpu_used / sent * 1e6),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        # what the SQL path's tile sink wrote (its totals, logged when it closes)
        **sink_totals(log_offsets, sent),
    }


def flink_logs() -> list[Path]:
    """The local MiniCluster's log files (PyFlink writes them into its package folder)."""
    import pyflink  # noqa: PLC0415

    return sorted((Path(pyflink.__file__).parent / "log").glob("*.log"))


def _flink_log_offsets() -> dict[Path, int]:
    return {path: path.stat().st_size for path in flink_logs()}


def sink_totals(offsets: dict[Path, int], events: int, logs: list[Path] | None = None) -> dict[str, Any]:
    """Tiles and write requests per event, from the lines the tile sink logged since ``offsets``."""
    tiles = requests = 0
    for path in flink_logs() if logs is None else logs:
        with path.open("rb") as f:
            start = offsets.get(path, 0)
            f.seek(start if start <= path.stat().st_size else 0)  # a new job may start the log anew
            for line in f.read().decode(errors="replace").splitlines():
                if "tile writer closing:" in line:
                    words = line.split("closing:")[1].split()
                    tiles, requests = tiles + int(words[0]), requests + int(words[4])
    if not tiles or not events:
        return {}
    return {
        "tiles_per_event": round(tiles / events, 2),
        "write_requests_per_event": round(requests / events, 2),
    }


Paced = tuple[str, bytes | None, bytes, int]  # topic, key, value, event time (ms)


def pregenerate(registry: Registry, rate: float, seconds: float, users: int) -> list[Paced]:
    """``seconds`` of the generator's valid events at ``rate``, timed to start once they are all
    generated (the time that takes is estimated from a first sample, generously)."""
    config = GeneratorConfig(seed=2, rate=rate, users=users)
    started = time.monotonic()
    sample = generate(registry, config)
    next(sample)  # the generator's own warm-up
    warm_up_s, started = time.monotonic() - started, time.monotonic()
    for _ in zip(range(20_000), sample, strict=False):
        pass
    per_event = (time.monotonic() - started) / 20_000
    # (building the list costs more per event than the sample: x2)
    lead_s = warm_up_s + per_event * rate * seconds * 2 + 5
    config = dataclasses.replace(config, start_ms=int((time.time() + lead_s) * 1000))
    gc.disable()  # millions of tuples: the cyclic collector would rescan them all, again and again
    try:
        return [
            (ev.topic, ev.key, ev.value, ev.event_time_ms)
            for ev in generate(registry, config, duration_s=seconds)
            if ev.kind is EventKind.VALID
        ]
    finally:
        gc.enable()


def freshness(args: argparse.Namespace) -> dict[str, Any]:
    """Background load at --rate; probes: a like for a fresh target every 200 ms, timed until its
    tile is readable in the store (produced -> readable)."""
    name = f"bf{uuid.uuid4().hex[:8]}"
    registry, cql, session = isolated(name)
    try:
        return _freshness(args, name, registry, cql, session)
    finally:
        if not args.keep:
            drop_isolated(name, session)


def _freshness(
    args: argparse.Namespace, name: str, registry: Registry, cql: CqlConfig, session: Any
) -> dict[str, Any]:
    like = registry.source("like")
    select = session.prepare(
        f"SELECT tile_start_ms FROM {cql.keyspace}.fe_user"
        " WHERE entity_key = ? AND feature_view = 'user_likes_received'"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    job_log = (OUT / "last-freshness-job.log").open("w")
    job = subprocess.Popen(
        job_cmd(name, "--checkpoint-interval-ms", str(args.checkpoint_interval_ms), *_job_args(args)),
        stdout=job_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()

    produced = [0]
    load_window: list[float] = []
    late_start_s: list[float] = []

    def load(events: list[Paced]) -> None:
        p = producer()
        if events:
            ahead = events[0][3] / 1000 - time.time()
            time.sleep(max(0.0, ahead))
            # > 0: generating took longer than foreseen and the load starts with a burst
            late_start_s.append(round(max(0.0, -ahead), 1))
        load_window.append(time.monotonic())
        for i, (topic, key, value, at_ms) in enumerate(events):
            if i % 200 == 0:
                if stop.is_set():
                    break
                ahead = at_ms / 1000 - time.time()
                if ahead > 0.002:
                    time.sleep(ahead)
                p.poll(0)
            send(p, topic, key, value, at_ms)
            produced[0] += 1
        p.flush(30)

    import fastavro  # noqa: PLC0415

    from feature_store.adapters.avro_wire import encode, schema_id, strip_logical_types  # noqa: PLC0415

    schema = fastavro.parse_schema(strip_logical_types(json.loads(like.schema_json)))
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (seconds into the probing, ms)
    warmup: list[float | None] = []  # probes during the warm-up under load, ms
    i = 0
    try:
        p = producer()

        def probe(target: str, timeout_s: float) -> float | None:
            """Produce a like for a fresh target; ms until its tile is readable (None: timed out)."""
            now = int(time.time() * 1000)
            record = {
                "event_id": target,
                "event_time": now,
                "user_id": "prober",
                "target_id": target,
                "super_like": False,
            }
            sent_at = time.monotonic()
            p.produce(like.topic, key=b"prober", value=encode(schema, schema_id(like), record), timestamp=now)
            p.flush(5)
            while time.monotonic() - sent_at < timeout_s:
                if session.execute(select, (target.encode(),)).one() is not None:
                    return (time.monotonic() - sent_at) * 1000
                time.sleep(0.005)
            return None

        # the job is up once a warm-up probe comes through (start-up takes 20-90 s under load)
        started = time.monotonic()
        while probe(f"warmup-{name}-{int(time.monotonic())}", 5) is None:
            if time.monotonic() - started > 240:
                raise SystemExit("the job did not start consuming within 240 s")
        # the background load is generated now, while the job idles, so its cost stays out of
        # the measured window; each event then leaves when the clock reaches its event time
        generating = time.monotonic()
        events = pregenerate(registry, args.rate, args.warmup_s + args.seconds + 40, args.users)
        generated = (len(events), round(time.monotonic() - generating, 1))
        loader = threading.Thread(target=load, args=(events,), daemon=True)
        loader.start()
        while not load_window:  # until the first event is due
            time.sleep(0.05)
        # the job's first seconds under load are its JIT warm-up (probes up to ~1.8 s there):
        # measure the steady state, the one-off warm-up is reported apart
        warm = time.monotonic() + args.warmup_s
        while time.monotonic() < warm:
            took = probe(f"warm-{name}-{i}", 30)
            warmup.append(round(took, 1) if took is not None else None)
            i += 1
            time.sleep(0.2)
        deadline = time.monotonic() + args.seconds
        i = 0
        while time.monotonic() < deadline:
            at = time.monotonic() - deadline + args.seconds
            took = probe(f"probe-{name}-{i}", 30)
            if took is not None:
                latencies.append(took)
                timeline.append((round(at, 2), round(took, 1)))
            i += 1
            time.sleep(0.2)
        load_window.append(time.monotonic())
        sent = produced[0]
        # does the job keep up with every source, not only the probed one? the committed lag,
        # twice 20 s apart (two checkpoints at the default interval) under the same load
        lag_before = consumer_lag(registry, name)
        time.sleep(20)
        lag_after = consumer_lag(registry, name)
        # then the load stops: the time until every event is committed shows the backlog the
        # committed lag cannot tell from checkpoint timing (keeping up: about one interval)
        stop.set()
        stopped, drain_s = time.monotonic(), None
        while time.monotonic() - stopped < 300:
            if not any(consumer_lag(registry, name).values()):
                drain_s = round(time.monotonic() - stopped, 1)
                break
            time.sleep(1)
    finally:
        stop.set()
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    q = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 2
        else [float("nan")] * 99
    )
    return {
        "benchmark": "freshness",
        "setup": setup_text()
        | {
            "background_rate": args.rate,
            "probe_interval_ms": 200,
            "checkpoint_interval_ms": args.checkpoint_interval_ms,
            "flush_interval_ms": args.flush_interval_ms,
            "warmup_s": args.warmup_s,
            "users": args.users,
        },
        "pregenerated_events_s": generated,
        "load_late_start_s": late_start_s[0] if late_start_s else None,
        "background_rate_achieved": round(sent / (load_window[1] - load_window[0]))
        if len(load_window) > 1
        else None,
        # the job's committed consumer lag per source, before and 20 s later, in events: a lag
        # that grows means the job does not keep up with that source at this rate
        "consumer_lag_events": {k: [lag_before[k], lag_after[k]] for k in lag_before},
        "committed_all_s_after_load_stopped": drain_s,
        "probes": len(latencies),
        "probes_timed_out_30s": i - len(latencies),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(q[98], 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        # the slowest probes and when they ran: clusters every checkpoint interval point at
        # checkpoints, scattered ones at CPU contention
        "slowest_probes_at_s_ms": sorted(timeline, key=lambda p: -p[1])[:8],
        "warmup_max_ms": max((w for w in warmup if w is not None), default=None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--events", type=int, default=200_000)
    t.add_argument("--source", action="append", help="only these sources (repeatable; default: all)")
    t.add_argument("--checkpoint-interval-ms", type=int, default=0, help="0: checkpoints off")
    f = sub.add_parser("freshness")
    f.add_argument("--rate", type=float, default=5000)
    f.add_argument("--seconds", type=float, default=60)
    f.add_argument("--checkpoint-interval-ms", type=int, default=10_000)
    f.add_argument("--warmup-s", type=float, default=30, help="load before the measured probes (JIT warm-up)")
    for p in (t, f):
        p.add_argument("--keep", action="store_true", help="keep the run's keyspace and topics")
        p.add_argument("--users", type=int, default=10_000, help="the generator's user population")
        p.add_argument(
            "--no-sql-tiles",
            dest="sql_tiles",
            action="store_false",
            help="every view on the Python keyed path (the job's --no-sql-tiles)",
        )
        p.add_argument(
            "--no-jvm-route",
            dest="jvm_route",
            action="store_false",
            help="route every record in Python (the job's --no-jvm-route)",
        )
        p.add_argument("--catch-up-flush-ms", type=int, default=1000, help="the job's --catch-up-flush-ms")
        p.add_argument("--state-backend", choices=("hashmap", "rocksdb"), default="hashmap")
        p.add_argument(
            "--tile-merge",
            choices=("operator", "sql"),
            default="operator",
            help="the job's --tile-merge (the keyed merger or Flink SQL)",
        )
        p.add_argument(
            "--write-batching",
            choices=("replica-set", "partition"),
            default="replica-set",
            help="the job's --write-batching (which tiles share a write batch)",
        )
        p.add_argument("--write-batch-bytes", type=int, default=16_384, help="the job's --write-batch-bytes")
        p.add_argument(
            "--flush-interval-ms",
            type=int,
            default=250,
            help="the job's --flush-interval-ms (also the SQL mini-batch latency)",
        )
    args = parser.parse_args()
    result = throughput(args) if args.what == "throughput" else freshness(args)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{result['benchmark']}-{int(time.time())}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
