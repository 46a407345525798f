"""The JVM tile encoder (jobs/jvm IntTileEncoder) writes the core codec's bytes exactly.

Random query rows of the SQL path, including sums past int64, negative values and empty slots,
go through the JVM encoder's test harness and through :meth:`SourceTilesSql.encode` (the core's
``ViewAggregator.encode``); every byte must agree, or tiles written by the SQL path would read
differently from the Python path's.
"""

from __future__ import annotations

import random
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from feature_store.core.model import Registry
from feature_store.stack.layout import Layout
from feature_store.stream.tile_sql import SourceTilesSql
from tests.unit.export.support import HOUR, T0
from tests.unit.stream.test_tile_sql import VIEWS, registry_at

pytestmark = pytest.mark.integration


def jvm_encode(lines: list[str]) -> list[str]:
    import pyflink  # noqa: PLC0415

    flink_lib = Path(pyflink.__file__).parent / "lib"
    jar = Layout.default().lib("flink-jobs") / "fstore-flink-jobs.jar"
    classpath = f"{jar}:{flink_lib}/*"
    proc = subprocess.run(
        ["java", "-cp", classpath, "io.featurestore.flink.IntTileEncoder"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def _field(values: list[Any]) -> str:
    return ",".join("-" if v is None else str(v) for v in values)


def random_row(rng: random.Random, plan: SourceTilesSql, vi: int, g: int) -> list[Any]:
    row: list[Any] = [vi, f"u{rng.randrange(9)}", g, T0 - T0 % g, rng.randrange(1, 1000)]
    for name in plan.tile_columns[5 : 5 + plan.part_count]:
        if name in plan.exact_sum_columns and rng.random() < 0.2:  # past int64, within DECIMAL(38)
            row.append(Decimal(rng.choice([1, -1]) * rng.randrange(2**63, 10**38)))
        else:
            row.append(rng.randrange(-(2**40), 2**40))
    lasts = len(plan.tile_columns) - len(row)
    row.extend(None if rng.random() < 0.3 else T0 + rng.randrange(-HOUR, HOUR) for _ in range(lasts))
    return row


def test_the_jvm_encoder_writes_the_core_codecs_bytes(tmp_path: Path) -> None:
    registry: Registry = registry_at(tmp_path, VIEWS)
    plan = SourceTilesSql(registry, "ev", "ks", [0, 1])
    rng = random.Random(11)
    rows: list[list[Any]] = []
    for vi in (0, 1):
        for g in registry.views_of_source("ev")[vi].granularities_ms:
            rows.extend(random_row(rng, plan, vi, g) for _ in range(150))
    rows = [r for r in rows if any(v is not None for v in plan.encoder_input(r)[2])]  # a tile has an entry

    lines = []
    for row in rows:
        kinds, sids, lasts, firsts, seconds = plan.encoder_input(row)
        lines.append(";".join([kinds, _field(sids), _field(lasts), _field(firsts), _field(seconds)]))
    got = jvm_encode(lines)

    want = [plan.encode(row, now_ms=T0)[5].hex() for row in rows]
    assert len(rows) > 300
    assert got == want
