"""The client retries UNAVAILABLE (a server process going away), never other codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from feature_store.serving.client import FeatureClient, FeatureServingError, retry_service_config
from feature_store.serving.v1 import serving_pb2 as pb
from feature_store.serving.v1 import serving_pb2_grpc as pb_grpc


class _Flaky(pb_grpc.FeatureServingServicer):
    """Fails the first ``failures`` calls with ``code``, then answers."""

    def __init__(self, failures: int, code: grpc.StatusCode) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0
        self.trailers: tuple[tuple[str, str], ...] = ()

    def ListFeatureServices(
        self, request: Any, context: grpc.ServicerContext
    ) -> pb.ListFeatureServicesResponse:
        self.calls += 1
        if self.calls <= self.failures:
            context.set_trailing_metadata(self.trailers)
            context.abort(self.code, "not now")
        return pb.ListFeatureServicesResponse(services=[pb.FeatureServiceSummary(name="s")])

    def GetOnlineFeatures(self, request: Any, context: grpc.ServicerContext) -> pb.GetOnlineFeaturesResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    def GetFeatureServiceSchema(self, request: Any, context: grpc.ServicerContext) -> pb.FeatureServiceSchema:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")


@pytest.fixture
def flaky() -> Iterator[tuple[_Flaky, str]]:
    servicer = _Flaky(0, grpc.StatusCode.UNAVAILABLE)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_FeatureServingServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_unavailable_is_retried_within_the_budget(flaky: tuple[_Flaky, str]) -> None:
    servicer, target = flaky
    servicer.failures = 2
    with FeatureClient(target, timeout_s=5) as client:
        assert [s.name for s in client.list_feature_services()] == ["s"]
    assert servicer.calls == 3


def test_retries_run_out(flaky: tuple[_Flaky, str]) -> None:
    servicer, target = flaky
    servicer.failures = 10
    with FeatureClient(target, timeout_s=5, retries=1) as client, pytest.raises(FeatureServingError) as err:
        client.list_feature_services()
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 2


def test_no_retries_when_turned_off(flaky: tuple[_Flaky, str]) -> None:
    servicer, target = flaky
    servicer.failures = 1
    with FeatureClient(target, timeout_s=5, retries=0) as client, pytest.raises(FeatureServingError):
        client.list_feature_services()
    assert servicer.calls == 1


def test_other_codes_are_not_retried(flaky: tuple[_Flaky, str]) -> None:
    servicer, target = flaky
    servicer.failures, servicer.code = 1, grpc.StatusCode.INVALID_ARGUMENT
    with FeatureClient(target, timeout_s=5) as client, pytest.raises(FeatureServingError) as err:
        client.list_feature_services()
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.calls == 1


def test_an_unavailable_the_server_says_not_to_retry_is_not_retried(flaky: tuple[_Flaky, str]) -> None:
    # what the feature server sends when the store did not answer: it already used the deadline
    servicer, target = flaky
    servicer.failures, servicer.trailers = 1, (("grpc-retry-pushback-ms", "-1"),)
    with FeatureClient(target, timeout_s=5) as client, pytest.raises(FeatureServingError) as err:
        client.list_feature_services()
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 1


def test_service_config_shape() -> None:
    config = json.loads(retry_service_config(9))
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 5
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "retryPolicy" not in json.loads(retry_service_config(0))["methodConfig"][0]
    with pytest.raises(ValueError, match="retries"):
        retry_service_config(-1)
