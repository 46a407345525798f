"""Start, probe and stop the local Kafka (KRaft) and Cassandra JVMs.

Each service runs as a child JVM from the jars in .stack/lib/<service>, bound to
127.0.0.1, with its pid in .stack/run/<service>.pid. ``stop`` only signals a pid
that this stack wrote *and* whose command line still names this checkout's
config, so a recycled pid or someone else's broker is never touched.
Flink is not a service here: PyFlink runs jobs on an in-process MiniCluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from feature_store.stack.layout import Layout, Ports

KAFKA_HEAP = os.environ.get("FSTORE_KAFKA_HEAP", "512m")
CASSANDRA_HEAP = os.environ.get("FSTORE_CASSANDRA_HEAP", "1024m")

# From Cassandra's conf/jvm17-server.options plus what an embedded 5.0 needs on JDK 17.
_CASSANDRA_JDK17 = [
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports",
    "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports",
    "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports",
    "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports",
    "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports",
    "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports",
    "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports",
    "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports",
    "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-exports",
    "java.management/com.sun.jmx.remote.security=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens",
    "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens",
    "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens",
    "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.io=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.nio=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens",
    "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
    "--add-opens",
    "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]


class StackError(RuntimeError):
    """A service did not start or stop; the message carries its log tail and a hint."""


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    port: int
    start_timeout_s: float
    prepare: Callable[[Layout, Ports], list[str]]  # renders config, returns the JVM command
    probe: Callable[[Ports], bool]  # True once the service answers real requests
    log_file: str  # the service's own log, under .stack/logs
    hint: str


def _render(template: Path, target: Path, values: dict[str, str]) -> Path:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:
        raise StackError(f"unrendered placeholder left in {template}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


def _classpath(layout: Layout, service: str) -> str:
    lib = layout.lib(service)
    if not any(lib.glob("*.jar")):
        raise StackError(f"no jars in {lib}; run `fstore dev fetch` first")
    return f"{lib}/*"


def _prepare_kafka(layout: Layout, ports: Ports) -> list[str]:
    data, conf = layout.data("kafka"), layout.conf("kafka")
    data.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    values = {
        "KAFKA_PORT": str(ports.kafka),
        "KAFKA_CONTROLLER_PORT": str(ports.kafka_controller),
        "DATA_DIR": str(data),
        "LOG_DIR": str(layout.logs),
    }
    props = _render(layout.conf_templates / "kafka-server.properties", conf / "server.properties", values)
    log4j = _render(layout.conf_templates / "kafka-log4j2.yaml", conf / "log4j2.yaml", values)
    cp = _classpath(layout, "kafka")
    java = _java()
    if not (data / "meta.properties").exists():
        cluster_id = uuid.uuid4().hex[:22]
        fmt = subprocess.run(
            [java, "-Xmx256m", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id]
            + ["-c", str(props), "--ignore-formatted"],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
    return [
        java,
        f"-Xms{KAFKA_HEAP}",
        f"-Xmx{KAFKA_HEAP}",
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={layout.logs}",
        f"-Dlog4j2.configurationFile=file:{log4j}",
        "-cp",
        cp,
        "kafka.Kafka",
        str(props),
    ]


def _prepare_cassandra(layout: Layout, ports: Ports) -> list[str]:
    data, conf = layout.data("cassandra"), layout.conf("cassandra")
    data.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    values = {
        "CASSANDRA_PORT": str(ports.cassandra),
        "CASSANDRA_STORAGE_PORT": str(ports.cassandra_storage),
        "DATA_DIR": str(data),
    }
    yaml = _render(layout.conf_templates / "cassandra.yaml", conf / "cassandra.yaml", values)
    logback = _render(layout.conf_templates / "cassandra-logback.xml", conf / "logback.xml", values)
    jamm = sorted(layout.lib("cassandra").glob("jamm-*.jar"))
    if not jamm:
        raise StackError(
            "the jamm agent jar is missing from .stack/lib/cassandra; run `fstore dev fetch --force`"
        )
    return [
        _java(),
        f"-Xms{CASSANDRA_HEAP}",
        f"-Xmx{CASSANDRA_HEAP}",
        "-Xss512k",
        *_CASSANDRA_JDK17,
        f"-javaagent:{jamm[-1]}",
        f"-Dcassandra.config=file://{yaml}",
        f"-Dcassandra.storagedir={data}",
        f"-Dcassandra.logdir={layout.logs}",
        f"-Dlogback.configurationFile=file://{logback}",
        "-Dcassandra-foreground=yes",
        f"-Dcassandra.jmx.local.port={ports.cassandra_jmx}",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.load_ring_state=false",
        "-Dcassandra.ring_delay_ms=100",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-Dcassandra.migration_task_wait_in_seconds=0",
        "-cp",
        _classpath(layout, "cassandra"),
        "org.apache.cassandra.service.CassandraDaemon",
    ]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def probe_kafka(ports: Ports) -> bool:
    if not _port_open(ports.kafka):
        return False
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - heavy import only when probing

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports.kafka}", "log_level": 0})
    try:
        meta = admin.list_topics(timeout=3)
    except Exception:
        return False
    return bool(meta.brokers)


def warm_up_kafka(ports: Ports, timeout_s: float = 60.0) -> None:
    """Make the group coordinator ready: a fresh broker creates __consumer_offsets on the first
    group request and answers NOT_COORDINATOR until then, which every consumer would otherwise
    have to ride out."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415

    consumer = Consumer(
        {"bootstrap.servers": f"127.0.0.1:{ports.kafka}", "group.id": "fstore-warm-up", "log_level": 0}
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                consumer.committed([TopicPartition("__fstore_warm_up", 0)], timeout=5)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def probe_cassandra(ports: Ports) -> bool:
    if not _port_open(ports.cassandra):
        return False
    from feature_store.adapters.cql import CqlConfig, make_cluster  # noqa: PLC0415

    cluster = make_cluster(CqlConfig(port=ports.cassandra, connect_timeout_s=3))
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local").one()
        return row is not None
    except Exception:
        return False
    finally:
        cluster.shutdown()


SERVICES: dict[str, Service] = {
    "cassandra": Service(
        name="cassandra",
        port=9042,
        start_timeout_s=float(os.environ.get("FSTORE_CASSANDRA_START_TIMEOUT", "150")),
        prepare=_prepare_cassandra,
        probe=probe_cassandra,
        log_file="system.log",
        hint="is port 9042/7000/7199 taken? is Java 17 on PATH? `rm -rf .stack/data/cassandra` resets it",
    ),
    "kafka": Service(
        name="kafka",
        port=9092,
        start_timeout_s=float(os.environ.get("FSTORE_KAFKA_START_TIMEOUT", "90")),
        prepare=_prepare_kafka,
        probe=probe_kafka,
        log_file="kafka-server.log",
        hint="is port 9092/9093 taken? `rm -rf .stack/data/kafka` resets the broker",
    ),
}


# Services this process started: kept so the Popen objects are not collected while the JVM
# runs (and so stop() can reap them).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _read_pid(layout: Layout, name: str) -> int | None:
    try:
        return int(layout.pidfile(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_ours(layout: Layout, pid: int) -> bool:
    """The pid is alive and its command line names this checkout's .stack folder."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(layout.stack).encode() in cmdline


def running_pid(layout: Layout, name: str) -> int | None:
    pid = _read_pid(layout, name)
    return pid if pid is not None and _is_ours(layout, pid) else None


def tail(path: Path, lines: int = 25) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


def start(layout: Layout, ports: Ports, name: str, *, on_wait: Callable[[str], None] | None = None) -> str:
    """Start ``name`` unless it already runs; return what was done. Blocks until it is ready."""
    svc = SERVICES[name]
    pid = running_pid(layout, name)
    if pid is not None:
        if svc.probe(ports):
            return f"{name} already running (pid {pid})"
    elif svc.probe(ports):
        return f"{name} already answering on its port (not started by this checkout; reusing it)"
    else:
        pid = _spawn(layout, ports, svc)
    _wait_ready(layout, ports, svc, pid, on_wait)
    if name == "kafka":
        warm_up_kafka(ports)
    return f"{name} ready (pid {pid})"


def _spawn(layout: Layout, ports: Ports, svc: Service) -> int:
    port = getattr(ports, svc.name)
    if _port_open(port):
        raise StackError(
            f"{svc.name}: port {port} is in use by another process that does not answer as {svc.name}; "
            f"free it or set FSTORE_{svc.name.upper()}_PORT"
        )
    cmd = svc.prepare(layout, ports)
    out = layout.logs / f"{svc.name}.out"
    layout.pidfile(svc.name).parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=layout.data(svc.name),
            start_new_session=True,  # survives the CLI; `fstore dev down` stops it by pid
        )
    _CHILDREN[proc.pid] = proc
    layout.pidfile(svc.name).write_text(str(proc.pid))
    return proc.pid


def _wait_ready(
    layout: Layout, ports: Ports, svc: Service, pid: int, on_wait: Callable[[str], None] | None
) -> None:
    deadline = time.monotonic() + svc.start_timeout_s
    started = time.monotonic()
    while time.monotonic() < deadline:
        if svc.probe(ports):
            return
        if _exited(pid):
            raise StackError(_failure(layout, svc, "exited during start-up"))
        if on_wait is not None:
            on_wait(f"waiting for {svc.name} ({time.monotonic() - started:.0f}s)")
        time.sleep(1.0)
    raise StackError(_failure(layout, svc, f"not ready after {svc.start_timeout_s:.0f}s"))


def _exited(pid: int) -> bool:
    """Whether a service we started has died. Asks the process itself, not /proc/<pid>/cmdline,
    which is briefly empty while the java launcher execs the JVM."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _failure(layout: Layout, svc: Service, what: str) -> str:
    return (
        f"{svc.name} {what}.\n--- last lines of {layout.logs / svc.log_file} ---\n"
        f"{tail(layout.logs / svc.log_file)}\n--- last lines of {layout.logs / (svc.name + '.out')} ---\n"
        f"{tail(layout.logs / (svc.name + '.out'), 10)}\nhint: {svc.hint}"
    )


def stop(layout: Layout, name: str, timeout_s: float = 30.0) -> str:
    pid = running_pid(layout, name)
    pidfile = layout.pidfile(name)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return f"{name} not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _is_ours(layout, pid):
        _reap(pid)
        time.sleep(0.2)
    if _is_ours(layout, pid):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
    pidfile.unlink(missing_ok=True)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=10)
    return f"{name} stopped (pid {pid})"


def _reap(pid: int) -> None:
    """Collect the zombie when the service is our own child (e.g. started by a test fixture)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(frozen=True, slots=True)
class Status:
    name: str
    pid: int | None
    ready: bool
    port: int


def status(layout: Layout, ports: Ports) -> list[Status]:
    return [
        Status(name, running_pid(layout, name), svc.probe(ports), getattr(ports, name))
        for name, svc in SERVICES.items()
    ]
