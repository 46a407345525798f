"""`fstore apply` against the real Cassandra and Kafka: snapshots, tables, topics, refusals."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner, Result

from feature_store.cli.main import app
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def fstore(*args: str, env: dict[str, str]) -> Result:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **env})
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def workspace(tmp_path: Path, stack: Stack) -> tuple[Path, dict[str, str], str]:
    """A copy of the example registry whose topics are unique, and a unique keyspace."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    registry = tmp_path / "registry"
    shutil.copytree(ROOT / "registry", registry)
    for yaml in registry.rglob("*.yaml"):
        yaml.write_text(yaml.read_text().replace("topic: events.", f"topic: {prefix}.events."))
    env = {
        "FSTORE_REGISTRY": str(registry),
        "FSTORE_REGISTRY_STORE": f"cql://127.0.0.1:{stack.cassandra_port}/{prefix}",
        "FSTORE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
    }
    return registry, env, prefix


def test_apply_creates_tables_topics_and_a_numbered_snapshot(
    workspace: tuple[Path, dict[str, str], str], stack: Stack
) -> None:
    _, env, prefix = workspace

    planned = fstore("plan", env=env)
    first = fstore("apply", "-m", "first", env=env)
    again = fstore("apply", env=env)

    assert planned.exit_code == 0, planned.output
    assert f"create topic {prefix}.events.like" in planned.output
    assert first.exit_code == 0, first.output
    assert "version 1" in first.output
    assert again.exit_code == 0
    assert "version 2" not in again.output  # nothing changed: no new version
    topics = set(AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10).topics)
    assert {f"{prefix}.events.like", f"{prefix}.events.like.dlq"} <= topics
    from feature_store.adapters.cql import CqlConfig, make_cluster  # noqa: PLC0415

    cluster = make_cluster(CqlConfig(port=stack.cassandra_port))
    try:
        tables = {
            r.table_name
            for r in cluster.connect().execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (prefix,)
            )
        }
    finally:
        cluster.shutdown()
    assert {"registry_versions", "fe_user", "fe_user_pair"} <= tables
    history = fstore("history", "--json", env=env)
    assert '"version": 1' in history.output


def test_apply_refuses_a_breaking_change_and_rollback_restores(
    workspace: tuple[Path, dict[str, str], str],
) -> None:
    registry, env, _ = workspace
    assert fstore("apply", env=env).exit_code == 0
    matching = registry / "matching" / "matching.yaml"
    text = matching.read_text()
    assert "where: accepted == true" in text
    matching.write_text(text.replace("where: accepted == true", "where: accepted == false", 1))

    refused = fstore("apply", env=env)
    forced = fstore("apply", "--allow-breaking", "-m", "redefine matches_accepted", env=env)
    rolled = fstore("rollback", "1", "--allow-breaking", env=env)

    assert refused.exit_code == 2, refused.output
    assert "breaking" in refused.output.lower()
    assert forced.exit_code == 0, forced.output
    assert rolled.exit_code == 0, rolled.output
    assert "version 3" in rolled.output
