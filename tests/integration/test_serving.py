"""The gRPC server against the real stack: tiles written directly and by the real job, failures, reload."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from feature_store.adapters.cql_online_store import CqlOnlineStore
from feature_store.adapters.cql_registry_store import CqlRegistryStore
from feature_store.core.keys import entity_key_bytes
from feature_store.core.model import FeatureRef, FeatureService
from feature_store.definitions.apply import apply_registry
from feature_store.serving.client import FeatureClient, FeatureServingError
from feature_store.serving.server import SERVICE_NAME
from feature_store.serving.store import CqlTileReader, InMemoryTileReader
from feature_store.serving.testing import (
    ManualClock,
    ServerThread,
    random_events,
    test_settings,
    tiles_from_events,
)
from tests.integration.conftest import Stack
from tests.integration.feature_job_support import Isolated, isolated_registry, produce, run_bounded
from tests.unit.serving.support import expected

pytestmark = pytest.mark.integration

HOUR = 3_600_000
USERS = [f"u{i}" for i in range(6)]  # u5 never appears in events
NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def iso(stack: Stack) -> Isolated:
    return isolated_registry(f"srv{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)


@pytest.fixture(scope="module")
def events(iso: Isolated) -> dict[str, list[dict[str, Any]]]:
    """Events of every source except `like` (the job test's), written as tiles straight through the core."""
    registry = iso.registry
    out = {
        s.name: random_events(s, 60, USERS[:-1], NOW - 5_000, 2 * 24 * HOUR, seed=i)
        for i, s in enumerate(registry.sources)
        if s.name != "like"
    }
    insert: dict[str, Any] = {}
    for view in registry.views:
        if view.source not in out:
            continue
        stmt = insert.setdefault(
            view.table,
            iso.session.prepare(
                f"INSERT INTO {iso.cql.keyspace}.{view.table}"
                " (entity_key, feature_view, granularity_ms, tile_start_ms, payload) VALUES (?, ?, ?, ?, ?)"
            ),
        )
        for key, tiles in tiles_from_events(registry, view.name, out[view.source]).items():
            for (g, start), payload in tiles.items():
                iso.session.execute(stmt, (key, view.name, g, start, payload))
    return out


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture(scope="module")
def server(
    iso: Isolated, events: dict[str, list[dict[str, Any]]], clock: ManualClock
) -> Iterator[ServerThread]:
    settings = test_settings(registry_store=iso.store_url, online_store=iso.store_url)
    with ServerThread(settings, clock=clock) as st:
        st.wait_serving()
        yield st


NON_LIKE_SERVICES = ["abuse_v1", "pair_v1"]
RANKING_NO_LIKES = [
    "user_match_requests:match_requests_sent_1h",
    "user_match_answers:matches_accepted_24h",
    "user_match_outcomes:requests_accepted_by_others_7d",
    "user_calls:call_duration_avg_7d",
    "user_calls:recent_partners",
    "user_calls:distinct_partners_7d",
    "user_chat:chat_messages_24h",
    "user_purchases:purchase_amount_cents_30d",
    "user_reports_received:last_report_reason",
]


def check_equal_to_core(
    iso: Isolated,
    events: dict[str, list[dict[str, Any]]],
    result: Any,
    entities: list[dict[str, Any]],
    t_ms: int,
) -> None:
    for row, entity in enumerate(entities):
        want = expected(iso.registry, events, result.feature_names, entity, t_ms)
        assert result.statuses[row] == [w[1].name for w in want], entity
        assert result.values[row] == [w[0] for w in want], entity
        assert result.event_timestamps_ms[row] == [w[2] for w in want], entity


def test_directly_written_tiles_are_served_as_the_core_computes(
    iso: Isolated, events: dict[str, list[dict[str, Any]]], server: ServerThread, clock: ManualClock
) -> None:
    with FeatureClient(server.target, timeout_s=5) as client:
        users = {"user_id": USERS}
        result = client.get_online_features(features=RANKING_NO_LIKES, entities=users)
        check_equal_to_core(iso, events, result, [{"user_id": u} for u in USERS], NOW)
        assert "PRESENT" in result.statuses[0]
        assert set(result.statuses[-1]) == {"NOT_FOUND"}

        abuse = [r for r in iso.registry.service("abuse_v1").features if r.view != "user_match_requests"]
        result = client.get_online_features(features=[str(r) for r in abuse], entities=users)
        check_equal_to_core(iso, events, result, [{"user_id": u} for u in USERS], NOW)

        calls = events["video_call_end"][:4]
        pairs = [{"user_id": e["user_id"], "peer_id": e["partner_id"]} for e in calls]
        result = client.get_online_features(
            "pair_v1", entities={k: [p[k] for p in pairs] for k in ("user_id", "peer_id")}
        )
        check_equal_to_core(iso, events, result, pairs, NOW)
        assert set(result.statuses[0]) == {"PRESENT"}


def test_ttl_outside_max_age_with_an_injected_clock(
    iso: Isolated, events: dict[str, list[dict[str, Any]]], server: ServerThread, clock: ManualClock
) -> None:
    chat_ttl = iso.registry.view("user_chat").ttl_ms
    assert chat_ttl is not None
    refs = ["user_chat:chat_messages_24h", "user_calls:calls_lifetime"]
    try:
        clock.now = NOW + chat_ttl + 1
        with FeatureClient(server.target, timeout_s=5) as client:
            result = client.get_online_features(features=refs, entities={"user_id": ["u1"]})
    finally:
        clock.now = NOW
    assert result.statuses == [["OUTSIDE_MAX_AGE", "PRESENT"]]
    check_equal_to_core(iso, events, result, [{"user_id": "u1"}], NOW + chat_ttl + 1)


def test_the_in_memory_fake_serves_exactly_what_the_cql_reader_serves(
    iso: Isolated, events: dict[str, list[dict[str, Any]]], server: ServerThread, clock: ManualClock
) -> None:
    store = CqlOnlineStore(iso.session, iso.cql.keyspace)
    fake = InMemoryTileReader()
    for view in iso.registry.views:
        keys = [entity_key_bytes([u]) for u in USERS]
        if view.name == "pair_calls":
            keys = [entity_key_bytes([a, b]) for a in USERS for b in USERS]
        for key in keys:
            for tile_key, payload in store.read_tiles(view, key):
                fake.put(view, key, tile_key, payload)
    requests: list[tuple[str, dict[str, list[str]]]] = [
        ("ranking_v1", {"user_id": USERS}),
        ("abuse_v1", {"user_id": USERS}),
        ("pair_v1", {"user_id": USERS[:3] * 2, "peer_id": USERS[3:] + USERS[:3]}),
    ]
    settings = test_settings(registry_store=iso.store_url)
    with (
        ServerThread(settings, reader=fake, clock=clock) as fake_server,
        FeatureClient(fake_server.target) as a,
    ):
        fake_server.wait_serving()
        with FeatureClient(server.target) as b:
            for service, entities in requests:
                from_fake = a.get_online_features(service, entities=entities)
                from_cql = b.get_online_features(service, entities=entities)
                assert from_fake == from_cql, service
    assert fake.reads > 0


def test_a_lookup_reads_one_partition_per_entity_whatever_the_views(
    iso: Isolated, events: dict[str, list[dict[str, Any]]], clock: ManualClock
) -> None:
    reader = CqlTileReader(iso.cql)
    service = iso.registry.service("ranking_v1")
    views = {ref.view for ref in service.features}
    assert len(views) > 1
    assert {iso.registry.view(v).entity for v in views} == {"user"}
    settings = test_settings(registry_store=iso.store_url)
    with ServerThread(settings, reader=reader, clock=clock) as st, FeatureClient(st.target) as client:
        st.wait_serving()
        before = reader.partition_reads
        result = client.get_online_features("ranking_v1", entities={"user_id": USERS})
        assert reader.partition_reads - before == len(USERS)  # not len(USERS) * len(views)
    check_equal_to_core(iso, {**events, "like": []}, result, [{"user_id": u} for u in USERS], NOW)


def test_health_and_reflection(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert SERVICE_NAME in {s.name for a in answers for s in a.list_services_response.service}


def test_tiles_written_by_the_real_job_are_served_as_the_core_computes(iso: Isolated) -> None:
    source = iso.source("like")
    now = int(time.time() * 1000)
    likes = [
        {
            "event_id": f"like-{i}",
            "event_time": now - 3000_000 + i * 12_000,  # 50 minutes: within every tile's retention
            "user_id": USERS[i % 3],
            "target_id": USERS[i % 5],
            "super_like": i % 4 == 0,
        }
        for i in range(250)
    ]
    produce(iso.bootstrap, source, likes, key_field="user_id")
    run_bounded(iso, "like")

    clock = ManualClock(int(time.time() * 1000))
    settings = test_settings(registry_store=iso.store_url, online_store=iso.store_url)
    with ServerThread(settings, clock=clock) as st, FeatureClient(st.target, timeout_s=5) as client:
        st.wait_serving()
        result = client.get_online_features(features=["user_likes_received:*"], entities={"user_id": USERS})
    check_equal_to_core(iso, {"like": likes}, result, [{"user_id": u} for u in USERS], clock.now)
    assert result.statuses[0] == ["PRESENT"] * 3
    assert result.values[0][1] == sum(1 for e in likes if e["target_id"] == "u0")


# --- an unreachable store, and its recovery -----------------------------------------------------


class _Proxy(socketserver.ThreadingTCPServer):
    """A TCP forwarder standing in for a store node that comes back."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", port), _Pipe)


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Proxy = self.server  # type: ignore[assignment]
        with socket.create_connection(server.upstream) as up:
            down = self.request

            def pump(src: socket.socket, dst: socket.socket) -> None:
                try:
                    while data := src.recv(65536):
                        dst.sendall(data)
                except OSError:
                    pass
                finally:
                    for s in (src, dst):
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)

            t = threading.Thread(target=pump, args=(up, down), daemon=True)
            t.start()
            pump(down, up)
            t.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_unreachable_store_is_unavailable_within_the_deadline_then_recovers_without_restart(
    iso: Isolated, events: dict[str, list[dict[str, Any]]], stack: Stack
) -> None:
    port = _closed_port()
    settings = test_settings(
        registry_store=iso.store_url,
        online_store=f"cql://127.0.0.1:{port}/{iso.cql.keyspace}",
        store_connect_retry_s=0.3,
        deadline_ms=300,
    )
    with (
        ServerThread(settings, clock=ManualClock(NOW)) as st,
        FeatureClient(st.target, timeout_s=2) as client,
    ):
        with grpc.insecure_channel(st.target) as channel:
            status = (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            )
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        began = time.monotonic()
        with pytest.raises(FeatureServingError) as info:
            client.get_online_features("ranking_v1", entities={"user_id": ["u1"]}, timeout_s=0.5)
        assert info.value.code is grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - began < 0.5

        proxy = _Proxy(port, ("127.0.0.1", stack.cassandra_port))
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            st.wait_serving(timeout_s=60)
            result = client.get_online_features(features=RANKING_NO_LIKES, entities={"user_id": ["u1"]})
            check_equal_to_core(iso, events, result, [{"user_id": "u1"}], NOW)
        finally:
            proxy.shutdown()
            proxy.server_close()


def test_hot_reload_picks_up_a_newly_applied_version(stack: Stack) -> None:
    other = isolated_registry(f"rld{uuid.uuid4().hex[:10]}", stack.kafka_bootstrap, stack.cassandra_port)
    settings = test_settings(
        registry_store=other.store_url, online_store=other.store_url, reload_interval_s=0.2
    )
    with ServerThread(settings) as st, FeatureClient(st.target, timeout_s=5) as client:
        st.wait_serving()
        first = client.list_feature_services()
        extra = FeatureService("calls_only", (FeatureRef("user_calls", "calls_lifetime"),))
        registry = dataclasses.replace(
            other.registry, services=(*other.registry.services, extra), version=None
        )
        store = CqlRegistryStore(other.session, other.cql, "default")
        applied = apply_registry(store, registry, applied_by="tests", message="add calls_only")
        assert applied.snapshot is not None
        deadline = time.monotonic() + 20
        while "calls_only" not in {s.name for s in client.list_feature_services()}:
            assert time.monotonic() < deadline, "the new registry version was not picked up"
            time.sleep(0.1)
        result = client.get_online_features("calls_only", entities={"user_id": ["u1"]})
        assert result.registry_version == applied.snapshot.version
        assert result.statuses == [["NOT_FOUND"]]
    assert "calls_only" not in {s.name for s in first}


def _workers(pid: int) -> list[int]:
    """The supervisor's worker processes (its other child is multiprocessing's resource tracker)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    found = []
    for child in text.split():
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _reaped(pid: int) -> bool:
    """Reaped by its parent: every thread has exited, so every socket it held is closed (a
    zombie leader alone is not enough: its other threads may still hold the fd table)."""
    return not Path(f"/proc/{pid}").exists()


def _metric_total(metrics: str, name: str, worker: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name and s.labels.get("worker") == worker
    )


def test_several_worker_processes_share_one_port_and_are_restarted(
    iso: Isolated, events: dict[str, list[dict[str, Any]]]
) -> None:
    port, metrics_port = _closed_port(), _closed_port()
    env = {**os.environ, "FSTORE_SERVE_LOG_LEVEL": "WARNING", "FSTORE_SERVE_SHUTDOWN_GRACE_S": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "feature_store.cli.main", "serve", "--workers", "2"]
        + ["--listen", f"127.0.0.1:{port}", "--metrics-port", str(metrics_port)]
        + ["--store", iso.store_url, "--reload-interval", "0"],
        env=env,
    )
    target = f"127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def lookups(channels: int) -> None:
        # one HTTP/2 connection per channel (no shared subchannel pool): the kernel spreads them
        options = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(channels):
            with FeatureClient(target, timeout_s=5, options=options) as client:
                before = int(time.time() * 1000)
                result = client.get_online_features(features=RANKING_NO_LIKES, entities={"user_id": USERS})
                after = int(time.time() * 1000)
                try:
                    check_equal_to_core(iso, events, result, [{"user_id": u} for u in USERS], before)
                except AssertionError:  # a tile boundary passed during the call
                    check_equal_to_core(iso, events, result, [{"user_id": u} for u in USERS], after)

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with grpc.insecure_channel(target) as channel:
                    status = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert proc.poll() is None, "the supervisor exited"
            assert time.monotonic() < deadline, "workers never served"
            time.sleep(0.3)
        workers = _workers(proc.pid)
        assert len(workers) == 2

        lookups(24)
        with urllib.request.urlopen(metrics_url, timeout=5) as answer:
            metrics = answer.read().decode()
        count = "fstore_serving_request_duration_seconds_count"
        served = {w: _metric_total(metrics, count, w) for w in ("0", "1")}
        assert sum(served.values()) >= 24
        assert all(n > 0 for n in served.values()), served  # 2^-23 odds of a false failure

        # a worker killed hard is started again; the other one serves meanwhile
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        # once it is reaped its listening socket has left the port's group (a connection the
        # kernel queued on it in the instant before it closed is reset, a limit of SO_REUSEPORT)
        deadline = time.monotonic() + 30
        while not _reaped(victim):
            assert time.monotonic() < deadline, "the killed worker did not die"
            time.sleep(0.05)
        lookups(4)
        deadline = time.monotonic() + 60
        while len(set(_workers(proc.pid)) - {victim}) < 2:
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.3)
        lookups(4)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    assert not Path(f"/proc/{workers[1]}").exists()  # stopped and reaped with the supervisor
