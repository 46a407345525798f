"""Building a PyFlink StreamExecutionEnvironment the same way for every job.

Locally this runs on PyFlink's in-process MiniCluster; under the Flink
Kubernetes Operator the same code runs inside the cluster and the jar paths
come from the image (FSTORE_FLINK_JARS).
"""

from __future__ import annotations

import os
import site
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment


StateBackend = Literal["hashmap", "rocksdb"]


@dataclass(frozen=True, slots=True)
class FlinkSettings:
    parallelism: int = 1
    # PyFlink runs Python functions ~10x faster in `thread` mode (PEMJA, in the JVM) than
    # in `process` mode (Beam workers over gRPC); see docs/architecture.md.
    execution_mode: str = "thread"
    checkpoint_interval_ms: int | None = None
    checkpoint_dir: str | None = None
    restore_from: str | None = None
    jars: tuple[str, ...] = ()
    # where keyed state lives: "hashmap" (objects on the JVM heap: fastest while the tiles fit
    # in memory) or "rocksdb" (on local disk, serialized on every access, incremental
    # checkpoints: for state larger than the heap)
    state_backend: StateBackend = "hashmap"


def connector_jars() -> tuple[str, ...]:
    """file:// URLs of the job's jars: $FSTORE_FLINK_JARS (';'-separated), else the Kafka connector
    from .stack/lib/flink and the job's JVM side with its runtime from .stack/lib/flink-jobs."""
    env = os.environ.get("FSTORE_FLINK_JARS")
    if env:
        return tuple(j for j in env.split(";") if j)
    from feature_store.stack.layout import Layout  # noqa: PLC0415 - local development only

    layout = Layout.default()
    return tuple(p.resolve().as_uri() for p in (layout.kafka_connector_jar, *layout.job_jars))


def _expose_interpreter_paths() -> None:
    """Let thread-mode (PEMJA) Python inside the JVM import what this interpreter imports.

    PEMJA embeds the base interpreter's libpython, which does not see a virtualenv's
    site-packages; the JVM inherits PYTHONPATH, so put them there before it starts.
    """
    wanted = [p for p in (*site.getsitepackages(), str(Path(__file__).resolve().parents[2])) if p]
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*wanted, *current]))


def create_environment(settings: FlinkSettings) -> StreamExecutionEnvironment:
    _expose_interpreter_paths()
    from pyflink.common import Configuration  # noqa: PLC0415 - keep pyflink out of import time
    from pyflink.datastream import StreamExecutionEnvironment  # noqa: PLC0415

    conf = Configuration()
    conf.set_string("python.execution-mode", settings.execution_mode)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("pipeline.jars", ";".join(settings.jars or connector_jars()))
    # A small MiniCluster: this machine has 2 cores and Kafka/Cassandra share them.
    conf.set_string("taskmanager.memory.process.size", os.environ.get("FSTORE_FLINK_TM_MEMORY", "1536m"))
    conf.set_string("rest.bind-address", "127.0.0.1")
    conf.set_string("rest.address", "127.0.0.1")
    # chained operators hand records over without a deep copy (a tenth of the JVM's time on the
    # SQL path otherwise); no operator of the job keeps a reference to a record it was given
    conf.set_string("pipeline.object-reuse", "true")
    if settings.checkpoint_interval_ms:
        conf.set_string("execution.checkpointing.interval", f"{settings.checkpoint_interval_ms}ms")
        conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        if settings.checkpoint_dir:
            conf.set_string("execution.checkpointing.dir", settings.checkpoint_dir)
    conf.set_string("state.backend.type", settings.state_backend)
    if settings.state_backend == "rocksdb":
        conf.set_string("execution.checkpointing.incremental", "true")
    if settings.restore_from:
        conf.set_string("execution.state-recovery.path", settings.restore_from)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(settings.parallelism)
    return env
