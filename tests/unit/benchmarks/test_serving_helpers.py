"""Pure helpers of the serving benchmark: load summaries, vegeta output, the Feast side's data."""

from __future__ import annotations

import base64
import json
from typing import Any

from benchmarks.serving.bench_serving import field_error_count, rate_list, server_side, table
from benchmarks.serving.common import (
    SCENARIOS,
    bench_registry,
    feature_refs,
    load_summary,
    max_sustained,
    parse_vegeta_csv,
    vegeta_targets,
)
from benchmarks.serving.feast_hook import (
    compare_values,
    feast_bodies,
    feast_views_spec,
    parse_feast_response,
    view_features,
)

# vegeta encode --to csv: timestamp ns, code, latency ns, bytes out, bytes in, error, body, ...
VEGETA_CSV = (
    "1000000000,200,2000000,120,0,,,,0,POST,http://x/get-online-features,\n"
    "1010000000,200,4000000,120,0,,,,1,POST,http://x/get-online-features,\n"
    '1020000000,0,2000000000,120,0,"Post ""http://x"": context deadline exceeded",,,2,POST,http://x,\n'
    "1030000000,500,1000000,120,0,500 Internal Server Error,,,3,POST,http://x,\n"
)


def test_parse_vegeta_csv_latencies_errors_and_elapsed() -> None:
    latencies, errors, elapsed = parse_vegeta_csv(VEGETA_CSV)
    assert latencies == [2.0, 4.0, 2000.0, 1.0]
    assert errors == 2  # the timeout and the 500
    # first request sent at 1.0 s, last answer at 1.02 s + 2 s
    assert abs(elapsed - 2.02) < 1e-9


def test_load_summary_and_sustained() -> None:
    summary = load_summary([1.0] * 98 + [5.0, 9.0], count=100, errors=0, duration_s=10.0, target_rps=10)
    assert summary["achieved_rps"] == 10.0
    assert (summary["p50_ms"], summary["p99_ms"], summary["max_ms"]) == (1.0, 9.0, 9.0)
    assert summary["sustained"]
    assert not load_summary([1.0], count=1, errors=1, duration_s=0.1, target_rps=10)["sustained"]
    # below 95 % of the target rate's requests (one of slack)
    assert not load_summary([1.0] * 93, count=93, errors=0, duration_s=10.0, target_rps=10)["sustained"]
    assert load_summary([1.0] * 94, count=94, errors=0, duration_s=10.0, target_rps=10)["sustained"]
    assert load_summary([1.0] * 9, count=9, errors=0, duration_s=10.0, target_rps=1)["sustained"]


def test_max_sustained_stops_at_first_unsustained_rate() -> None:
    def run(rps: int, ok: bool) -> dict[str, object]:
        return {"summary": {"target_rps": rps, "sustained": ok}}

    assert max_sustained([run(25, True), run(50, True), run(100, False), run(250, True)]) == 50
    assert max_sustained([run(25, False)]) is None
    assert max_sustained([]) is None


def test_rate_list_sorts_and_dedups() -> None:
    assert rate_list("100,25, 50,25") == [25, 50, 100]


def test_field_error_count_sums_views() -> None:
    metrics = (
        "# HELP fstore_serving_field_errors_total x\n"
        'fstore_serving_field_errors_total{view="a"} 3.0\n'
        'fstore_serving_field_errors_total{view="b"} 2.0\n'
        'fstore_serving_field_errors_created{view="a"} 1.7e9\n'
    )
    assert field_error_count(metrics) == 5.0


def test_vegeta_targets_one_json_line_per_body() -> None:
    text = vegeta_targets("http://h/p", [{"a": 1}, {"b": 2}])
    lines = text.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["method"] == "POST"
    assert first["url"] == "http://h/p"
    assert json.loads(base64.b64decode(first["body"])) == {"a": 1}


def test_feast_side_mirrors_our_views_and_values() -> None:
    registry = bench_registry()
    refs = feature_refs(registry, 50)
    views = view_features(registry, refs)
    assert sum(len(f) for f in views.values()) == 50
    assert len(views) == 12
    # two entities: b0 known everywhere, b1 NOT_FOUND in the first view and NULL in one feature
    first_view = next(iter(views))
    values: list[list[Any]] = [[1] * 50, [2] * 50]
    statuses = [["PRESENT"] * 50, ["PRESENT"] * 50]
    for j, ref in enumerate(refs):
        if ref.startswith(f"{first_view}:"):
            statuses[1][j], values[1][j] = "NOT_FOUND", None
    statuses[0][49], values[0][49] = "NULL_VALUE", None
    specs = feast_views_spec(registry, refs, ["b0", "b1"], values, statuses)
    by_name = {s["name"]: s for s in specs}
    assert by_name[first_view]["rows"]["user_id"] == ["b0"]
    last_view, _, last_feature = refs[49].partition(":")
    assert by_name[last_view]["rows"][last_feature] == [None, 2]
    assert by_name[first_view]["ttl_s"] == (registry.view(first_view).ttl_ms or 0) // 1000


def test_parse_feast_response_and_compare() -> None:
    refs = ["v1:a", "v2:b"]
    response = {
        "metadata": {"feature_names": ["user_id", "v1__a", "v2__b"]},
        "results": [
            {"values": ["b0", "b1"], "statuses": ["PRESENT", "PRESENT"]},
            {"values": [1, None], "statuses": ["PRESENT", "NOT_FOUND"]},
            {"values": [["x"], 0.5], "statuses": ["PRESENT", "PRESENT"]},
        ],
    }
    got = parse_feast_response(response, refs)
    assert got == [[1, ["x"]], [None, 0.5]]
    same = compare_values(refs, ["b0", "b1"], [[1, ["x"]], [None, 0.5]], got)
    assert same["mismatches"] == 0
    assert same["non_null"] == 3
    # an int is not a float, even if equal
    assert compare_values(refs, ["b0"], [[1.0, ["x"]]], got[:1])["mismatches"] == 1


def test_feast_bodies_random_entities_of_the_batch_size() -> None:
    bodies = feast_bodies(SCENARIOS["100x50"], ["v:a"], 10, 3)
    assert len(bodies) == 3
    assert all(len(b["entities"]["user_id"]) == 100 for b in bodies)
    assert all(e.startswith("b") and 0 <= int(e[1:]) < 10 for b in bodies for e in b["entities"]["user_id"])
    assert bodies == feast_bodies(SCENARIOS["100x50"], ["v:a"], 10, 3)  # seeded


def test_server_side_sums_the_series_of_every_worker() -> None:
    name = "fstore_serving_request_duration_seconds"

    def line(kind: str, service: str, worker: int, value: float) -> str:
        labels = f'feature_service="{service}",method="GetOnlineFeatures",worker="{worker}"'
        return f"{name}_{kind}{{{labels}}} {value}"

    metrics = "\n".join(
        [
            line("sum", "_refs", 0, 0.5),
            line("count", "_refs", 0, 10.0),
            line("sum", "_refs", 1, 0.25),
            line("count", "_refs", 1, 5.0),
            line("count", "abuse_v1", 1, 7.0),
        ]
    )
    assert server_side(metrics) == (0.75, 15.0)


def test_table_shows_the_bare_drivers_tail_at_each_rate() -> None:
    run = {"summary": {"target_rps": 500, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 9.0, "achieved_rps": 500.0,
                       "errors": 0}}  # fmt: skip
    result = {
        "scenarios": {
            "1x20": {
                "rates": [500],
                "fstore": {"runs": [run], "max_sustainable_rps": 500},
                "floor_driver_at_rate": {
                    "runs": [{"rps_target": 500, "p50_ms": 0.8, "p99_ms": 5.6, "rps_achieved": 500.1}]
                },
            }
        },
        "load_average_start": [0.5, 0.5, 0.5],
    }
    row = next(line for line in table(result).splitlines() if line.startswith("| 1x20 | 500/s"))
    assert row.endswith("| 0.8 / 5.6 (500.1/s) |")
