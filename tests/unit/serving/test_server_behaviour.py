"""Store failures and deadlines, health, reflection, hot reload, metrics and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.model import FeatureRef, FeatureService, Registry
from feature_store.definitions.apply import apply_registry
from feature_store.serving.client import FeatureClient, FeatureServingError
from feature_store.serving.server import SERVICE_NAME, FeatureServer
from feature_store.serving.store import InMemoryTileReader
from feature_store.serving.testing import ManualClock, ServerThread, test_settings
from tests.unit.serving.conftest import make_reader
from tests.unit.serving.support import NOW, applied_store, example_registry

USERS = {"user_id": ["u1", "u2"]}


def start(
    applied: tuple[FileRegistryStore, Registry],
    events: dict[str, list[dict[str, Any]]],
    reader: InMemoryTileReader | None = None,
    **settings: Any,
) -> ServerThread:
    store, registry = applied
    return ServerThread(
        test_settings(**settings),
        registry_store=store,
        reader=reader or make_reader(registry, events),
        clock=ManualClock(NOW),
    ).start()


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        return status


def test_store_down_is_unavailable_fast(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    st = start(applied, events)
    reader = st.server.reader
    assert isinstance(reader, InMemoryTileReader)
    try:
        with FeatureClient(st.target, timeout_s=2) as client:
            reader.down = True
            began = time.monotonic()
            with pytest.raises(FeatureServingError) as info:
                client.get_online_features("ranking_v1", entities=USERS)
            assert info.value.code is grpc.StatusCode.UNAVAILABLE
            assert "online store unavailable" in info.value.details
            assert time.monotonic() - began < 1.0
            reader.down = False  # the store is back: no restart needed
            assert client.get_online_features("ranking_v1", entities=USERS).statuses[0][0] == "PRESENT"
    finally:
        st.stop()


def test_one_failing_view_is_field_status_error_and_the_rest_is_served(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    st = start(applied, events)
    reader = st.server.reader
    assert isinstance(reader, InMemoryTileReader)
    reader.failing_views.add("user_calls")
    try:
        with FeatureClient(st.target) as client:
            result = client.get_online_features("ranking_v1", entities=USERS)
    finally:
        st.stop()
    for row in result.status_rows():
        for name, status in row.items():
            assert status == ("ERROR" if name.startswith("user_calls:") else "PRESENT"), name
    calls = result.feature_names.index("user_calls:calls_lifetime")
    assert result.values[0][calls] is None


def test_a_batch_wider_than_the_read_limit_waits_for_every_read(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    # 8 users x the service's views, with 2 partition reads in flight at most and slow reads:
    # the request must wait for permits and then for the reads issued after waiting
    reader = make_reader(applied[1], events)
    reader.delay_s = 0.01
    st = start(applied, events, reader=reader, max_concurrent_reads=2)
    users = {"user_id": [f"u{i}" for i in range(8)]}
    try:
        with FeatureClient(st.target) as client:
            slow = client.get_online_features("ranking_v1", entities=users)
    finally:
        st.stop()
    unlimited = start(applied, events)
    try:
        with FeatureClient(unlimited.target) as client:
            fast = client.get_online_features("ranking_v1", entities=users)
    finally:
        unlimited.stop()
    assert all(status != "ERROR" for row in slow.status_rows() for status in row.values())
    assert slow == fast


def test_a_hanging_view_is_served_as_error_at_the_server_deadline(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    st = start(applied, events, deadline_ms=150)
    reader = st.server.reader
    assert isinstance(reader, InMemoryTileReader)
    reader.hanging_views.add("user_chat")
    try:
        with FeatureClient(st.target, timeout_s=5) as client:
            began = time.monotonic()
            partial = client.get_online_features("ranking_v1", entities=USERS)
            took = time.monotonic() - began
    finally:
        st.stop()
    chat = partial.feature_names.index("user_chat:chat_messages_24h")
    assert partial.statuses[0][chat] == "ERROR"
    assert partial.statuses[0][0] == "PRESENT"
    assert 0.14 < took < 2.0


def test_a_hanging_store_is_unavailable_before_the_client_deadline(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    st = start(applied, events, deadline_ms=10_000, deadline_margin_ms=150)
    reader = st.server.reader
    assert isinstance(reader, InMemoryTileReader)
    try:
        with FeatureClient(st.target, timeout_s=5) as client:
            reader.hanging_views.update(v.name for v in applied[1].views)
            began = time.monotonic()
            with pytest.raises(FeatureServingError) as info:
                client.get_online_features("ranking_v1", entities=USERS, timeout_s=0.6)
            took = time.monotonic() - began
            reader.hanging_views.clear()  # the store answers again: served without a restart
            assert client.get_online_features("ranking_v1", entities=USERS).statuses[0][0] == "PRESENT"
    finally:
        st.stop()
    # the client's deadline (less the margin) bounds the wait, not the server's 10 s
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert "did not answer in time" in info.value.details
    assert 0.4 < took < 0.6


def test_health_reflection_and_metrics(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    st = start(applied, events, metrics_port=0)
    try:
        assert health_status(st.target) == health_pb2.HealthCheckResponse.SERVING
        assert health_status(st.target, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(st.target) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {s.name for a in answers for s in a.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        with grpc.insecure_channel(st.target) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            asks = [
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol=f"{SERVICE_NAME}.GetOnlineFeatures"
                ),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=f"{SERVICE_NAME}.Nope"),
            ]
            found, missing = list(stub.ServerReflectionInfo(iter(asks)))
        assert found.file_descriptor_response.file_descriptor_proto  # what ghz asks for
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]

        with FeatureClient(st.target) as client:
            client.get_online_features("ranking_v1", entities=USERS)
            with pytest.raises(FeatureServingError):
                client.get_online_features("nope", entities=USERS)
        url = f"http://127.0.0.1:{st.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            text = page.read().decode()
    finally:
        st.stop()
    assert (
        'fstore_serving_request_duration_seconds_bucket{feature_service="ranking_v1",le="0.0005",method="GetOnlineFeatures"}'
        in text
    )
    assert 'fstore_serving_errors_total{code="NOT_FOUND",method="GetOnlineFeatures"} 1.0' in text
    assert "fstore_serving_store_read_duration_seconds_count 1.0" in text
    assert 'fstore_serving_batch_size_bucket{le="2.0"} 1.0' in text
    assert 'fstore_serving_view_freshness_seconds{view="user_calls"}' in text
    assert "fstore_serving_registry_version 1.0" in text
    assert 'fstore_serving_cache_lookups_total{cache="read",result="miss"}' in text


def test_graceful_stop_reports_not_serving_first(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    st = start(applied, events, shutdown_delay_s=0.5)
    target = st.target
    stopper = threading.Thread(target=st.stop)
    stopper.start()
    time.sleep(0.2)  # within the shutdown delay: still accepting, but NOT_SERVING
    during = health_status(target)
    stopper.join(10)
    assert during == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not stopper.is_alive()


def test_no_registry_yet_is_not_serving_and_unavailable(tmp_path: Path) -> None:
    empty = FileRegistryStore(tmp_path / "empty")
    with ServerThread(test_settings(), registry_store=empty, reader=InMemoryTileReader()) as st:
        assert health_status(st.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with FeatureClient(st.target) as client, pytest.raises(FeatureServingError) as info:
            client.get_online_features("ranking_v1", entities=USERS)
        assert info.value.code is grpc.StatusCode.UNAVAILABLE
        assert "no registry" in info.value.details


def test_hot_reload_swaps_to_a_newly_applied_version_and_old_ones_stay_pinnable(tmp_path: Path) -> None:
    store, registry = applied_store(tmp_path / "store")
    reader = InMemoryTileReader()
    with (
        ServerThread(test_settings(reload_interval_s=0.1), registry_store=store, reader=reader) as st,
        FeatureClient(st.target) as client,
    ):
        assert {s.name for s in client.list_feature_services()} == {"ranking_v1", "pair_v1", "abuse_v1"}
        extra = FeatureService("calls_only", (FeatureRef("user_calls", "calls_lifetime"),))
        base = example_registry()
        apply_registry(store, dataclasses.replace(base, services=(*base.services, extra)), applied_by="t")
        deadline = time.monotonic() + 10
        while st.server.versions.current is None or st.server.versions.current.version < 2:
            assert time.monotonic() < deadline, "the new version was not picked up"
            time.sleep(0.05)
        result = client.get_online_features("calls_only", entities={"user_id": ["u1"]})
        assert result.registry_version == 2
        assert result.statuses == [["NOT_FOUND"]]
        old = client.get_online_features("ranking_v1", entities={"user_id": ["u1"]}, registry_version=1)
        assert old.registry_version == 1
        with pytest.raises(FeatureServingError) as info:
            client.get_online_features("calls_only", entities={"user_id": ["u1"]}, registry_version=1)
        assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert registry.version == 1


def test_pinned_server_version_never_reloads(tmp_path: Path) -> None:
    store, _ = applied_store(tmp_path / "store")
    base = example_registry()
    extra = FeatureService("calls_only", (FeatureRef("user_calls", "calls_lifetime"),))
    apply_registry(store, dataclasses.replace(base, services=(*base.services, extra)), applied_by="t")
    with (
        ServerThread(
            test_settings(registry_version=1, reload_interval_s=0.05),
            registry_store=store,
            reader=InMemoryTileReader(),
        ) as st,
        FeatureClient(st.target) as client,
    ):
        time.sleep(0.2)
        assert len(client.list_feature_services()) == 3
        assert st.server.versions.current is not None
        assert st.server.versions.current.version == 1


def test_a_process_on_a_shared_port_listens_only_once_it_can_answer(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    """With reuse_port (``fstore serve --workers N``) the kernel hands connections to every
    listening process, so one still connecting to the store must not listen yet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reader = make_reader(applied[1], events)
    reader.down = True
    st = ServerThread(test_settings(listen=f"127.0.0.1:{port}", reuse_port=True))

    async def make() -> FeatureServer:  # ServerThread.start would wait for it: start it by hand
        server = FeatureServer(st.settings, registry_store=applied[0], reader=reader, clock=ManualClock(NOW))
        await server.start()
        return server

    starting = asyncio.run_coroutine_threadsafe(make(), st.loop)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not starting.done()
    reader.down = False  # the store answers: it joins the port
    st.server = starting.result(10)
    try:
        with FeatureClient(st.target, timeout_s=5) as client:
            assert client.get_online_features("ranking_v1", entities=USERS).statuses[0][0] == "PRESENT"
    finally:
        st.stop()
