"""`fstore export` and `fstore audit consistency` through the CLI, and the audit's counting."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

from feature_store.cli.main import app
from feature_store.core.lookup import FieldStatus
from feature_store.export.audit import audit, values_equal
from feature_store.export.plan import plan_export
from feature_store.export.responses import LoggedFeature, LoggedResponse, read_responses, to_json_line
from tests.unit.export.support import HOUR, T0, locate, make_registry, random_events, write_archive


@pytest.fixture
def case(tmp_path: Path) -> Path:
    registry = make_registry(tmp_path / "registry")
    rng = random.Random(3)
    write_archive(tmp_path / "archive", registry.source("ev"), locate(random_events(rng, 600)))
    times = [T0 + rng.randrange(6 * HOUR) for _ in range(40)]
    users = [f"u{rng.randrange(7)}" for _ in range(40)]
    pq.write_table(
        pa.table({"user_id": users, "ts": pa.array(times, type=pa.timestamp("ms", tz="UTC"))}),
        tmp_path / "spine.parquet",
    )
    return tmp_path


def run(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    return result


def test_export_command_writes_the_output(case: Path) -> None:
    result = run(
        "export", "--registry", str(case / "registry"), "--spine", str(case / "spine.parquet"),
        "--service", "simple", "--archive", str(case / "archive"), "--out", str(case / "out.parquet"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 40 rows" in result.output
    assert pq.read_table(case / "out.parquet").num_rows == 40
    result = run(
        "export", "--registry", str(case / "registry"), "--spine", str(case / "spine.parquet"),
        "--service", "simple", "--archive", str(case / "archive"), "--out", str(case / "replay.parquet"),
        "--engine", "replay",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pq.read_table(case / "replay.parquet").equals(pq.read_table(case / "out.parquet"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--service", "nope"], "unknown feature service 'nope'"),
        (["--service", "simple", "--timestamp-column", "when"], "no timestamp column 'when'"),
    ],
)
def test_export_command_rejects_bad_input_with_exit_2(case: Path, args: list[str], message: str) -> None:
    result = run(
        "export", "--registry", str(case / "registry"), "--spine", str(case / "spine.parquet"),
        "--archive", str(case / "archive"), "--out", str(case / "out.parquet"), *args,
    )  # fmt: skip
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (case / "out.parquet").exists()


def logged_from_export(case: Path, service: str) -> list[LoggedResponse]:
    """What a server agreeing with the export would have logged."""
    registry = make_registry(case / "registry")
    plan = plan_export(registry, service)
    rows = pq.read_table(case / "out.parquet").to_pylist()
    return [
        LoggedResponse(
            t_ms=int(row["ts"].timestamp() * 1000),
            keys={"user_id": row["user_id"]},
            features={
                c.ref: LoggedFeature(row[c.name], FieldStatus[row[c.status_name]]) for c in plan.columns
            },
            registry_version=1,
        )
        for row in rows
    ]


def test_audit_counts_mismatches_per_feature(case: Path) -> None:
    run(
        "export", "--registry", str(case / "registry"), "--spine", str(case / "spine.parquet"),
        "--service", "simple", "--archive", str(case / "archive"), "--out", str(case / "out.parquet"),
    )  # fmt: skip
    logged = logged_from_export(case, "simple")
    present = [
        i for i, r in enumerate(logged) if r.features["v_simple:cnt_all"].status is FieldStatus.PRESENT
    ]
    for i in present[:3]:  # 3 wrong values
        feature = logged[i].features["v_simple:cnt_all"]
        logged[i].features["v_simple:cnt_all"] = LoggedFeature(feature.value + 1, feature.status)
    logged[present[0]].features["v_simple:last_kind_1h"] = LoggedFeature(None, FieldStatus.NOT_FOUND)
    del logged[1].features["v_simple:n_avg_30m"]  # not logged: not compared
    log = case / "responses.jsonl"
    log.write_text("".join(to_json_line(r) + "\n" for r in logged))
    assert [r.keys for r in read_responses(log)] == [r.keys for r in logged]

    registry = make_registry(case / "registry")
    report = audit(registry, "simple", log, case / "archive", threshold=0.05)

    by_ref = {f.ref: f for f in report.features}
    assert (by_ref["v_simple:cnt_all"].value_mismatches, by_ref["v_simple:cnt_all"].rows) == (3, 40)
    assert by_ref["v_simple:last_kind_1h"].mismatches <= 1  # 0 if it was NOT_FOUND already
    assert by_ref["v_simple:n_avg_30m"].rows == 39
    assert sum(f.mismatches for f in report.features) == 3 + by_ref["v_simple:last_kind_1h"].mismatches
    assert [f.ref for f in report.failed] == ["v_simple:cnt_all"]  # 3/40 > 5%

    result = run(
        "audit", "consistency", "--registry", str(case / "registry"), "--responses", str(log),
        "--service", "simple", "--archive", str(case / "archive"), "--threshold", "0.05", "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["ok"] is False
    assert body["rows"] == 40
    result = run(
        "audit", "consistency", "--registry", str(case / "registry"), "--responses", str(log),
        "--service", "simple", "--archive", str(case / "archive"), "--threshold", "0.1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "v_simple:cnt_all" in result.output


def test_value_comparison() -> None:
    assert values_equal(1.0, 1.0)
    assert values_equal("NaN", float("nan"))
    assert not values_equal(1.0, 1.0000001)
    assert values_equal(1.0, 1.0000001, tolerance=1e-6)
    assert values_equal([1, 2], [1, 2])
    assert not values_equal(True, 1)
    assert values_equal(None, None)
