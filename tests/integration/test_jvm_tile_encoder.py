"""The job's JVM side (jobs/jvm) writes the core's bytes exactly.

* ``TileEncoder``: random query rows of the SQL path, with sums past int64, negative values,
  sketches and empty slots, encoded by the JVM and by :meth:`SourceTilesSql.encode` (the core's
  ``ViewAggregator.encode``) must agree byte for byte, or tiles written by the SQL path would
  read differently from the Python path's.
* ``LastN``: keeping the newest entries of random (event time, value) streams, with ties on
  time, must give the core ``last`` / ``last_n`` IRs in codec bytes.
* ``HllSketch``: merging the one-event sketches of random value sets (a handful up to past the
  sparse limit, where the sketch turns dense) must give :meth:`HyperLogLog.to_bytes`.

Both run through the classes' stdin harness: one JVM, no Flink cluster, no services.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from feature_store.core import codec
from feature_store.core.aggregators import aggregator_for, order_key
from feature_store.core.model import AggregationKind, ValueType
from feature_store.core.sketch import HyperLogLog, sparse_limit
from feature_store.stack.layout import Layout
from feature_store.stream.tile_sql import SourceTilesSql
from tests.unit.export.support import HOUR, T0
from tests.unit.stream.test_tile_sql import VIEWS, index_of, registry_at

pytestmark = pytest.mark.integration


def run_harness(main_class: str, lines: list[str]) -> list[str]:
    import pyflink  # noqa: PLC0415

    flink_lib = Path(pyflink.__file__).parent / "lib"
    jars = Layout.default().lib("flink-jobs")  # the job's jar and its runtime jars
    proc = subprocess.run(
        ["java", "-cp", f"{jars}/*:{flink_lib}/*", f"io.featurestore.flink.{main_class}"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split("\n")[: len(lines)]


def _field(values: list[Any]) -> str:
    return ",".join("-" if v is None else v.hex() if isinstance(v, bytes) else str(v) for v in values)


def one_event_entry(value: object) -> int:
    """What the router emits for a count_distinct slot: the one-event sketch's entry."""
    agg = aggregator_for(AggregationKind.COUNT_DISTINCT, ValueType.STRING, None)
    sketch: HyperLogLog = agg.add(agg.init(), value, 0)
    [entry] = sketch.packed_entries()
    return entry


def random_sketch(rng: random.Random) -> bytes:
    sketch = HyperLogLog()
    for _ in range(rng.choice([1, 3, 40, 700])):
        sketch.add(f"v{rng.randrange(10**9)}")
    return sketch.to_bytes()


def random_row(rng: random.Random, plan: SourceTilesSql, vi: int, g: int) -> list[Any]:
    row: list[Any] = [vi, f"u{rng.randrange(9)}", g, T0 - T0 % g if g else 0, rng.randrange(1, 1000)]
    for name in plan.tile_columns[5 : 5 + plan.output_count]:
        if name in plan.sketch_columns:
            row.append(random_sketch(rng))
        elif name in plan.codec_columns:  # a last / last_n IR in codec bytes
            items = tuple(
                (T0 - rng.randrange(HOUR), f"k{rng.randrange(5)}") for _ in range(rng.randrange(1, 4))
            )
            row.append(codec.encode_value(items if rng.random() < 0.5 else items[0]))
        elif name in plan.exact_sum_columns and rng.random() < 0.2:  # past int64, within DECIMAL(38)
            row.append(Decimal(rng.choice([1, -1]) * rng.randrange(2**63, 10**38)))
        else:
            row.append(rng.randrange(-(2**40), 2**40))
    lasts = len(plan.tile_columns) - len(row)
    row.extend(None if rng.random() < 0.3 else T0 + rng.randrange(-HOUR, HOUR) for _ in range(lasts))
    return row


def test_the_jvm_tile_encoder_writes_the_core_codecs_bytes(tmp_path: Path) -> None:
    registry = registry_at(tmp_path, VIEWS)
    indices = [index_of(registry, n) for n in ("v_ints", "v_peer", "v_distinct", "v_last")]
    plan = SourceTilesSql(registry, "ev", "ks", indices)
    rng = random.Random(11)
    rows: list[list[Any]] = []
    for vi in indices:
        for g in registry.views_of_source("ev")[vi].granularities_ms:
            rows.extend(random_row(rng, plan, vi, g) for _ in range(100))
    rows = [r for r in rows if any(v is not None for v in plan.encoder_input(r)[2])]  # a tile has an entry

    got = run_harness("TileEncoder", [";".join(map(_field_or_kinds, plan.encoder_input(r))) for r in rows])

    want = [plan.encode(row, now_ms=T0)[5].hex() for row in rows]
    assert len(rows) > 300
    assert all(any(k in plan.encoder_input(r)[0] for r in rows) for k in "ithr")
    assert got == want


def _field_or_kinds(value: Any) -> str:
    return value if isinstance(value, str) else _field(value)


def test_the_jvm_sketch_merge_gives_the_core_sketchs_bytes() -> None:
    rng = random.Random(5)
    limit = sparse_limit()
    sizes = [0, 1, 2, 5, 50, limit - 1, limit, limit + 1, limit + 2, 3 * limit, 20_000]
    sets = [[f"x{rng.randrange(10**12)}" for _ in range(n)] for n in sizes]
    sets.append(["same"] * 10)

    lines = []
    want = []
    for values in sets:
        entries = [one_event_entry(v) for v in values]
        rng.shuffle(entries)  # arrival order must not matter
        lines.append(",".join(map(str, entries)))
        sketch = HyperLogLog()
        for v in values:
            sketch.add(v)
        want.append(sketch.to_bytes().hex())

    assert run_harness("HllSketch", lines) == want


@pytest.mark.parametrize("input_type", [ValueType.INT64, ValueType.STRING, ValueType.BOOL, ValueType.FLOAT64])
def test_the_jvm_last_n_keeps_the_core_last_and_last_n_irs(input_type: ValueType) -> None:
    rng = random.Random(input_type.value)
    values: Callable[[], object] = {
        ValueType.INT64: lambda: (
            rng.randrange(-(2**62), 2**62) if rng.random() < 0.5 else rng.randrange(-3, 3)
        ),
        ValueType.STRING: lambda: rng.choice(["", "a", "ab", "b", "é", "\u4e2d", "zz"]),
        ValueType.BOOL: lambda: rng.random() < 0.5,
        ValueType.FLOAT64: lambda: rng.choice([-0.0, 0.0, 1.5, -2.25, float("inf"), float("-inf"), 3e300]),
    }[input_type]
    lines: list[str] = []
    want: list[str] = []
    for n in (0, 1, 3):
        kind = AggregationKind.LAST if n == 0 else AggregationKind.LAST_N
        agg = aggregator_for(kind, input_type, n or None)
        for size in (0, 1, 2, 7, 40):
            events = [(1000 + rng.randrange(4), values()) for _ in range(size)]  # many ties on time
            ir = agg.init()
            entries = []
            for t, v in events:
                ir = agg.add(ir, v, t)
                one = agg.add(agg.init(), v, t)
                item = one if n == 0 else one[0]
                entries.append(f"{t}:{order_key(v, input_type).hex()}:{codec.encode_value(item).hex()}")
            rng.shuffle(entries)  # arrival order must not matter
            lines.append(f"{n};{','.join(entries)}")
            want.append("-" if not events else codec.encode_value(ir).hex())

    assert run_harness("LastN", lines) == want
