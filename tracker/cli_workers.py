"""`tracker worker` and `tracker status`: the commands of the scale-out mode (see tracker/queue.py)."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from tracker.cli_common import DEFAULT_CONFIG, ConfigOpt, out


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.command()(status)


def worker(config: ConfigOpt = DEFAULT_CONFIG,
           queues: Annotated[str, typer.Option(help="queues to consume, comma-separated")]
           = "http,browser,serp,notify",
           threads: Annotated[int, typer.Option(help="checks in flight in this process (default "
                                                     "queue.worker_threads, 16)")] = 0,
           metrics_port: Annotated[int, typer.Option("--metrics-port", envvar="TRACKER_METRICS_PORT",
                                                     help="serve Prometheus metrics here (0: off)")] = 0,
           verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run checks sent by `tracker run --dispatch-only` or `tracker check` (needs queue.broker)."""
    from tracker.config import load_config
    from tracker.errors import TrackerError
    from tracker.queue import broker_url
    from tracker.worker import run_worker

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("dramatiq").setLevel(logging.WARNING)
    cfg = load_config(config)
    if not broker_url(cfg):
        raise TrackerError("no broker configured: set queue.broker (redis://host:6379/0) or $TRACKER_BROKER_URL")
    run_worker(cfg, queues=queues.split(","), threads=threads or None, metrics_port=metrics_port)


def status(config: ConfigOpt = DEFAULT_CONFIG,
           as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
    """Queue depths, checks in flight, each worker's last heartbeat, throttled domains."""
    from rich.table import Table

    from tracker.app import open_database
    from tracker.config import load_config
    from tracker.errors import TrackerError
    from tracker.queue import broker_url
    from tracker.queue import status as queue_status

    cfg = load_config(config)
    if not broker_url(cfg):
        raise TrackerError("no broker configured: `tracker status` shows the workers of the scale-out mode")
    db = open_database(cfg)
    try:
        info = queue_status(cfg, db)
    finally:
        db.close()
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    out.print(f"broker: {info['broker']}")
    d = info["dispatcher"]
    out.print(f"dispatcher: {d.get('lease') or 'none active'}"
              + (f", last tick {d['tick_age_s']}s ago" if "tick_age_s" in d else "")
              + f"; slots pending {d.get('slots_pending', 0)} ({d.get('slots_unsent', 0)} not sent yet)")
    table = Table(title="Queues")
    for col in ("queue", "ready", "in flight", "delayed", "dead"):
        table.add_column(col, justify="right" if col != "queue" else "left")
    for name, q in info["queues"].items():
        table.add_row(name, str(q["ready"]), str(q["unacked"]), str(q["delayed"]), str(q["dead"]))
    out.print(table)
    table = Table(title="Workers")
    for col in ("worker", "queues", "last heartbeat", "in flight", "done", "duplicates", "errors"):
        table.add_column(col)
    for w in info["workers"]:
        age = w["age_s"]
        beat = f"{age}s ago" + (" [red](gone?)[/red]" if age > 60 else "")
        table.add_row(w["worker"], ",".join(w["queues"]), beat, str(len(w["in_flight"])), str(w["done"]),
                      str(w["duplicates"]), str(w["errors"]))
    out.print(table)
    if info["in_flight"]:
        table = Table(title="Checks in flight")
        for col in ("target", "slot", "worker", "running"):
            table.add_column(col)
        for item in sorted(info["in_flight"], key=lambda i: -i["running_s"])[:50]:
            table.add_row(str(item["target_id"]), item["slot"], item["worker"], f"{item['running_s']}s")
        out.print(table)
    if info["throttled"]:
        out.print("throttled domains: " + ", ".join(f"{d} ({s:.0f}s left)" for d, s in
                                                     sorted(info["throttled"].items())))
    else:
        out.print("throttled domains: none")
