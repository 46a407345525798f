"""Tiles merged in SQL equal the core fold: the generated query run by DuckDB on the router's rows
gives the very tiles, versions and bytes :meth:`ViewTiles.apply` gives event by event."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from feature_store.core.model import Registry
from feature_store.core.tiles import TileKey, ViewAggregator
from feature_store.definitions.compiler import load_registry
from feature_store.stream.tile_sql import SourceTilesSql, sql_ineligible
from feature_store.stream.tile_writer import KeyTiles, Routed, ViewTiles, parse_tile_state_key, unpack
from tests.unit.export.support import ENTITIES, HOUR, SCHEMA, T0

VIEWS = """
sources:
  - name: ev
    topic: test.ev
    schema: ev.avsc
    event_time: event_time
feature_views:
  - name: v_ints
    entity: user
    source: ev
    ttl: 2h
    features:
      - {name: events, aggregation: count, windows: [1h, {length: 2h, granularity: 1h}]}
      - {name: flagged, aggregation: count, where: flag, windows: [{length: 1h, granularity: 5m}]}
      - {name: amounts, aggregation: count, field: amount, windows: [{length: 1h, granularity: 10m}]}
      - {name: n_sum, aggregation: sum, field: n, windows: [{length: 2h, granularity: 1h}]}
      - name: n_min
        aggregation: min
        field: n
        where: "kind != 'a'"
        windows: [{length: 1h, granularity: 5m}]
      - {name: n_max, aggregation: max, field: n, windows: [{length: 30m, granularity: 5m}]}
      - {name: n_avg, aggregation: avg, field: n, windows: [{length: 2h, granularity: 1h}]}
      - {name: all_events, aggregation: count}
      - {name: n_max_all, aggregation: max, field: n, where: flag}
  - name: v_peer
    entity: user
    source: ev
    entity_keys: {user_id: peer_id}
    features:
      - {name: peer_events, aggregation: count, where: "n > 40", windows: [{length: 30m, granularity: 5m}]}
  - name: v_python
    entity: user
    source: ev
    features:
      - {name: total, aggregation: count}
      - {name: amount_sum, aggregation: sum, field: amount, windows: [1h]}
  - name: v_distinct
    entity: user
    source: ev
    entity_keys: {user_id: peer_id}
    features:
      - {name: kinds, aggregation: count_distinct, field: kind, windows: [{length: 1h, granularity: 5m}]}
      - {name: users, aggregation: count_distinct, field: user_id, windows: [{length: 2h, granularity: 1h}]}
      - {name: n_avg, aggregation: avg, field: n, windows: [{length: 2h, granularity: 1h}]}
  - name: v_last
    entity: user
    source: ev
    features:
      - {name: last_n, aggregation: last, field: n, windows: [{length: 2h, granularity: 1h}]}
      - {name: last_kind, aggregation: last, field: kind}
      - {name: recent, aggregation: last_n, n: 3, field: kind, windows: [{length: 1h, granularity: 5m}]}
      - {name: recent_flags, aggregation: last_n, n: 2, field: flag}
  - name: v_floats
    entity: user
    source: ev
    features:
      - {name: amount_max, aggregation: max, field: amount, windows: [1h]}
"""


def registry_at(root: Path, views: str) -> Registry:
    (root / "feature_store.yaml").write_text("project: tilesql\n")
    (root / "entities.yaml").write_text(ENTITIES)
    (root / "ev.yaml").write_text(views)
    (root / "ev.avsc").write_text(json.dumps(SCHEMA))
    return load_registry(root)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return registry_at(tmp_path_factory.mktemp("registry"), VIEWS)


def index_of(registry: Registry, name: str) -> int:
    """A view's index among its source's views (the router's key prefix)."""
    return [v.name for v in registry.views_of_source("ev")].index(name)


def aggregator(registry: Registry, index: int) -> ViewAggregator:
    view = registry.views_of_source("ev")[index]
    return ViewAggregator(view, {f.name: f.type for f in registry.source("ev").fields})


def test_only_views_whose_every_ir_the_jvm_merges_exactly_are_merged_in_sql(
    registry: Registry,
) -> None:
    def why(name: str) -> str | None:
        index = index_of(registry, name)
        return sql_ineligible(registry.views_of_source("ev")[index], aggregator(registry, index))

    assert why("v_ints") is None
    assert why("v_peer") is None
    assert why("v_distinct") is None
    assert why("v_last") is None
    assert why("v_python") == "the JVM does not merge its sum of float64 IR exactly"
    assert why("v_floats") == "the JVM does not merge its max of float64 IR exactly"
    with pytest.raises(ValueError, match="v_python"):
        SourceTilesSql(registry, "ev", "ks", [index_of(registry, "v_python")])


def random_routed(rng: random.Random, n: int, ints: int, peer: int) -> list[Routed]:
    routed = []
    for _ in range(n):
        t = T0 + rng.randrange(3 * HOUR) - rng.randrange(2) * 5 * 60_000 * rng.randrange(3)
        user = f"u{rng.randrange(4)}"
        fields = {
            "n": rng.randrange(-5, 50),
            "flag": rng.random() < 0.4,
            "kind": rng.choice("abc"),
            "amount": rng.choice([None, 1.5, -2.0]),
        }
        routed.append(Routed(f"{ints}\x1f{user}", t, fields))
        routed.append(Routed(f"{peer}\x1fp{rng.randrange(3)}", t, {"n": fields["n"]}))
    return routed


def test_the_sql_merge_of_one_event_irs_gives_the_tiles_of_the_core_fold(registry: Registry) -> None:
    rng = random.Random(7)
    ints, peer = index_of(registry, "v_ints"), index_of(registry, "v_peer")
    plan = SourceTilesSql(registry, "ev", "ks", [ints, peer])
    events = random_routed(rng, 400, ints, peer)

    # the job's Python path: fold event by event (versions count the changes of each tile)
    source = registry.source("ev")
    views = registry.views_of_source("ev")
    expected: dict[tuple[int, str, TileKey], tuple[int, bytes]] = {}
    folded: dict[tuple[int, str], dict[str, bytes]] = {}
    for r in events:
        prefix, _, entity = r.key.partition("\x1f")
        backing = folded.setdefault((int(prefix), entity), {})
        ViewTiles(views[int(prefix)], source).apply(KeyTiles(backing), r.event_time_ms, r.fields)
    for (vi, entity), tiles in folded.items():
        for skey, packed in tiles.items():
            expected[(vi, entity, parse_tile_state_key(skey))] = unpack(packed)

    # the SQL path: one-event IRs per event, merged by the generated query
    rows = [row for r in events if (row := plan.route(r)) is not None]
    columns = plan.routed_columns
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE routed (vi INTEGER, entity VARCHAR, t BIGINT, "
        + ", ".join(f"{c} BIGINT" for c in columns[3:])
        + ")"
    )
    con.executemany(f"INSERT INTO routed VALUES ({', '.join('?' * len(columns))})", rows)
    result = con.execute(plan.sql("routed")).fetchall()
    assert [d[0] for d in con.description] == list(plan.tile_columns)

    got: dict[tuple[int, str, TileKey], tuple[int, bytes]] = {}
    for tile in result:
        insert, entity_key, view_name, g, start, payload, ttl, timestamp_us = plan.encode(tile, now_ms=T0)
        vi, version = tile[0], tile[4]
        assert view_name == views[vi].name
        assert insert.startswith(f"INSERT INTO ks.{views[vi].table} ")
        assert ttl >= 1 if g else ttl == 0  # lifetime tiles never expire
        assert timestamp_us == start * 1000 + version
        got[(vi, entity_key.decode(), (g, start))] = (version, payload)

    assert len(got) > 50
    assert got == expected


def test_an_event_no_definition_accepts_gives_no_row(registry: Registry) -> None:
    peer = index_of(registry, "v_peer")
    plan = SourceTilesSql(registry, "ev", "ks", [peer])

    assert plan.route(Routed(f"{peer}\x1fp1", T0, {"n": 3})) is None
    row = plan.route(Routed(f"{peer}\x1fp1", T0, {"n": 41}))
    assert row == [peer, "p1", T0, 1]


def test_an_exact_sum_past_int64_reaches_the_tile_whole(registry: Registry) -> None:
    ints = index_of(registry, "v_ints")
    plan = SourceTilesSql(registry, "ev", "ks", [ints])
    row: list[object] = [ints, "u1", HOUR, T0, 2] + [None] * (len(plan.tile_columns) - 5)
    huge = Decimal("12345678901234567890123")
    [sum_column] = [c for c in plan.exact_sum_columns if c != "a6"]  # n_sum (a6: n_avg's sum)
    row[plan.tile_columns.index(sum_column)] = huge
    row[plan.tile_columns.index("l" + sum_column[1:])] = T0 + 5

    _, g, _, state = plan.tile_state(row)

    assert g == HOUR
    assert int(huge) in state.irs
    assert state.last_ms.count(T0 + 5) == 1


def test_the_keyed_mergers_plan_lays_out_each_tile_as_the_sql_encoder_does(registry: Registry) -> None:
    """jobs/jvm TileMerger's plan: per view and granularity the same kinds and slot ids the SQL
    path hands the encoder, each slot fed by the definition whose inputs sit at ``at``."""
    indices = [index_of(registry, name) for name in ("v_ints", "v_peer", "v_distinct", "v_last")]
    plan = SourceTilesSql(registry, "ev", "ks", indices)
    merge = plan.merge_plan()
    ops = {"i": {"sum", "min", "max"}, "t": {"avg"}, "h": {"hll"}, "r": {"last"}}

    assert [v["vi"] for v in merge["views"]] == indices
    for view in merge["views"]:
        defs = plan.definitions(view["vi"])
        assert [d["at"] for d in view["defs"]] == [3 + d.first_input for d in defs]
        views = registry.views_of_source("ev")
        assert view["name"] == views[view["vi"]].name
        assert view["insert"].startswith(f"INSERT INTO ks.{views[view['vi']].table} ")
        for gran in view["grans"]:
            row = [view["vi"], "u1", gran["g"], 0, 1] + [None] * (len(plan.tile_columns) - 5)
            kinds, sids, *_ = plan.encoder_input(row)
            assert (gran["kinds"], gran["sids"]) == (kinds, sids)
            for kind, d in zip(gran["kinds"], gran["slots"], strict=True):
                assert view["defs"][d]["op"] in ops[kind]
            assert (gran["retention"] is None) == (gran["g"] == 0)
