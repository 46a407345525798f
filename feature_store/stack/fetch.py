"""Resolve the stack's jars from Maven Central through the version-pinned stack/pom.xml."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

from feature_store.stack.layout import Layout

MODULES = ("kafka", "cassandra", "flink", "flink-jobs")


class FetchError(RuntimeError):
    pass


def _pom_digest(layout: Layout) -> str:
    h = hashlib.sha256()
    # every pom, and the sources of the job's JVM side (built by the same mvn run)
    jvm = layout.root / "jobs" / "jvm"
    inputs = [*layout.pom.parent.glob("**/pom.xml"), *jvm.glob("pom.xml"), *jvm.glob("src/**/*.java")]
    for path in sorted(inputs):
        h.update(str(path.relative_to(layout.root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def jars_ready(layout: Layout) -> bool:
    marker = layout.stack / "lib" / ".pom-sha256"
    return marker.is_file() and marker.read_text() == _pom_digest(layout)


def fetch_jars(layout: Layout, *, force: bool = False) -> bool:
    """Copy every module's runtime jars into .stack/lib/<module>; return False if already current."""
    if not force and jars_ready(layout):
        return False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("`mvn` is not on PATH: install Maven (apt-get install maven) and retry")
    lib_root = layout.stack / "lib"
    for module in MODULES:  # a stale jar of an older pin must not stay on the classpath
        shutil.rmtree(lib_root / module, ignore_errors=True)
    lib_root.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-q", "-f", str(layout.pom), f"-Dstack.lib={lib_root}", "package"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise FetchError(f"mvn failed ({proc.returncode}):\n{tail}\nhint: is Maven Central reachable?")
    (lib_root / ".pom-sha256").write_text(_pom_digest(layout))
    return True
