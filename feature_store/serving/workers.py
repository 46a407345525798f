"""Several server processes on one port: ``fstore serve --workers N``.

One Python process serves on one core at most (the GIL), so a busy node runs N worker
processes, each a complete :class:`~feature_store.serving.server.FeatureServer` (own event
loop, driver connection pool, caches, registry reloads), all listening on the same address with
``SO_REUSEPORT``: the kernel spreads incoming *connections* across them. gRPC clients keep one
HTTP/2 connection per channel, so many clients (or channels) spread evenly; one channel sticks to
one worker.

The supervisor (this module, the parent process) does no serving:

- it reserves the port first (a bound, non-listening ``SO_REUSEPORT`` socket), so ``:0`` works
  and every worker binds the same port;
- it starts the workers with the ``spawn`` method (gRPC and the driver must not be forked), each
  with ``workers=1``, ``reuse_port`` on and its own ephemeral metrics port, and waits until all
  of them listen; a worker joins the port only once it can answer (registry loaded, store
  connected), so the kernel never hands a connection to a worker that would refuse it;
- it serves ``/metrics`` on the configured port: every worker's metrics, scraped at scrape time,
  with a ``worker`` label added;
- a worker that dies is started again (a worker failing ``_MAX_FAST_FAILURES`` times in a row
  within seconds of starting stops the supervisor with an error instead of looping);
- SIGTERM / SIGINT go to every worker (each drains gracefully: NOT_SERVING, then in-flight RPCs
  finish), and the supervisor exits when they have; a worker still alive after the grace period
  is killed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from feature_store.serving.settings import ServeSettings

__all__ = ["Supervisor", "merge_worker_metrics", "run_workers"]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
_MAX_FAST_FAILURES = 3
_FAST_FAILURE_S = 10.0
_SCRAPE_TIMEOUT_S = 2.0


def merge_worker_metrics(texts: Sequence[tuple[str, str]]) -> list[Metric]:
    """Prometheus text expositions of the workers, as one set of families with a ``worker`` label.

    ``texts`` holds (worker label, exposition text). Families of the same name merge (one HELP
    and TYPE), each sample gains ``worker=<label>``.
    """
    merged: dict[str, Metric] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                target.add_sample(
                    sample.name,
                    {**sample.labels, "worker": worker},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )
    return list(merged.values())


class _WorkerMetrics(Collector):
    def __init__(self, ports: Callable[[], list[tuple[str, int]]], host: str) -> None:
        self._ports = ports
        self._host = host

    def collect(self) -> Iterator[Metric]:
        texts: list[tuple[str, str]] = []
        for worker, port in self._ports():
            try:
                with urllib.request.urlopen(
                    f"http://{self._host}:{port}/metrics", timeout=_SCRAPE_TIMEOUT_S
                ) as answer:
                    texts.append((worker, answer.read().decode("utf-8")))
            except OSError as exc:  # a worker restarting: its series are absent from this scrape
                log.debug("worker %s metrics unavailable: %s", worker, exc)
        yield from merge_worker_metrics(texts)


def _reserve(listen: str) -> tuple[socket.socket, int]:
    """A bound, non-listening SO_REUSEPORT socket on ``listen``: fixes the port for the workers."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


def _worker_main(settings: ServeSettings, index: int, ready: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process: one FeatureServer; reports (port, metrics port) when up."""
    from feature_store import bootstrap  # noqa: F401, PLC0415 - registers cql://
    from feature_store.serving.server import FeatureServer, run  # noqa: PLC0415

    def report(server: FeatureServer) -> None:
        ready.send((server.port, server.metrics_port))
        ready.close()

    os.environ["FSTORE_SERVE_WORKER"] = str(index)
    run(settings, ready=report)


@dataclass(slots=True)
class _Worker:
    index: int
    process: Any  # multiprocessing.Process (spawn context)
    started: float
    metrics_port: int | None = None
    failures: int = 0


class Supervisor:
    """Starts, watches and stops the worker processes (see the module docstring)."""

    def __init__(self, settings: ServeSettings) -> None:
        if settings.workers < 2:
            raise ValueError("the supervisor runs 2 or more workers")
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._stop = threading.Event()
        self._stop_lock = threading.Lock()
        self._reserved: socket.socket | None = None
        self._metrics: Any = None
        self.port = 0
        self.metrics_port: int | None = None

    def worker_settings(self) -> ServeSettings:
        host = self.settings.listen.rpartition(":")[0]
        return self.settings.model_copy(
            update={
                "workers": 1,
                "reuse_port": True,
                "listen": f"{host}:{self.port}",
                "metrics_port": None if self.settings.metrics_port is None else 0,
            }
        )

    def start(self) -> int:
        """Reserve the port, start every worker and wait until each listens; returns the port."""
        self._reserved, self.port = _reserve(self.settings.listen)
        child = self.worker_settings()
        launched = [self._launch(index, child) for index in range(self.settings.workers)]
        deadline = time.monotonic() + _START_TIMEOUT_S
        for worker, receive in launched:  # they start side by side
            self._await_ready(worker, receive, deadline - time.monotonic())
            self._workers.append(worker)
        if self.settings.metrics_port is not None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_WorkerMetrics(self._metrics_ports, self.settings.metrics_host))
            self._metrics, _ = start_http_server(
                self.settings.metrics_port, addr=self.settings.metrics_host, registry=registry
            )
            self.metrics_port = int(self._metrics.server_port)
        log.info(
            "%d workers serving on %s:%d, merged metrics on %s",
            len(self._workers),
            self.settings.listen.rpartition(":")[0],
            self.port,
            f"{self.settings.metrics_host}:{self.metrics_port}" if self.metrics_port is not None else "off",
        )
        return self.port

    def _metrics_ports(self) -> list[tuple[str, int]]:
        return [(str(w.index), w.metrics_port) for w in self._workers if w.metrics_port]

    def _launch(self, index: int, settings: ServeSettings) -> tuple[_Worker, Any]:
        receive, send = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, args=(settings, index, send), name=f"fstore-serve-{index}", daemon=False
        )
        process.start()
        send.close()
        return _Worker(index, process, time.monotonic()), receive

    @staticmethod
    def _await_ready(worker: _Worker, receive: Any, timeout_s: float) -> None:
        """Wait until the worker listens (it joins the port only once it can answer: registry
        loaded, store connected), at most ``timeout_s``; a worker still waiting serves later."""
        if receive.poll(max(0.0, timeout_s)):
            # EOF: it died before it listened; the watch loop restarts it or gives up
            with contextlib.suppress(EOFError):
                _, worker.metrics_port = receive.recv()
        receive.close()

    def _spawn(self, index: int, settings: ServeSettings) -> _Worker:
        worker, receive = self._launch(index, settings)
        self._await_ready(worker, receive, _START_TIMEOUT_S)
        return worker

    def watch(self) -> int:
        """Restart workers that die until :meth:`stop`; returns the exit code."""
        child = self.worker_settings()
        while not self._stop.wait(0.5):
            for i, worker in enumerate(self._workers):
                if worker.process.is_alive() or self._stop.is_set():
                    continue
                code = worker.process.exitcode
                fast = time.monotonic() - worker.started < _FAST_FAILURE_S
                failures = worker.failures + 1 if fast else 1
                if failures >= _MAX_FAST_FAILURES:
                    log.error(
                        "worker %d failed %d times right after starting (exit %s): stopping",
                        i,
                        failures,
                        code,
                    )
                    self.stop()
                    return 1
                log.warning("worker %d exited (code %s): starting it again", i, code)
                self._workers[i] = self._spawn(worker.index, child)
                self._workers[i].failures = failures
        return 0

    def stop(self) -> None:
        """SIGTERM to every worker (graceful drain), SIGKILL to those still alive after the grace."""
        self._stop.set()
        with self._stop_lock:
            self._stop_workers()

    def _stop_workers(self) -> None:
        for worker in self._workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_delay_s + self.settings.shutdown_grace_s + 5.0
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning("worker %d still running after the grace period: killing it", worker.index)
                worker.process.kill()
                worker.process.join()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
            self._metrics = None
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]


def run_workers(settings: ServeSettings) -> int:
    """Run ``settings.workers`` server processes until SIGTERM/SIGINT; returns the exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    supervisor = Supervisor(settings)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: stopping %d workers", signum, settings.workers)
            threading.Thread(target=supervisor.stop, name="stop-workers").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s", settings.listen, exc)
        supervisor.stop()
        return 1
    code = supervisor.watch()
    supervisor.stop()
    return code
