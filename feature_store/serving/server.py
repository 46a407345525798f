"""The gRPC feature server (grpc.aio): FeatureServing + health + reflection, metrics, hot reload.

Per GetOnlineFeatures request: authenticate, validate (INVALID_ARGUMENT with a message naming
the problem), pick the compiled plan of the registry version (NOT_FOUND for unknown services,
features or versions), issue one single-partition read per distinct (view, entity) under a
server-wide concurrency limit, decode the tiles, ``ViewAggregator.read`` at ``now``,
``core.lookup.resolve`` (statuses, TTL) and write the response proto directly.

Failure policy (see docs/serving.md): a request whose reads *all* fail or time out gets
UNAVAILABLE; when only some (entity, view) reads fail, those features are served with
FIELD_STATUS_ERROR and the rest normally. A request always ends before its deadline: the
smaller of the client's deadline (less a margin) and the server's ``deadline_ms``. Nothing a
client sends yields INTERNAL: requests are parsed by a deserializer that never raises.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from feature_store.core.codec import CodecError
from feature_store.core.keys import KEY_SEP
from feature_store.core.lookup import FieldStatus, Resolved, resolve
from feature_store.core.model import ValueType
from feature_store.core.ports import Clock, RegistryStore
from feature_store.serving.auth import Authenticator, AuthError, Grant
from feature_store.serving.cache import ReadCache
from feature_store.serving.metrics import ServingMetrics
from feature_store.serving.plans import CompiledRegistry, LookupPlan, PlanError, PlanErrorKind, ViewPlan
from feature_store.serving.settings import ServeSettings
from feature_store.serving.store import CqlTileReader, TileReader, TileRows
from feature_store.serving.v1 import serving_pb2 as pb
from feature_store.serving.values import PROTO_VALUE_TYPE, InvalidKey, key_text
from feature_store.serving.versions import RegistryUnavailable, RegistryVersions, UnknownRegistryVersion

__all__ = ["SERVICE_NAME", "FeatureServer", "SystemClock", "run"]

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name
_PRESENT = FieldStatus.PRESENT
_ERROR = FieldStatus.ERROR
_M = TypeVar("_M", bound=Message)


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_NO_RETRY = (("grpc-retry-pushback-ms", "-1"),)


def _invalid(message: str) -> _Abort:
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


# --- request parsing that never raises -------------------------------------------------------


class _Parsed(NamedTuple):
    request: Any
    error: str | None


def _top_level_fields(raw: bytes) -> set[int]:
    """Field numbers present at the top level of a valid protobuf message."""
    seen: set[int] = set()
    i, n = 0, len(raw)
    while i < n:
        tag, i = _uvarint(raw, i)
        field, wire = tag >> 3, tag & 7
        seen.add(field)
        if wire == 0:
            _, i = _uvarint(raw, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _uvarint(raw, i)
            i += length
        elif wire == 5:
            i += 4
        else:  # groups: not in this API; stop scanning
            break
    return seen


def _uvarint(raw: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = raw[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _parse_get(raw: bytes) -> _Parsed:
    try:
        request = pb.GetOnlineFeaturesRequest.FromString(raw)
    except (DecodeError, ValueError, RuntimeError):
        return _Parsed(None, "the request is not a valid GetOnlineFeaturesRequest message")
    try:
        fields = _top_level_fields(raw)
    except IndexError:
        fields = set()
    if 1 in fields and 2 in fields:
        return _Parsed(request, "set exactly one of feature_service and features, not both")
    return _Parsed(request, None)


def _lenient(message_type: type[_M]) -> Callable[[bytes], _Parsed]:
    def parse(raw: bytes) -> _Parsed:
        try:
            return _Parsed(message_type.FromString(raw), None)
        except (DecodeError, ValueError, RuntimeError):
            return _Parsed(None, f"the request is not a valid {message_type.DESCRIPTOR.name} message")

    return parse


# --- the servicer ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Limits:
    max_batch_size: int
    deadline_s: float
    margin_s: float


class _RateLimitedLog:
    def __init__(self, every_s: float = 5.0) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self._every_s:
            self._last[key] = now
            log.warning(message, *args)


class FeatureServingHandlers:
    """The three FeatureServing RPCs; registered with custom deserializers (see ``handlers``)."""

    def __init__(
        self,
        versions: RegistryVersions,
        reader: TileReader,
        auth: Authenticator,
        metrics: ServingMetrics,
        clock: Clock,
        limits: _Limits,
        max_concurrent_reads: int,
        cache: ReadCache,
    ) -> None:
        self._versions = versions
        self._reader = reader
        self._auth = auth
        self._metrics = metrics
        self._clock = clock
        self._limits = limits
        self._cache = cache
        metrics.watch_cache(cache)
        self._sem = asyncio.Semaphore(max_concurrent_reads)
        self._in_flight = 0
        metrics.reads_in_flight.set_function(lambda: self._in_flight)
        self._warn = _RateLimitedLog()

    def handlers(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(
                    self.get_online_features,
                    request_deserializer=_parse_get,
                    response_serializer=pb.GetOnlineFeaturesResponse.SerializeToString,
                ),
                "ListFeatureServices": grpc.unary_unary_rpc_method_handler(
                    self.list_feature_services,
                    request_deserializer=_lenient(pb.ListFeatureServicesRequest),
                    response_serializer=pb.ListFeatureServicesResponse.SerializeToString,
                ),
                "GetFeatureServiceSchema": grpc.unary_unary_rpc_method_handler(
                    self.get_feature_service_schema,
                    request_deserializer=_lenient(pb.GetFeatureServiceSchemaRequest),
                    response_serializer=pb.FeatureServiceSchema.SerializeToString,
                ),
            },
        )

    # --- shared steps ------------------------------------------------------------------------

    def _grant(self, context: grpc.aio.ServicerContext[Any, Any]) -> Grant:
        if not self._auth.enabled:
            return self._auth.authenticate(None)
        try:
            return self._auth.authenticate(context.invocation_metadata())
        except AuthError as exc:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, exc.message) from None

    @staticmethod
    def _check_service(grant: Grant, service: str) -> None:
        try:
            Authenticator.check_service(grant, service)
        except AuthError as exc:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, exc.message) from None

    async def _registry(self, version: int) -> CompiledRegistry:
        if version < 0:
            raise _invalid(f"registry_version must be >= 0 (0 = the server's current), got {version}")
        try:
            return await self._versions.get(version)
        except UnknownRegistryVersion as exc:
            raise _Abort(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except RegistryUnavailable as exc:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        except Exception as exc:  # the registry store failed while loading a pinned version
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE, f"cannot load registry version {version}: {type(exc).__name__}"
            ) from None

    async def _finish(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[list[str]], Awaitable[_M]],
    ) -> _M:
        """Run ``work``, turn _Abort into a status, record latency and errors.

        A failure is recorded before its status is sent, so a client that got the status finds
        it counted when it scrapes the metrics right after.
        """
        start = time.perf_counter()
        label = ["_none"]  # set by work once it knows the feature service
        try:
            response = await work(label)
        except _Abort as exc:
            self._record(method, label[0], start, exc.code.name)
            # the server already tried (the driver retries across replicas within the deadline):
            # tell clients' gRPC retry policies not to try again (negative pushback); their
            # retries are for a server process that went away, which has no trailers at all
            trailers = _NO_RETRY if exc.code is grpc.StatusCode.UNAVAILABLE else ()
            await context.abort(exc.code, exc.message, trailers)
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            self._record(method, label[0], start, "CANCELLED")
            raise
        except Exception:
            log.exception("%s failed", method)
            self._record(method, label[0], start, "INTERNAL")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise
        self._record(method, label[0], start, "OK")
        return response

    def _record(self, method: str, service: str, start: float, code: str) -> None:
        self._metrics.request_timer(method, service).observe(time.perf_counter() - start)
        if code != "OK":
            self._metrics.errors.labels(method, code).inc()

    # --- GetOnlineFeatures -------------------------------------------------------------------

    async def get_online_features(
        self, parsed: _Parsed, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetOnlineFeaturesResponse:
        return await self._finish(
            "GetOnlineFeatures", context, lambda label: self._lookup(parsed, context, label)
        )

    async def _lookup(
        self, parsed: _Parsed, context: grpc.aio.ServicerContext[Any, Any], label: list[str]
    ) -> pb.GetOnlineFeaturesResponse:
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        budget = self._limits.deadline_s
        if remaining is not None:
            budget = min(budget, remaining - self._limits.margin_s)
        deadline = loop.time() + budget
        grant = self._grant(context)
        if parsed.error is not None:
            raise _invalid(parsed.error)
        request: pb.GetOnlineFeaturesRequest = parsed.request
        kind = request.WhichOneof("kind")
        if kind is None:
            raise _invalid("set exactly one of feature_service and features")
        compiled = await self._registry(request.registry_version)
        plan = self._plan(compiled, request, kind, grant)
        label[0] = plan.metric_label
        rows, group_keys = _entity_keys(plan, request.entities, self._limits.max_batch_size)
        self._metrics.batch_size.observe(rows)
        if budget <= 0:
            raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline left no time to read")
        t_ms = self._clock.now_ms()
        results = await self._read(plan, group_keys, t_ms, deadline)
        return _response(plan, rows, group_keys, results)

    def _plan(
        self, compiled: CompiledRegistry, request: pb.GetOnlineFeaturesRequest, kind: str, grant: Grant
    ) -> LookupPlan:
        try:
            if kind == "feature_service":
                name = request.feature_service
                if not name:
                    raise _invalid("feature_service is empty")
                self._check_service(grant, name)
                return compiled.service_plan(name)
            plan = compiled.refs_plan(request.features.refs)
        except PlanError as exc:
            code = (
                grpc.StatusCode.NOT_FOUND
                if exc.kind is PlanErrorKind.NOT_FOUND
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            raise _Abort(code, exc.message) from None
        try:
            Authenticator.check_features(grant, plan.feature_names, compiled.service_features)
        except AuthError as exc:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, exc.message) from None
        return plan

    async def _read(
        self, plan: LookupPlan, group_keys: list[list[bytes]], t_ms: int, deadline: float
    ) -> list[dict[bytes, Resolved]]:
        """Read every distinct (view, entity) once within ``deadline`` (loop time), and resolve it."""
        started = time.perf_counter()
        issued, timed_out = await self._issue(plan, group_keys, deadline)
        self._metrics.store_read_duration.observe(time.perf_counter() - started)
        results: list[dict[bytes, Resolved]] = []
        ok = failed = 0
        first_error = "the online store did not answer in time" if timed_out else ""
        for vi, vp in enumerate(plan.views):
            futures = issued[vi]
            resolved: dict[bytes, Resolved] = {}
            for key in group_keys[vp.key_group]:
                if key in resolved:
                    continue
                fut = futures.get(key)
                outcome: Resolved | str = (
                    "not read in time" if fut is None or not fut.done() else self._outcome(vp, fut, t_ms)
                )
                if isinstance(outcome, str):
                    first_error = first_error or outcome
                    resolved[key] = vp.error
                else:
                    resolved[key] = outcome
            view_failed = sum(1 for r in resolved.values() if r is vp.error)
            if view_failed:
                failed += view_failed
                self._metrics.field_errors.labels(vp.view.name).inc(view_failed)
            ok += len(resolved) - view_failed
            results.append(resolved)
        if failed:
            self._warn.warning("store", "%d of %d store reads failed: %s", failed, ok + failed, first_error)
            if ok == 0:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, f"online store unavailable: {first_error}")
        return results

    async def _issue(
        self, plan: LookupPlan, group_keys: list[list[bytes]], deadline: float
    ) -> tuple[list[dict[bytes, asyncio.Future[TileRows]]], bool]:
        """Start the reads and wait for their answers until ``deadline``.

        One permit of the read semaphore per (key group, entity key): the reads of all the
        group's views for that key are asked for together (no await between them), so the
        reader makes them one partition read, and the permit comes back when all have answered.
        """
        loop = asyncio.get_running_loop()
        sem = self._sem
        reader = self._reader
        all_done: asyncio.Future[None] = loop.create_future()
        state = {"pending": 0, "issuing": True}
        issued: list[dict[bytes, asyncio.Future[TileRows]]] = [{} for _ in plan.views]
        members: dict[int, list[int]] = {}
        for vi, vp in enumerate(plan.views):
            members.setdefault(vp.key_group, []).append(vi)

        def finish_if_done() -> None:
            if not state["issuing"] and state["pending"] == 0 and not all_done.done():
                all_done.set_result(None)

        def on_done(fut: asyncio.Future[TileRows], permit: list[int]) -> None:
            self._in_flight -= 1
            if not fut.cancelled():
                fut.exception()  # mark retrieved: a request that gave up never looks at it
            permit[0] -= 1
            if permit[0] == 0:
                sem.release()
            state["pending"] -= 1
            finish_if_done()

        try:
            async with asyncio.timeout_at(deadline):
                for group, view_indexes in members.items():
                    for key in dict.fromkeys(group_keys[group]):
                        await sem.acquire()
                        permit = [len(view_indexes)]
                        for n, vi in enumerate(view_indexes):
                            try:
                                fut = reader.read(plan.views[vi].view, key)
                            except BaseException:
                                permit[0] -= len(view_indexes) - n  # these never start
                                if permit[0] == 0:
                                    sem.release()
                                raise
                            self._in_flight += 1
                            state["pending"] += 1
                            fut.add_done_callback(functools.partial(on_done, permit=permit))
                            issued[vi][key] = fut
                state["issuing"] = False
                finish_if_done()
                await all_done
        except TimeoutError:
            return issued, True
        return issued, False

    def _outcome(self, vp: ViewPlan, fut: asyncio.Future[TileRows], t_ms: int) -> Resolved | str:
        """The resolved read, or why it failed."""
        exc = fut.exception()
        if exc is not None:
            return str(exc) or type(exc).__name__
        try:
            return self._resolve(vp, fut.result(), t_ms)
        except (CodecError, KeyError, ValueError, IndexError) as bad:
            self._warn.warning(f"decode:{vp.view.name}", "undecodable tile in %s: %s", vp.view.table, bad)
            return f"undecodable tile in {vp.view.table}"

    def _resolve(self, vp: ViewPlan, rows: TileRows, t_ms: int) -> Resolved:
        if not rows:
            return vp.not_found
        read, newest = self._cache.read(vp.aggregator, vp.granularities, rows, t_ms)
        if newest is not None:
            self._metrics.saw_event(vp.view.name, newest)
        return resolve(read, newest, vp.ttl_ms, t_ms)

    # --- ListFeatureServices / GetFeatureServiceSchema ---------------------------------------

    async def list_feature_services(
        self, parsed: _Parsed, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListFeatureServicesResponse:
        async def work(label: list[str]) -> pb.ListFeatureServicesResponse:
            grant = self._grant(context)
            if parsed.error is not None:
                raise _invalid(parsed.error)
            compiled = await self._registry(0)
            response = pb.ListFeatureServicesResponse(registry_version=compiled.version)
            for svc in compiled.services:
                if not grant.allows(svc.name):
                    continue
                try:
                    count = len(compiled.service_plan(svc.name).columns)
                except PlanError:
                    count = len(svc.features)
                response.services.add(name=svc.name, description=svc.description, feature_count=count)
            return response

        return await self._finish("ListFeatureServices", context, work)

    async def get_feature_service_schema(
        self, parsed: _Parsed, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FeatureServiceSchema:
        async def work(label: list[str]) -> pb.FeatureServiceSchema:
            grant = self._grant(context)
            if parsed.error is not None:
                raise _invalid(parsed.error)
            request: pb.GetFeatureServiceSchemaRequest = parsed.request
            if not request.name:
                raise _invalid("name is empty: which feature service?")
            self._check_service(grant, request.name)
            compiled = await self._registry(0)
            try:
                plan = compiled.service_plan(request.name)
            except PlanError as exc:
                raise _Abort(grpc.StatusCode.NOT_FOUND, exc.message) from None
            label[0] = plan.metric_label
            return _schema(plan)

        return await self._finish("GetFeatureServiceSchema", context, work)


def _batch_size(plan: LookupPlan, entities: Any, max_batch: int) -> int:
    rows: int | None = None
    first = ""
    for name, column in entities.items():
        length = len(column.values)
        if rows is None:
            rows, first = length, name
        elif length != rows:
            raise _invalid(
                f"entity columns must have equal lengths: {first!r} has {rows} values, {name!r} has {length}"
            )
    needed = [k for k, _ in plan.join_keys]
    missing = [k for k in needed if k not in entities]
    if missing:
        raise _invalid(
            f"missing entity column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}: "
            f"these features need {', '.join(map(repr, needed))}"
        )
    if not rows:
        raise _invalid("empty batch: the entity columns hold no values")
    if rows > max_batch:
        raise _invalid(f"batch of {rows} entity rows exceeds the maximum of {max_batch}")
    return rows


def _column_texts(name: str, values: Any, key_type: ValueType) -> list[str]:
    try:
        return [key_text(v, key_type) for v in values]
    except InvalidKey:
        for i, v in enumerate(values):
            try:
                key_text(v, key_type)
            except InvalidKey as exc:
                raise _invalid(f"entity column {name!r} row {i}: {exc}") from None
        raise


def _entity_keys(plan: LookupPlan, entities: Any, max_batch: int) -> tuple[int, list[list[bytes]]]:
    """Validate the entity columns; return the batch size and entity-key bytes per key group."""
    rows = _batch_size(plan, entities, max_batch)
    texts = [_column_texts(name, entities[name].values, key_type) for name, key_type in plan.join_keys]
    group_keys: list[list[bytes]] = []
    for group in plan.key_groups:
        if len(group) == 1:
            group_keys.append([t.encode("utf-8") for t in texts[group[0]]])
        else:
            columns = [texts[i] for i in group]
            group_keys.append([KEY_SEP.join(parts).encode("utf-8") for parts in zip(*columns, strict=True)])
    return rows, group_keys


def _response(
    plan: LookupPlan, rows: int, group_keys: list[list[bytes]], results: list[dict[bytes, Resolved]]
) -> pb.GetOnlineFeaturesResponse:
    response = pb.GetOnlineFeaturesResponse(registry_version=plan.registry_version)
    response.feature_names.extend(plan.feature_names)
    add_vector = response.results.add
    view_keys = [(results[vi], group_keys[vp.key_group]) for vi, vp in enumerate(plan.views)]
    colspec = plan.colspec
    for r in range(rows):
        row = [res[keys[r]] for res, keys in view_keys]
        vector = add_vector()
        add = vector.values.add
        statuses: list[Any] = []
        times: list[int] = []
        for vi, out, field, is_list in colspec:
            resolved = row[vi]
            status = resolved.statuses[out]
            msg = add()
            if status == _PRESENT:
                value = resolved.values[out]
                try:
                    if is_list:
                        getattr(msg, field).values.extend(value)
                    else:
                        setattr(msg, field, value)
                except (ValueError, TypeError, OverflowError):
                    msg.Clear()  # e.g. an exact int64 sum beyond 64 bits
                    status = _ERROR
            statuses.append(status)
            times.append(resolved.event_times_ms[out])
        vector.statuses.extend(statuses)
        vector.event_timestamps_ms.extend(times)
    return response


def _schema(plan: LookupPlan) -> pb.FeatureServiceSchema:
    schema = pb.FeatureServiceSchema(name=plan.service or "", registry_version=plan.registry_version)
    seen: set[tuple[str, str]] = set()
    for vp in plan.views:
        for key, key_type in vp.entity.join_keys:
            if (vp.entity.name, key) not in seen:
                seen.add((vp.entity.name, key))
                schema.entity_keys.add(entity=vp.entity.name, join_key=key, type=PROTO_VALUE_TYPE[key_type])
    for column in plan.columns:
        ttl = plan.views[column.view_index].ttl_ms
        schema.features.add(
            ref=column.name,
            type=PROTO_VALUE_TYPE[column.value_type],
            aggregation=column.feature.aggregation.value,
            window=column.window.label,
            ttl_ms=ttl or 0,
            description=column.feature.description,
        )
    return schema


# --- the server ----------------------------------------------------------------------------------


class FeatureServer:
    """Everything one serving process runs; ``start``/``stop`` on a running event loop.

    Tests inject ``registry_store`` (any RegistryStore), ``reader`` (e.g. InMemoryTileReader)
    and ``clock``; otherwise they come from ``settings``.
    """

    def __init__(
        self,
        settings: ServeSettings,
        *,
        registry_store: RegistryStore | Callable[[], RegistryStore] | None = None,
        reader: TileReader | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.metrics = ServingMetrics(self.clock.now_ms)
        self.auth = Authenticator.from_settings(settings)
        if registry_store is None:
            open_store = _registry_store_opener(settings)
        elif callable(registry_store) and not hasattr(registry_store, "latest"):
            open_store = registry_store
        else:
            store = registry_store

            def open_store() -> RegistryStore:
                return store  # type: ignore[return-value]

        self.reader: TileReader = reader or CqlTileReader(
            _online_cql_config(settings),
            request_timeout_s=settings.store_request_timeout_ms / 1000.0,
            retry_interval_s=settings.store_connect_retry_s,
            on_connected=self._health_changed,
        )
        self.versions = RegistryVersions(
            open_store,
            pinned=settings.registry_version,
            reload_interval_s=settings.reload_interval_s,
            prepare=lambda compiled: self.reader.prepare(compiled.views),
            on_change=self._registry_changed,
        )
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._handlers: FeatureServingHandlers | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._serving: bool | None = None
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> int:
        """Load the registry (or keep retrying in the background), bind, serve; returns the port.

        Alone on its port, the server listens at once (health NOT_SERVING until it can answer);
        with ``reuse_port`` it binds only once it can answer (see the comment below)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._handlers = FeatureServingHandlers(
            self.versions,
            self.reader,
            self.auth,
            self.metrics,
            self.clock,
            _Limits(s.max_batch_size, s.deadline_ms / 1000.0, s.deadline_margin_ms / 1000.0),
            s.max_concurrent_reads,
            ReadCache(s.tile_cache_size, s.read_cache_size),
        )
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1 if s.reuse_port else 0),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ],
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        server.add_generic_rpc_handlers((self._handlers.handlers(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            server,
            pool=_MethodAwarePool(descriptor_pool.Default()),  # type: ignore[arg-type]
        )
        self._server = server
        await self._set_health(False)
        self.reader.start(loop)
        await self.versions.start()
        if s.reuse_port:
            # one of several processes on a shared port: the kernel hands connections to every
            # listening member, and health is per connection, so a member joins only once it can
            # answer (registry loaded, store connected); until then the others take the traffic
            while not (self.versions.current is not None and self.reader.connected):
                await asyncio.sleep(0.05)
        port = (
            server.add_secure_port(s.listen, _server_credentials(s))
            if s.tls_enabled
            else (server.add_insecure_port(s.listen))
        )
        if port == 0:
            raise RuntimeError(f"cannot listen on {s.listen}")
        self.port = port
        await server.start()
        if s.metrics_port is not None:
            self.metrics_port = self.metrics.serve(s.metrics_host, s.metrics_port)
        if s.auth_enabled and self.auth.grant_count == 0:
            log.warning("auth is enabled but no token is configured: every request will be refused")
        self._health_changed()
        log.info(
            "serving %s on %s (port %d, %s%s), metrics on %s",
            SERVICE_NAME,
            s.listen,
            port,
            "mTLS" if s.tls_client_ca_file else "TLS" if s.tls_enabled else "plaintext",
            ", token auth" if s.auth_enabled else "",
            f"{s.metrics_host}:{self.metrics_port}" if self.metrics_port is not None else "off",
        )
        return port

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first, then stop accepting and drain in-flight RPCs for ``grace_s``."""
        if self._stopping:
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self.settings.shutdown_delay_s > 0:
            await asyncio.sleep(self.settings.shutdown_delay_s)
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        await self.versions.close()
        self.reader.close()
        self.metrics.close()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    @property
    def target(self) -> str:
        host = self.settings.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    # --- health ----------------------------------------------------------------------------------

    def _registry_changed(self, compiled: CompiledRegistry) -> None:
        self.metrics.registry_version.set(compiled.version)
        self._health_changed()

    def _health_changed(self) -> None:
        serving = self.versions.current is not None and self.reader.connected and not self._stopping
        if serving != self._serving:
            task = asyncio.get_running_loop().create_task(self._set_health(serving))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _set_health(self, serving: bool) -> None:
        self._serving = serving
        response = health_pb2.HealthCheckResponse
        status = response.SERVING if serving else response.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


class _MethodAwarePool:
    """The default descriptor pool, also resolving *method* names (``pkg.Service.Method``).

    The upb pool only knows messages, enums, services...; ghz and some other clients ask
    reflection for the file containing a method, which would fail with "Symbol not found".
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str) -> Any:  # the pool API
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service, _, method = name.rpartition(".")
            try:
                found = self._pool.FindServiceByName(service)
            except KeyError:
                found = None
            if found is None or method not in found.methods_by_name:
                raise
            return found.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _server_credentials(s: ServeSettings) -> grpc.ServerCredentials:
    assert s.tls_cert_file is not None
    assert s.tls_key_file is not None
    ca = s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _registry_store_url(settings: ServeSettings) -> str:
    from feature_store import bootstrap  # noqa: PLC0415 - registers cql:// (driver import) on demand
    from feature_store.definitions.stores import resolve_store_url  # noqa: PLC0415

    return resolve_store_url(settings.registry_store) or bootstrap.LOCAL_STORE_URL


def _registry_store_opener(settings: ServeSettings) -> Callable[[], RegistryStore]:
    from feature_store.definitions.stores import open_registry_store  # noqa: PLC0415

    url = _registry_store_url(settings)
    return lambda: open_registry_store(url)


def _online_cql_config(settings: ServeSettings) -> Any:
    from feature_store import bootstrap  # noqa: PLC0415
    from feature_store.adapters.cql import CqlConfig  # noqa: PLC0415

    url = settings.online_store
    if url is None:
        registry_url = _registry_store_url(settings)
        url = registry_url if registry_url.startswith("cql:") else bootstrap.LOCAL_STORE_URL
    return CqlConfig.from_url(url)


def tune_gc(threshold: int) -> None:
    """Move start-up objects out of the collector's sight and collect the young generation rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 50, 100)


async def serve(settings: ServeSettings, *, ready: Callable[[FeatureServer], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    server = FeatureServer(settings)
    await server.start()
    if settings.tune_gc:
        tune_gc(settings.gc_threshold)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(server)
    await stop.wait()
    log.info("shutting down: NOT_SERVING, draining for up to %.1fs", settings.shutdown_grace_s)
    await server.stop()


def run(settings: ServeSettings, *, ready: Callable[[FeatureServer], None] | None = None) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings, ready=ready))
