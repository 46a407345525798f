"""The benchmark's contenders that run in this project's venv, one per child process.

    .venv/bin/python -m benchmarks.export.contenders ours|hand SPEC.json RESULT.json

``ours``: ``feature_store.export.engine.export`` of ``ranking_v1`` (values and statuses, every
rule of docs/export.md). ``hand``: :mod:`benchmarks.export.handwritten`'s query, written to
Parquet by DuckDB. Imports happen before the clock starts; the timed part reads the spine and
the archive and writes the output file. ``RESULT.json`` gets the seconds and the process's own
peak RSS (the parent also reads it with ``wait4``).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.export import handwritten
from feature_store.definitions.compiler import load_registry
from feature_store.export.engine import ExportOptions, export

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "ranking_v1"


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    registry = load_registry(ROOT / "registry")
    options = ExportOptions(
        memory_limit=spec.get("memory_limit"), threads=spec.get("threads"), processes=spec.get("processes")
    )
    started = time.perf_counter()
    spine, archive, out = Path(spec["spine"]), Path(spec["archive"]), Path(spec["out"])
    summary = export(registry, SERVICE, spine, archive, out, options)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": summary.rows,
        "features": len(summary.columns) // 2,
        "views": {
            name: {"path": v.path, "events": v.events, "buckets": v.buckets, "s": round(v.seconds, 2)}
            for name, v in summary.views.items()
        },
    }


def run_hand(spec: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"temp_directory": spec["temp_dir"]}  # spills stay in the work folder
    if spec.get("memory_limit"):
        config["memory_limit"] = spec["memory_limit"]
    if spec.get("threads"):
        config["threads"] = spec["threads"]
    out = str(spec["out"]).replace("'", "''")
    started = time.perf_counter()
    con = duckdb.connect(config=config)
    query = handwritten.training_set_query(Path(spec["archive"]), Path(spec["spine"]))
    rows = con.execute(f"COPY ({query}) TO '{out}' (FORMAT PARQUET)").fetchall()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": int(rows[0][0]), "features": len(handwritten.FEATURES)}


def main() -> None:
    which, spec_path, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    result = {"ours": run_ours, "hand": run_hand}[which](spec)
    result["self_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ours replays buckets in worker processes: the largest of them (they run side by side)
    result["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
