"""Online/offline consistency audit: logged online responses vs the export at the same times.

The response log (see :mod:`feature_store.export.responses`) becomes a spine (join keys, ``t_ms``);
the export computes every feature of the service at those times from the archive; each logged
(value, status) is compared with the recomputed one. A feature's mismatch rate is the share of
logged rows where the status differs, or the value differs (exactly, or within ``float_tolerance``
relative difference for floats). Some mismatches are expected and are no bug: events the job had
not yet processed when the server answered (lag), or that the archive has not caught up with;
compare logs older than both lags.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.core.lookup import FieldStatus
from feature_store.core.model import Registry, ValueType
from feature_store.export.engine import ExportOptions, ProgressSink, prepare, run_export
from feature_store.export.plan import OutputColumn, plan_export
from feature_store.export.responses import LoggedResponse, decode_float, read_responses

_TS = "__audit_t_ms"
_KEY_ARROW = {ValueType.STRING: pa.string(), ValueType.INT64: pa.int64(), ValueType.BYTES: pa.binary()}


@dataclass(slots=True)
class FeatureAudit:
    ref: str
    rows: int = 0  # logged rows carrying this feature
    status_mismatches: int = 0
    value_mismatches: int = 0  # same status, different value
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return self.status_mismatches + self.value_mismatches

    @property
    def rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.ref,
            "rows": self.rows,
            "mismatches": self.mismatches,
            "status_mismatches": self.status_mismatches,
            "value_mismatches": self.value_mismatches,
            "mismatch_rate": self.rate,
            "examples": self.examples,
        }


@dataclass(slots=True)
class AuditReport:
    service: str
    rows: int
    features: list[FeatureAudit]
    threshold: float

    @property
    def failed(self) -> list[FeatureAudit]:
        return [f for f in self.features if f.rate > self.threshold]

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "rows": self.rows,
            "threshold": self.threshold,
            "ok": not self.failed,
            "features": [f.as_dict() for f in self.features],
        }


def _key_value(value: Any, vt: ValueType) -> Any:
    if vt is ValueType.INT64:
        return int(value)
    if vt is ValueType.BYTES:
        return value if isinstance(value, bytes) else str(value).encode()
    return value if isinstance(value, str) else str(value)


def write_spine(responses: Path, join_keys: tuple[tuple[str, ValueType], ...], dest: Path) -> int:
    """The response log as a spine (join keys + ``t_ms``), in log order; returns the row count."""
    schema = pa.schema([pa.field(k, _KEY_ARROW[vt]) for k, vt in join_keys] + [pa.field(_TS, pa.int64())])
    rows = 0
    with pq.ParquetWriter(dest, schema) as writer:
        chunk: list[LoggedResponse] = []
        for response in read_responses(responses):
            chunk.append(response)
            if len(chunk) >= 50_000:
                rows += _write_chunk(writer, schema, chunk, join_keys)
                chunk = []
        rows += _write_chunk(writer, schema, chunk, join_keys)
    return rows


def _write_chunk(
    writer: pq.ParquetWriter,
    schema: pa.Schema,
    chunk: list[LoggedResponse],
    join_keys: tuple[tuple[str, ValueType], ...],
) -> int:
    if not chunk:
        return 0
    arrays = []
    for key, vt in join_keys:
        try:
            values = [_key_value(r.keys[key], vt) for r in chunk]
        except KeyError:
            raise ValueError(f"a logged response has no entity key {key!r}") from None
        arrays.append(pa.array(values, type=_KEY_ARROW[vt]))
    arrays.append(pa.array([r.t_ms for r in chunk], type=pa.int64()))
    writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
    return len(chunk)


def values_equal(a: Any, b: Any, tolerance: float = 0.0) -> bool:
    """Logged vs recomputed value: exact (NaN equals NaN), or floats within ``tolerance`` (relative)."""
    a, b = decode_float(a), decode_float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, int | float) and isinstance(b, int | float)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or (tolerance > 0 and math.isclose(a, b, rel_tol=tolerance))
    return bool(a == b)


def _output_rows(path: Path, columns: tuple[OutputColumn, ...]) -> Iterator[dict[str, Any]]:
    names = [n for c in columns for n in (c.name, c.status_name)]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000, columns=names):
        yield from batch.to_pylist()


def audit(
    registry: Registry,
    service: str,
    responses: Path,
    archive: Path,
    *,
    threshold: float = 0.0,
    float_tolerance: float = 0.0,
    options: ExportOptions | None = None,
    progress: ProgressSink | None = None,
    max_examples: int = 3,
) -> AuditReport:
    """Recompute the service's features at the logged times and count mismatches per feature."""
    plan = plan_export(registry, service, full_names=True)
    opts = ExportOptions(
        timestamp_column=_TS,
        full_names=True,
        bucket_events=(options or ExportOptions()).bucket_events,
        bucket_spine_rows=(options or ExportOptions()).bucket_spine_rows,
        memory_limit=(options or ExportOptions()).memory_limit,
        threads=(options or ExportOptions()).threads,
    )
    with tempfile.TemporaryDirectory(prefix="fstore-audit-") as tmp:
        spine = Path(tmp) / "spine.parquet"
        rows = write_spine(responses, plan.join_keys, spine)
        out = Path(tmp) / "recomputed.parquet"
        run_export(prepare(registry, service, spine, archive, opts), out, opts, progress)
        audits = {c.ref: FeatureAudit(c.ref) for c in plan.columns}
        for response, row in zip(read_responses(responses), _output_rows(out, plan.columns), strict=True):
            for column in plan.columns:
                logged = response.features.get(column.ref)
                if logged is None:
                    continue
                result = audits[column.ref]
                result.rows += 1
                status = FieldStatus[row[column.status_name]]
                value = row[column.name]
                if status is not logged.status:
                    result.status_mismatches += 1
                elif not values_equal(logged.value, value, float_tolerance):
                    result.value_mismatches += 1
                else:
                    continue
                if len(result.examples) < max_examples:
                    result.examples.append(
                        {
                            "keys": {
                                k: repr(v) if isinstance(v, bytes) else v for k, v in response.keys.items()
                            },
                            "t_ms": response.t_ms,
                            "online": {"value": _jsonable(logged.value), "status": logged.status.name},
                            "offline": {"value": _jsonable(value), "status": status.name},
                        }
                    )
    return AuditReport(service, rows, list(audits.values()), threshold)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
