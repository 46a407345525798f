"""Random and malformed requests never make the server answer INTERNAL (or hang)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeAlias

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.serving.server import SERVICE_NAME
from feature_store.serving.testing import ServerThread
from feature_store.serving.v1 import serving_pb2 as pb

Raw: TypeAlias = "grpc.UnaryUnaryMultiCallable[bytes, bytes]"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def methods(served: ServerThread) -> Iterator[dict[str, Raw]]:
    with grpc.insecure_channel(served.target) as channel:
        yield {
            name: channel.unary_unary(
                f"/{SERVICE_NAME}/{name}", request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            for name in ("GetOnlineFeatures", "ListFeatureServices", "GetFeatureServiceSchema")
        }


def status_of(call: Raw, raw: bytes) -> grpc.StatusCode:
    try:
        call(raw, timeout=10)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


names = st.sampled_from(["user_id", "peer_id", "", "x", "user_id\x00"])
strings = st.one_of(
    st.sampled_from(["u1", "u2", "ranking_v1", "pair_v1", "user_calls:*", ""]), st.text(max_size=8)
)
values = st.one_of(
    st.builds(lambda s: pb.Value(string_val=s), strings),
    st.builds(lambda i: pb.Value(int64_val=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda b: pb.Value(bytes_val=b), st.binary(max_size=4)),
    st.builds(lambda b: pb.Value(bool_val=b), st.booleans()),
    st.builds(lambda f: pb.Value(double_val=f), st.floats()),
    st.just(pb.Value()),
)
refs = st.lists(
    st.one_of(
        strings,
        st.sampled_from(
            ["user_calls:calls_lifetime", "pair_calls:pair_calls_lifetime", "user_chat:*", "a:b:c", ":"]
        ),
    ),
    max_size=4,
)


@st.composite
def requests(draw: st.DrawFn) -> pb.GetOnlineFeaturesRequest:
    req = pb.GetOnlineFeaturesRequest(registry_version=draw(st.sampled_from([0, 0, 1, 2, -1, 2**40])))
    kind = draw(st.sampled_from(["service", "features", "none"]))
    if kind == "service":
        req.feature_service = draw(strings)
    elif kind == "features":
        req.features.SetInParent()
        req.features.refs.extend(draw(refs))
    for name in draw(st.lists(names, max_size=3, unique=True)):
        req.entities[name].values.extend(draw(st.lists(values, max_size=60)))
    return req


@FUZZ
@given(req=requests())
def test_structured_requests_never_yield_internal(
    methods: dict[str, Raw], req: pb.GetOnlineFeaturesRequest
) -> None:
    code = status_of(methods["GetOnlineFeatures"], req.SerializeToString())
    assert code in {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    }, req


@FUZZ
@given(
    raw=st.binary(max_size=200),
    method=st.sampled_from(["GetOnlineFeatures", "ListFeatureServices", "GetFeatureServiceSchema"]),
)
def test_random_bytes_never_yield_internal(methods: dict[str, Raw], raw: bytes, method: str) -> None:
    code = status_of(methods[method], raw)
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, raw


@FUZZ
@given(req=requests(), cut=st.integers(0, 400))
def test_truncated_requests_never_yield_internal(
    methods: dict[str, Raw], req: pb.GetOnlineFeaturesRequest, cut: int
) -> None:
    raw = req.SerializeToString()[:cut]
    code = status_of(methods["GetOnlineFeatures"], raw)
    assert code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, raw
