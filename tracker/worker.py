"""`tracker worker`: one Dramatiq worker process running checks from the queues.

One process = one asyncio event loop (Dramatiq's AsyncIO middleware), one Checker (one aiohttp session,
one lazily started Chromium with a browser context per rival), `threads` checks in flight. Run it on as
many machines, as many times, as you like; SIGTERM/SIGINT finish the checks in flight and requeue the
prefetched messages; SIGKILL loses nothing either: the broker requeues a dead worker's unacknowledged
messages once its heartbeat is older than `heartbeat_timeout_s`.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterable

from tracker.config import Config
from tracker.errors import TrackerError

log = logging.getLogger("tracker.worker")


def parse_queues(text: str | Iterable[str]) -> list[str]:
    from tracker.queue import QUEUES

    names = [q.strip() for q in (text.split(",") if isinstance(text, str) else text) if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if unknown or not names:
        raise TrackerError(f"unknown queue(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(QUEUES)}")
    return names


def _start_metrics(port: int) -> bool:
    """Prometheus metrics through Dramatiq's middleware, served on `port` by this process."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        log.warning("prometheus-client is not installed: no metrics (pip install prometheus-client)")
        return False
    # One multiprocess directory per worker process, so several workers on one machine do not mix up.
    os.environ.setdefault("dramatiq_prom_db", tempfile.mkdtemp(prefix=f"rivalwatch-prom-{os.getpid()}-"))
    os.environ["dramatiq_prom_port"] = str(port)
    os.environ.setdefault("dramatiq_prom_host", "0.0.0.0")
    return True


def run_worker(config: Config, *, queues: Iterable[str] = ("http", "browser", "serp", "notify"),
               threads: int | None = None, metrics_port: int = 0,
               stop: threading.Event | None = None) -> None:
    """Consume `queues` until SIGTERM/SIGINT (or `stop` is set)."""
    from dramatiq import Worker

    from tracker.app import open_database
    from tracker.queue import WorkerRuntime, connect

    queue_list = parse_queues(list(queues))
    metrics = bool(metrics_port) and _start_metrics(metrics_port)
    db = open_database(config)
    engine = connect(config, worker=True, prometheus=metrics)
    runtime = WorkerRuntime(config, db, engine, queue_list)
    engine.broker.add_middleware(runtime)
    if metrics:
        engine.broker.emit_after("process_boot")
        from dramatiq.middleware import prometheus

        threading.Thread(target=prometheus._run_exposition_server, name="prometheus", daemon=True).start()
    worker_threads = threads or engine.settings.worker_threads
    worker = Worker(engine.broker, queues=set(queue_list), worker_threads=worker_threads, worker_timeout=1000)
    stop = stop or threading.Event()

    def on_signal(signum, _frame):  # type: ignore[no-untyped-def]
        log.info("signal %s: finishing the checks in flight", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    worker.start()
    print(f"tracker worker {runtime.worker_id}: queues {','.join(queue_list)}, {worker_threads} threads"
          + (f", metrics on :{metrics_port}/metrics" if metrics else ""), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        worker.stop(timeout=int(engine.settings.check_time_limit_s * 1000))
        engine.close()
        db.close()
        print("tracker worker: stopped", flush=True)
