"""Served values and statuses equal the core's recomputation; value mapping per ValueType."""

from __future__ import annotations

import math
from typing import Any

import pytest

from feature_store.adapters.file_registry_store import FileRegistryStore
from feature_store.core.lookup import FieldStatus
from feature_store.core.model import Registry, ValueType
from feature_store.serving.client import FeatureClient
from feature_store.serving.testing import ManualClock, ServerThread, test_settings
from feature_store.serving.v1 import serving_pb2 as pb
from feature_store.serving.values import from_value, key_text, set_value, status_name, to_value
from tests.unit.serving.conftest import make_reader
from tests.unit.serving.support import DAY, NOW, USERS, expected


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@pytest.mark.parametrize("service", ["ranking_v1", "abuse_v1"])
def test_service_values_equal_core_recomputation(
    client: FeatureClient,
    applied: tuple[FileRegistryStore, Registry],
    events: dict[str, list[dict[str, Any]]],
    service: str,
) -> None:
    registry = applied[1]
    users = [*USERS, "u0"]  # u7 has no events; u0 twice
    result = client.get_online_features(service, entities={"user_id": users})

    refs = [str(r) for r in registry.service(service).features]
    assert result.feature_names == refs
    assert result.registry_version == registry.version
    assert len(result) == len(users)
    for row, user in enumerate(users):
        want = expected(registry, events, refs, {"user_id": user}, NOW)
        got = list(
            zip(result.values[row], result.statuses[row], result.event_timestamps_ms[row], strict=True)
        )
        for ref, (value, status, ts), (w_value, w_status, w_ts) in zip(refs, got, want, strict=True):
            assert status == w_status.name, (user, ref)
            assert _same(value, w_value), (user, ref, value, w_value)
            assert ts == w_ts, (user, ref)
    assert set(result.statuses[USERS.index("u7")]) == {"NOT_FOUND"}
    assert result.rows()[0]["user_id"] == "u0"


def test_pair_entity_uses_both_join_keys(
    client: FeatureClient,
    applied: tuple[FileRegistryStore, Registry],
    events: dict[str, list[dict[str, Any]]],
) -> None:
    registry = applied[1]
    calls = events["video_call_end"]
    pairs = [(e["user_id"], e["partner_id"]) for e in calls[:5]] + [("u1", "nobody")]
    result = client.get_online_features(
        "pair_v1", entities={"user_id": [p[0] for p in pairs], "peer_id": [p[1] for p in pairs]}
    )
    refs = result.feature_names
    for row, (user, peer) in enumerate(pairs):
        want = expected(registry, events, refs, {"user_id": user, "peer_id": peer}, NOW)
        assert result.values[row] == [w[0] for w in want]
        assert result.statuses[row] == [w[1].name for w in want]
    assert set(result.statuses[-1]) == {"NOT_FOUND"}


def test_ttl_is_enforced_at_read_time_with_the_injected_clock(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    store, registry = applied
    chat_ttl = registry.view("user_chat").ttl_ms
    assert chat_ttl is not None
    newest = max(e["event_time"] for e in events["chat_message"] if e["user_id"] == "u1")
    clock = ManualClock(newest + chat_ttl)
    refs = ["user_chat:chat_messages_24h", "user_calls:calls_lifetime"]
    with (
        ServerThread(
            test_settings(), registry_store=store, reader=make_reader(registry, events), clock=clock
        ) as st,
        FeatureClient(st.target) as client,
    ):
        fresh = client.get_online_features(features=refs, entities={"user_id": ["u1"]})
        clock.now += 1
        stale = client.get_online_features(features=refs, entities={"user_id": ["u1"]})
    assert fresh.statuses[0][0] == "PRESENT"
    assert fresh.values[0][0] == 0  # a quiet 24h, still within the TTL: a PRESENT 0
    assert stale.statuses[0] == ["OUTSIDE_MAX_AGE", "PRESENT"]  # user_calls has a 30d TTL
    assert stale.values[0][0] is None
    assert stale.event_timestamps_ms[0][0] == 0
    assert expected(registry, events, refs, {"user_id": "u1"}, clock.now)[0][1] is FieldStatus.OUTSIDE_MAX_AGE


def test_avg_of_an_empty_window_is_null_value(
    applied: tuple[FileRegistryStore, Registry], events: dict[str, list[dict[str, Any]]]
) -> None:
    store, registry = applied
    clock = ManualClock(NOW + 8 * DAY)  # the 7d windows are empty, the 30d TTL not reached
    with (
        ServerThread(
            test_settings(), registry_store=store, reader=make_reader(registry, events), clock=clock
        ) as st,
        FeatureClient(st.target) as client,
    ):
        result = client.get_online_features(
            features=["user_calls:call_duration_avg_7d", "user_calls:call_seconds_24h"],
            entities={"user_id": ["u2"]},
        )
    assert result.statuses[0] == ["NULL_VALUE", "PRESENT"]
    assert result.values[0] == [None, 0]


def test_feature_refs_in_any_order_and_wildcards(client: FeatureClient) -> None:
    result = client.get_online_features(
        features=["user_calls:recent_partners", "user_chat:*", "user_calls:call_duration_avg_7d"],
        entities={"user_id": ["u3"]},
    )
    assert result.feature_names == [
        "user_calls:recent_partners",
        "user_chat:chat_messages_1h",
        "user_chat:chat_messages_24h",
        "user_chat:media_messages_24h",
        "user_calls:call_duration_avg_7d",
    ]
    partners, avg = result.values[0][0], result.values[0][4]
    assert isinstance(partners, list)
    assert all(isinstance(p, str) for p in partners)
    assert isinstance(avg, float)


ALL_TYPES: list[tuple[ValueType, Any]] = [
    (ValueType.BOOL, True),
    (ValueType.INT64, -(1 << 63)),
    (ValueType.FLOAT64, -0.0),
    (ValueType.FLOAT64, float("inf")),
    (ValueType.STRING, "héllo"),
    (ValueType.BYTES, b"\x00\xff"),
    (ValueType.INT64_LIST, [1, -2, 1 << 62]),
    (ValueType.FLOAT64_LIST, [0.5, float("-inf")]),
    (ValueType.STRING_LIST, ["a", ""]),
    (ValueType.BOOL_LIST, [True, False]),
    (ValueType.BYTES_LIST, [b"x", b""]),
    (ValueType.STRING_LIST, []),
]


@pytest.mark.parametrize(("value_type", "value"), ALL_TYPES)
def test_each_value_type_maps_to_its_oneof_field_and_back(value_type: ValueType, value: Any) -> None:
    msg = pb.Value()
    set_value(msg, value_type, value)
    wire = pb.Value.FromString(msg.SerializeToString())
    back = from_value(wire)
    assert back == value
    assert type(back) is type(value)
    if value_type.value.endswith("_list"):
        assert wire.WhichOneof("kind") is not None or value == []


def test_values_that_do_not_fit_raise() -> None:
    with pytest.raises(ValueError, match="out of range"):
        set_value(pb.Value(), ValueType.INT64, 1 << 64)
    with pytest.raises(TypeError):
        set_value(pb.Value(), ValueType.STRING, 5)


def test_entity_key_text_follows_core_keys() -> None:
    assert key_text(pb.Value(string_val="u1"), ValueType.STRING) == "u1"
    assert key_text(pb.Value(int64_val=-5), ValueType.INT64) == "-5"
    assert key_text(pb.Value(bytes_val=b"\x01"), ValueType.BYTES) == str(b"\x01")
    assert to_value(7).int64_val == 7
    assert to_value(True).bool_val is True
    assert to_value(b"k").bytes_val == b"k"
    assert status_name(4) == "OUTSIDE_MAX_AGE"
    assert status_name(0) == "UNSPECIFIED"
    with pytest.raises(TypeError):
        to_value(object())
