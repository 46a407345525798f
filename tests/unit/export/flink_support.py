"""A small export case for the Flink batch engine: every view of the test registry in one service,
an archive with dirty events, replayed duplicates, dead letters and files of an older schema."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.core.model import Registry
from feature_store.definitions.compiler import load_registry
from tests.unit.export.support import (
    ENTITIES,
    HOUR,
    MINUTE,
    PROJECT,
    SCHEMA,
    SOURCES,
    T0,
    locate,
    random_events,
    write_archive,
    write_dead_letters,
)

SERVICE = "everything"  # v_user, v_pair, v_peer and v_simple: served names clash, so --full-names
EVERYTHING = f"""
  - name: {SERVICE}
    features: ["v_user:*", "v_pair:*", "v_peer:*", "v_simple:*"]
"""


@dataclass(frozen=True, slots=True)
class Case:
    registry_dir: Path
    registry: Registry
    archive: Path
    spine: Path


def build(root: Path, seed: int, n_events: int = 1200, spine_rows: int = 300) -> Case:
    registry_dir = root / "registry"
    registry_dir.mkdir(parents=True)
    (registry_dir / "feature_store.yaml").write_text(PROJECT)
    (registry_dir / "entities.yaml").write_text(ENTITIES)
    (registry_dir / "ev.yaml").write_text(SOURCES + EVERYTHING)
    (registry_dir / "ev.avsc").write_text(json.dumps(SCHEMA))
    registry = load_registry(registry_dir)
    source = registry.source("ev")
    rng = random.Random(seed)

    archive = root / "archive"
    located = locate(random_events(rng, n_events))
    replayed = located[: n_events // 10]  # the archiver re-wrote these after a crash
    write_archive(archive, source, located + replayed, rows_per_file=rng.choice([17, 64, 500]))
    late = sorted((p, o) for _, p, o in located if rng.random() < 0.05)
    write_dead_letters(archive, source, [("later_than_allowed_lateness", p, o) for p, o in late])
    # an older schema version without two fields, on a partition of its own
    fields = cast(list[dict[str, Any]], SCHEMA["fields"])
    old_schema = dict(SCHEMA, fields=[f for f in fields if f["name"] not in ("flag", "country")])
    old = dataclasses.replace(source, schema_json=json.dumps(old_schema))
    older = random_events(rng, n_events // 5, dirty=False)
    write_archive(archive, old, [(e, 2, i) for i, e in enumerate(older)], rows_per_file=40)

    rows: dict[str, list[Any]] = {"label": [], "user_id": [], "peer_id": [], "ts": []}
    for i in range(spine_rows):
        t = T0 + rng.randrange(-HOUR, 9 * HOUR)
        if rng.random() < 0.2:
            t -= t % (5 * MINUTE)  # exactly on tile boundaries
        user = f"p{rng.randrange(5)}" if rng.random() < 0.2 else f"u{rng.randrange(8)}"  # p*: v_peer's keys
        for name, value in (
            ("label", i % 3 == 0),
            ("user_id", user),
            ("peer_id", f"p{rng.randrange(5)}"),
            ("ts", t),
        ):
            rows[name].append(value)
    types = {
        "label": pa.bool_(),
        "user_id": pa.string(),
        "peer_id": pa.string(),
        "ts": pa.timestamp("ms", tz="UTC"),
    }
    table = pa.table({name: pa.array(values, type=types[name]) for name, values in rows.items()})
    pq.write_table(table, root / "spine.parquet")
    return Case(registry_dir, registry, archive, root / "spine.parquet")
