"""Three worker processes over 300 targets on 5 fixture domains: every target checked once per slot, and
no fixture server ever sees more concurrent requests than the per-domain limit, across all processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import func, select

from tests.distributed.conftest import REPO, wait_for, workers_ready, write_config
from tracker.app import open_database
from tracker.config import load_config
from tracker.models import Observation, Target
from tracker.queue import check_distributed

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
LIMIT = 2


def test_three_workers_check_every_target_once_and_respect_the_domain_limit_across_processes(
        hosts, procs, pg_url, redis_url, tmp_path):
    products = [(f"Shop {i}", f"{h.url}/p/item-{i}-{n}", "http") for i, h in enumerate(hosts) for n in range(60)]
    config_path = write_config(tmp_path / "tracker.yaml", database=pg_url, broker=redis_url, products=products,
                               concurrency=LIMIT, delay_s=0.0)
    config = load_config(config_path)
    db = open_database(config)
    for n in range(3):
        procs.worker(config_path, queues="http,browser", threads=8, name=f"worker{n}")
    wait_for(workers_ready(redis_url, 3), 60, "three workers to report a heartbeat")

    slot = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    summary = asyncio.run(check_distributed(config, db, slot=slot, timeout_s=90))

    assert dict(summary.counts) == {f"Shop {i}": {"ok": 60} for i in range(5)}
    assert summary.duplicates == 0
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Observation)) == 300
        assert session.scalar(select(func.count()).select_from(Observation)
                              .where(Observation.seen_count == 1, Observation.first_slot == slot)) == 300
        assert session.scalar(select(func.count()).select_from(Target).where(Target.last_slot == slot)) == 300
    for host in hosts:
        assert sum(host.hits.values()) == 60 and set(host.hits.values()) == {1}, host.ip
        assert 1 <= host.max_in_flight <= LIMIT, (host.ip, host.max_in_flight)
    # The work really was spread: every worker process did some of it.
    client = redis.Redis.from_url(redis_url)
    beats = lambda: [json.loads(v)["done"] for v in client.hgetall("rivalwatch:workers").values()]  # noqa: E731
    wait_for(lambda: sum(beats()) == 300, 5, "heartbeats to count every check")
    done = beats()
    assert len(done) == 3 and all(d > 0 for d in done) and sum(done) == 300, done

    # `tracker status` shows the workers, empty queues and no throttled domain.
    status = subprocess.run([sys.executable, "-m", "tracker.cli", "status", "--config", str(config_path),
                             "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert len(info["workers"]) == 3 and all(w["age_s"] < 10 for w in info["workers"])
    assert info["queues"]["http"]["ready"] == 0 and info["throttled"] == {}

    # A second pass for the same slot changes nothing: every message is a duplicate, no page is fetched.
    again = asyncio.run(check_distributed(config, db, slot=slot, timeout_s=60))
    assert sum(sum(c.values()) for c in again.counts.values()) == 300
    assert sum(sum(h.hits.values()) for h in hosts) == 300
    wait_for(lambda: all(p.poll() is None for p in procs.procs), 1, "workers alive")
    db.close()
