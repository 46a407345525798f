"""Floors for the serving benchmark: what the store and gRPC cost with no feature-store work.

- ``driver``: a bare cassandra-driver loop issuing the server's reads (one single-partition
  SELECT per (entity, view)) for a 1x20-shaped and a 100x50-shaped look-up, concurrently per
  look-up, as the server does; latency per look-up.
- ``driver-rate``: the same reads issued open-loop at a fixed rate of look-ups per second (each
  look-up timed from when it was due, so a stalled store shows up in the tail rather than
  slowing the load down): the store's own p99 at the rates the server is asked to meet.
- ``grpc``: an empty grpc.aio GetOnlineFeatures handler (answers an empty response at once),
  driven by ghz with the same requests and rate as the real server.

    .venv/bin/python -m benchmarks.serving.floor driver --keyspace bench_serving
    .venv/bin/python -m benchmarks.serving.floor driver-rate --keyspace bench_serving --rps 1000
    .venv/bin/python -m benchmarks.serving.floor empty-server --port 50099   # used by bench_serving
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from benchmarks.serving.common import ENTITY_PREFIX, SCENARIOS, Scenario, percentiles

SERVICE = "feature_store.serving.v1.FeatureServing"


@contextmanager
def _store_reads(keyspace: str, port: int) -> Iterator[tuple[Any, Any]]:
    """A session on the bench keyspace and the server's read: one partition, several views."""
    from cassandra.query import tuple_factory  # noqa: PLC0415

    from feature_store.adapters.cql import CqlConfig, make_cluster  # noqa: PLC0415

    cluster = make_cluster(CqlConfig(port=port, keyspace=keyspace))
    cluster.profile_manager.default.row_factory = tuple_factory
    session = cluster.connect()
    try:
        yield (
            session,
            session.prepare(
                f"SELECT feature_view, granularity_ms, tile_start_ms, payload FROM {keyspace}.fe_user"
                " WHERE entity_key = ? AND feature_view IN ?"
            ),
        )
    finally:
        cluster.shutdown()


def driver_floor(
    keyspace: str, views: list[str], scenario: Scenario, entities: int, lookups: int, port: int = 9042
) -> dict[str, Any]:
    """Look-ups of ``scenario.batch`` entities x ``views`` (all of the ``user`` entity): the server's
    reads, i.e. one partition read per entity for all its views, all in flight at once."""
    with _store_reads(keyspace, port) as (session, select):
        names = sorted(views)
        rng = random.Random(3)
        samples: list[float] = []
        keys: list[bytes] = []
        for _ in range(lookups):
            keys = [f"{ENTITY_PREFIX}{rng.randrange(entities)}".encode() for _ in range(scenario.batch)]
            samples.append(_lookup(session, select, names, keys))
        return {"scenario": scenario.name, "views": len(views), "reads_per_lookup": len(keys),
                **percentiles(samples)}  # fmt: skip


def driver_floor_at_rate(
    keyspace: str,
    views: list[str],
    scenario: Scenario,
    entities: int,
    rps: float,
    duration_s: float,
    port: int = 9042,
    concurrency: int = 16,
) -> dict[str, Any]:
    """The server's reads for ``scenario`` at ``rps`` look-ups per second, open loop.

    At most ``concurrency`` look-ups are outstanding (as ghz's workers); a look-up's latency runs
    from the moment it was due to its last answer, so time spent waiting for a free slot counts
    (no coordinated omission). Answers are taken on the driver's event loop thread, as the
    server would."""
    with _store_reads(keyspace, port) as (session, select):
        names = sorted(views)
        rng = random.Random(5)
        lock = threading.Lock()
        slots = threading.BoundedSemaphore(concurrency)
        samples: list[float] = []
        last_answer = [0.0]

        def answered(due: float) -> None:
            now = time.perf_counter()
            with lock:
                samples.append((now - due) * 1000)
                last_answer[0] = now
            slots.release()

        # warm the connections and the statement before the clock starts
        _lookup(session, select, names, [f"{ENTITY_PREFIX}0".encode()] * scenario.batch)
        total = max(1, int(rps * duration_s))
        began = time.perf_counter()
        for i in range(total):
            due = began + i / rps
            keys = [f"{ENTITY_PREFIX}{rng.randrange(entities)}".encode() for _ in range(scenario.batch)]
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            slots.acquire()
            _read_all(session, select, names, keys, functools.partial(answered, due))
        for _ in range(concurrency):  # every look-up answered
            slots.acquire(timeout=30)
        elapsed = max(last_answer[0], began + total / rps) - began
        return {
            "scenario": scenario.name,
            "rps_target": rps,
            "rps_achieved": round(len(samples) / elapsed, 1),
            "reads_per_lookup": scenario.batch,
            "views": len(views),
            "concurrency": concurrency,
            **percentiles(samples),
        }


def _read_all(
    session: Any, select: Any, names: list[str], keys: list[bytes], done: Callable[[], None]
) -> None:
    """Every key's read in flight at once; ``done`` once the last one is answered (or failed)."""
    pending = [len(keys)]
    lock = threading.Lock()

    def finished(_result: Any) -> None:
        with lock:
            pending[0] -= 1
            last = pending[0] == 0
        if last:
            done()

    for key in keys:
        session.execute_async(select, (key, names)).add_callbacks(finished, finished)


def _lookup(session: Any, select: Any, names: list[str], keys: list[bytes]) -> float:
    """Every key's read in flight at once; ms until the last answer."""
    answered = threading.Event()
    began = time.perf_counter()
    _read_all(session, select, names, keys, answered.set)
    answered.wait(10)
    return (time.perf_counter() - began) * 1000


async def empty_server(port: int) -> None:
    """GetOnlineFeatures answering an empty response, nothing else (the gRPC floor)."""

    async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
                        handler, request_deserializer=None, response_serializer=None
                    )
                },
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"empty server on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("driver")
    d.add_argument("--keyspace", default="bench_serving")
    d.add_argument("--entities", type=int, default=1000)
    d.add_argument("--lookups", type=int, default=200)
    r = sub.add_parser("driver-rate")
    r.add_argument("--keyspace", default="bench_serving")
    r.add_argument("--entities", type=int, default=1000)
    r.add_argument("--scenario", choices=sorted(SCENARIOS), default="1x20")
    r.add_argument("--views", default="user_calls,user_chat,user_match_requests")
    r.add_argument("--rps", type=float, required=True)
    r.add_argument("--duration", type=float, default=10.0)
    e = sub.add_parser("empty-server")
    e.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.what == "empty-server":
        asyncio.run(empty_server(args.port))
        return
    if args.what == "driver-rate":
        print(
            driver_floor_at_rate(
                args.keyspace,
                args.views.split(","),
                SCENARIOS[args.scenario],
                args.entities,
                args.rps,
                args.duration,
            )
        )
        return
    views = ["user_calls", "user_chat", "user_match_requests"]
    for scenario in SCENARIOS.values():
        print(driver_floor(args.keyspace, views, scenario, args.entities, args.lookups))


if __name__ == "__main__":
    main()
