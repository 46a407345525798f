"""Typed Python clients of the feature server: :class:`FeatureClient` (sync), :class:`AsyncFeatureClient`.

::

    with FeatureClient("127.0.0.1:50051", token="...") as client:
        result = client.get_online_features("ranking_v1", entities={"user_id": ["u1", "u2"]})
    result.rows()      # [{"user_id": "u1", "user_calls:calls_lifetime": 3, ...}, ...]
    result.columns()   # {"user_id": ["u1", "u2"], "user_calls:calls_lifetime": [3, None], ...}
    result.statuses    # [["PRESENT", "NOT_FOUND", ...], ...] per row, in feature_names order

Values are plain Python (``int``, ``float``, ``str``, ``bytes``, ``bool``, ``list``), ``None``
when the status is not PRESENT; ``columns()`` feeds ``numpy.asarray`` / ``pandas.DataFrame``
directly. Non-OK calls raise :class:`FeatureServingError` carrying the gRPC status code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from feature_store.serving.v1 import serving_pb2 as pb
from feature_store.serving.v1 import serving_pb2_grpc as pb_grpc
from feature_store.serving.values import from_value, status_name, to_value

__all__ = [
    "AsyncFeatureClient",
    "FeatureClient",
    "FeatureServingError",
    "OnlineFeatures",
    "ServiceSummary",
    "TlsOptions",
]

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_RETRIES = 2
_T = TypeVar("_T")
_SERVICE = "feature_store.serving.v1.FeatureServing"


def retry_service_config(retries: int) -> str:
    """gRPC service config retrying UNAVAILABLE ``retries`` times (within the call's deadline).

    Every method of the service is a read, so a retry is always safe. UNAVAILABLE is what a
    client sees when a server process goes away under it (a rolling restart, a worker of
    ``fstore serve --workers`` killed with connections in its accept queue) or when the server
    cannot reach the store; the deadline still bounds the whole call, retries included.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    method: dict[str, Any] = {"name": [{"service": _SERVICE}]}
    if retries:
        method["retryPolicy"] = {
            "maxAttempts": min(retries + 1, 5),  # gRPC caps attempts at 5
            "initialBackoff": "0.01s",
            "maxBackoff": "0.2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"methodConfig": [method]})


class FeatureServingError(Exception):
    """A non-OK gRPC status from the feature server."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Server CA (default: system roots); client cert and key for mTLS; name override for tests."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file for mTLS, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    name: str
    description: str
    feature_count: int


@dataclass(slots=True)
class OnlineFeatures:
    """One GetOnlineFeatures answer, row-major, plus the entity keys that were asked for."""

    feature_names: list[str]
    values: list[list[Any]]  # [row][feature]
    statuses: list[list[str]]  # [row][feature]: PRESENT, NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE, ERROR
    event_timestamps_ms: list[list[int]]  # [row][feature], 0 when no event
    registry_version: int
    entities: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_response(
        cls, response: pb.GetOnlineFeaturesResponse, entities: Mapping[str, Sequence[Any]]
    ) -> OnlineFeatures:
        return cls(
            feature_names=list(response.feature_names),
            values=[[from_value(v) for v in vec.values] for vec in response.results],
            statuses=[[status_name(s) for s in vec.statuses] for vec in response.results],
            event_timestamps_ms=[list(vec.event_timestamps_ms) for vec in response.results],
            registry_version=response.registry_version,
            entities={k: list(v) for k, v in entities.items()},
        )

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, *, include_entities: bool = True) -> list[dict[str, Any]]:
        """One dict per entity row: the entity keys (unless excluded), then feature -> value."""
        out: list[dict[str, Any]] = []
        for i, row in enumerate(self.values):
            record: dict[str, Any] = {k: v[i] for k, v in self.entities.items()} if include_entities else {}
            record.update(zip(self.feature_names, row, strict=True))
            out.append(record)
        return out

    def columns(self, *, include_entities: bool = True) -> dict[str, list[Any]]:
        """feature -> one value per entity row (entity keys first, unless excluded)."""
        cols: dict[str, list[Any]] = dict(self.entities) if include_entities else {}
        for j, name in enumerate(self.feature_names):
            cols[name] = [row[j] for row in self.values]
        return cols

    def status_rows(self) -> list[dict[str, str]]:
        return [dict(zip(self.feature_names, row, strict=True)) for row in self.statuses]


def _request(
    service: str | None,
    features: Sequence[str] | None,
    entities: Mapping[str, Sequence[Any]],
    registry_version: int,
) -> pb.GetOnlineFeaturesRequest:
    if (service is None) == (features is None):
        raise ValueError("pass exactly one of service= or features=")
    request = pb.GetOnlineFeaturesRequest(registry_version=registry_version)
    if service is not None:
        request.feature_service = service
    else:
        request.features.refs.extend(features or ())
    for key, values in entities.items():
        request.entities[key].values.extend(to_value(v) for v in values)
    return request


def _metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def _channel_args(
    tls: TlsOptions | bool | None, retries: int, options: Iterable[tuple[str, Any]]
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """Credentials and channel options: TLS ones, the retry policy (unless the caller gives a
    ``grpc.service_config`` of its own), then the caller's."""
    options = list(options)
    given = any(key == "grpc.service_config" for key, _ in options)
    policy = [] if given else [("grpc.service_config", retry_service_config(retries))]
    if tls is None or tls is False:
        return None, [*policy, *options]
    tls_options = TlsOptions() if tls is True else tls
    return tls_options.credentials(), [*tls_options.options(), *policy, *options]


def _summaries(response: pb.ListFeatureServicesResponse) -> list[ServiceSummary]:
    return [ServiceSummary(s.name, s.description, s.feature_count) for s in response.services]


class FeatureClient:
    """Blocking client; thread-safe (one channel, reused).

    ``retries``: how many times a call that failed with UNAVAILABLE is tried again (with a short
    backoff, always within ``timeout_s``); 0 turns retries off.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsOptions | bool | None = None,
        timeout_s: float | None = 1.0,
        options: Iterable[tuple[str, Any]] = (),
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        credentials, opts = _channel_args(tls, retries, options)
        self._channel = (
            grpc.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.FeatureServingStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout_s = timeout_s

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(
                request,
                timeout=timeout_s if timeout_s is not None else self.timeout_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise FeatureServingError(exc.code(), exc.details() or "") from None

    def get_online_features(
        self,
        service: str | None = None,
        *,
        features: Sequence[str] | None = None,
        entities: Mapping[str, Sequence[Any]],
        registry_version: int = 0,
        timeout_s: float | None = None,
    ) -> OnlineFeatures:
        request = _request(service, features, entities, registry_version)
        response = self._call(self._stub.GetOnlineFeatures, request, timeout_s)
        return OnlineFeatures.from_response(response, entities)

    def get_online_features_raw(
        self, request: pb.GetOnlineFeaturesRequest, *, timeout_s: float | None = None
    ) -> pb.GetOnlineFeaturesResponse:
        response: pb.GetOnlineFeaturesResponse = self._call(self._stub.GetOnlineFeatures, request, timeout_s)
        return response

    def list_feature_services(self, *, timeout_s: float | None = None) -> list[ServiceSummary]:
        return _summaries(
            self._call(self._stub.ListFeatureServices, pb.ListFeatureServicesRequest(), timeout_s)
        )

    def get_feature_service_schema(
        self, name: str, *, timeout_s: float | None = None
    ) -> pb.FeatureServiceSchema:
        request = pb.GetFeatureServiceSchemaRequest(name=name)
        schema: pb.FeatureServiceSchema = self._call(self._stub.GetFeatureServiceSchema, request, timeout_s)
        return schema

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFeatureClient:
    """asyncio client (grpc.aio); create and use it on one event loop. ``retries`` as for
    :class:`FeatureClient`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsOptions | bool | None = None,
        timeout_s: float | None = 1.0,
        options: Iterable[tuple[str, Any]] = (),
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        credentials, opts = _channel_args(tls, retries, options)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.FeatureServingStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout_s = timeout_s

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(
                request,
                timeout=timeout_s if timeout_s is not None else self.timeout_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise FeatureServingError(exc.code(), exc.details() or "") from None

    async def get_online_features(
        self,
        service: str | None = None,
        *,
        features: Sequence[str] | None = None,
        entities: Mapping[str, Sequence[Any]],
        registry_version: int = 0,
        timeout_s: float | None = None,
    ) -> OnlineFeatures:
        request = _request(service, features, entities, registry_version)
        response = await self._call(self._stub.GetOnlineFeatures, request, timeout_s)
        return OnlineFeatures.from_response(response, entities)

    async def get_online_features_raw(
        self, request: pb.GetOnlineFeaturesRequest, *, timeout_s: float | None = None
    ) -> pb.GetOnlineFeaturesResponse:
        response: pb.GetOnlineFeaturesResponse = await self._call(
            self._stub.GetOnlineFeatures, request, timeout_s
        )
        return response

    async def list_feature_services(self, *, timeout_s: float | None = None) -> list[ServiceSummary]:
        response = await self._call(
            self._stub.ListFeatureServices, pb.ListFeatureServicesRequest(), timeout_s
        )
        return _summaries(response)

    async def get_feature_service_schema(
        self, name: str, *, timeout_s: float | None = None
    ) -> pb.FeatureServiceSchema:
        request = pb.GetFeatureServiceSchemaRequest(name=name)
        schema: pb.FeatureServiceSchema = await self._call(
            self._stub.GetFeatureServiceSchema, request, timeout_s
        )
        return schema

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncFeatureClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
