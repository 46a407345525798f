"""Hook for the Feast comparison (to be filled in by the lead; nothing here installs Feast).

``bench_serving --target feast`` calls :func:`run_feast` once per scenario with exactly what the
fstore run uses: the same feature list (``refs``, "view:feature"), the same entity ids
(``b0`` .. ``b{entities-1}``, join key ``user_id``), the same keyspace of tiles, rate and
duration. Return a dict in the fstore layout so the JSON files compare field by field::

    {
      "scenario": {"name": "1x20", "batch": 1, "features": 20},
      "views": [...],                       # Feast feature views read
      "rps_target": 200,
      "server": {"summary": {"count", "rps", "average_ms", "p50_ms", "p90_ms", "p99_ms",
                             "status_codes", ...}},
      "notes": "how Feast was set up (online store, materialization, server type)"
    }

Suggested setup: a Feast repo whose feature views mirror the registry's (Feast has no tiles,
so materialize the *finalized* values of each window into its online store, e.g. its Cassandra
online store on the same local Cassandra), ``feast serve`` (HTTP) or the Go feature server
(gRPC, drivable with ghz like fstore: see ``benchmarks.serving.common.run_ghz``), and a load
generator at the same fixed rate.
"""

from __future__ import annotations

from typing import Any

from benchmarks.serving.common import Scenario


def run_feast(
    scenario: Scenario, refs: list[str], *, keyspace: str, entities: int, rps: int, duration_s: float
) -> dict[str, Any]:
    raise NotImplementedError(
        "Feast comparison not set up yet: implement benchmarks/serving/feast_hook.py:run_feast "
        f"(scenario {scenario.name}, {len(refs)} features, {entities} entities, {rps} rps, {duration_s}s)"
    )
