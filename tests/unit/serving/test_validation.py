"""Requests the server refuses: INVALID_ARGUMENT with a message naming the problem, or NOT_FOUND."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from feature_store.serving.client import FeatureClient, FeatureServingError
from feature_store.serving.server import SERVICE_NAME
from feature_store.serving.testing import ServerThread
from feature_store.serving.v1 import serving_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def raw_call(served: ServerThread) -> Iterator[grpc.UnaryUnaryMultiCallable[bytes, bytes]]:
    """GetOnlineFeatures with raw bytes in and out, to send what a typed stub cannot."""
    with grpc.insecure_channel(served.target) as channel:
        yield channel.unary_unary(
            f"/{SERVICE_NAME}/GetOnlineFeatures",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )


def call(client: FeatureClient, request: pb.GetOnlineFeaturesRequest) -> FeatureServingError:
    with pytest.raises(FeatureServingError) as info:
        client.get_online_features_raw(request)
    return info.value


def request(service: str | None = "ranking_v1", **entities: list[pb.Value]) -> pb.GetOnlineFeaturesRequest:
    req = pb.GetOnlineFeaturesRequest()
    if service is not None:
        req.feature_service = service
    for key, values in entities.items():
        req.entities[key].values.extend(values)
    return req


def s(text: str) -> pb.Value:
    return pb.Value(string_val=text)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request(None, user_id=[s("u1")]), "set exactly one of feature_service and features"),
        (request(user_id=[]), "empty batch"),
        (request(), "missing entity column 'user_id'"),
        (request(userid=[s("u1")]), "missing entity column 'user_id'"),
        (
            request(user_id=[s("u1"), s("u2")], other=[s("x")]),
            "equal lengths: 'user_id' has 2 values, 'other' has 1",
        ),
        (
            request(user_id=[s("u1"), pb.Value(int64_val=3)]),
            "entity column 'user_id' row 1: expected string_val",
        ),
        (
            request(user_id=[pb.Value()]),
            "row 0: expected string_val (join key type string), got an empty Value",
        ),
        (request(user_id=[s("a\x1fb")]), "U+001F"),
        (
            request(user_id=[s(f"u{i}") for i in range(51)]),
            "batch of 51 entity rows exceeds the maximum of 50",
        ),
        (request("pair_v1", user_id=[s("u1")]), "missing entity column 'peer_id'"),
        (request(""), "feature_service is empty"),
    ],
    ids=[
        "neither",
        "empty-batch",
        "no-entities",
        "wrong-key-name",
        "unequal",
        "wrong-type",
        "empty-value",
        "separator",
        "too-big",
        "pair-needs-peer",
        "empty-service",
    ],
)
def test_invalid_requests(client: FeatureClient, req: pb.GetOnlineFeaturesRequest, message: str) -> None:
    error = call(client, req)
    assert error.code is INVALID
    assert message in error.details


@pytest.mark.parametrize(
    ("refs", "code", "message"),
    [
        ([], INVALID, "features.refs is empty"),
        (["user_calls"], INVALID, "is not of the form 'view:feature'"),
        ([":x"], INVALID, "is not of the form"),
        (["user_calls:calls_lifetime", "user_calls:calls_lifetime"], INVALID, "requested twice"),
        (["nope:x"], NOT_FOUND, "unknown feature view 'nope'"),
        (["user_calls:nope"], NOT_FOUND, "feature view 'user_calls' has no feature 'nope'"),
    ],
)
def test_bad_feature_refs(
    client: FeatureClient, refs: list[str], code: grpc.StatusCode, message: str
) -> None:
    req = request(None, user_id=[s("u1")])
    req.features.refs.extend(refs)
    req.features.SetInParent()
    error = call(client, req)
    assert error.code is code
    assert message in error.details


def test_unknown_service_and_version_are_not_found(client: FeatureClient) -> None:
    error = call(client, request("nope_v9", user_id=[s("u1")]))
    assert (error.code, error.details) == (NOT_FOUND, "unknown feature service 'nope_v9'")
    pinned = request(user_id=[s("u1")])
    pinned.registry_version = 99
    error = call(client, pinned)
    assert (error.code, error.details) == (NOT_FOUND, "registry version 99 does not exist")
    pinned.registry_version = -1
    assert call(client, pinned).code is INVALID


def test_both_feature_service_and_features_on_the_wire(
    raw_call: grpc.UnaryUnaryMultiCallable[bytes, bytes],
) -> None:
    service = request(user_id=[s("u1")]).SerializeToString()
    features = pb.GetOnlineFeaturesRequest(features=pb.FeatureList(refs=["user_calls:calls_lifetime"]))
    with pytest.raises(grpc.RpcError) as info:
        raw_call(service + features.SerializeToString(), timeout=5)
    assert info.value.code() is INVALID
    assert "not both" in (info.value.details() or "")


def test_bytes_that_are_not_a_request(raw_call: grpc.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_call(b"\xff\xff\xff", timeout=5)
    assert info.value.code() is INVALID
    assert "not a valid GetOnlineFeaturesRequest" in (info.value.details() or "")


def test_schema_and_service_listing(client: FeatureClient) -> None:
    services = {s.name: s for s in client.list_feature_services()}
    assert set(services) == {"ranking_v1", "pair_v1", "abuse_v1"}
    assert services["ranking_v1"].feature_count == 18
    schema = client.get_feature_service_schema("pair_v1")
    assert [(k.entity, k.join_key, k.type) for k in schema.entity_keys] == [
        ("user_pair", "user_id", pb.VALUE_TYPE_STRING),
        ("user_pair", "peer_id", pb.VALUE_TYPE_STRING),
    ]
    by_ref = {f.ref: f for f in schema.features}
    assert by_ref["pair_calls:pair_call_seconds_30d"].window == "30d"
    assert by_ref["pair_calls:pair_call_seconds_30d"].aggregation == "sum"
    assert by_ref["pair_calls:pair_calls_lifetime"].window == "lifetime"
    assert by_ref["pair_calls:pair_calls_lifetime"].ttl_ms == 90 * 24 * 3_600_000
    with pytest.raises(FeatureServingError) as info:
        client.get_feature_service_schema("nope")
    assert info.value.code is NOT_FOUND
    with pytest.raises(FeatureServingError) as info:
        client.get_feature_service_schema("")
    assert info.value.code is INVALID
