"""Two `tracker run --dispatch-only`: only the lease holder sends work; SIGKILL it and the standby takes
over within the lease time, and every target of the slot is still checked exactly once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import func, select

from tests.distributed.conftest import FAST_ENV, wait_for, workers_ready, write_config
from tracker.app import open_database
from tracker.config import load_config
from tracker.models import Observation, Target
from tracker.queue import Dispatcher, connect, dispatches

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]
N = 40


def test_only_one_dispatcher_sends_and_the_standby_takes_over_after_sigkill(hosts, procs, pg_url, redis_url,
                                                                           tmp_path):
    host = hosts[2]
    # 0.2 s between requests to the one domain: the slot's 40 sends are spread over 8 s.
    config_path = write_config(tmp_path / "tracker.yaml", database=pg_url, broker=redis_url, delay_s=0.2,
                               products=[("Shop", f"{host.url}/p/item-{n}", "http") for n in range(N)])
    config = load_config(config_path)
    db = open_database(config)
    one = procs.start("run", "--dispatch-only", "--config", str(config_path), name="dispatcher1")
    two = procs.start("run", "--dispatch-only", "--config", str(config_path), name="dispatcher2")
    procs.worker(config_path, queues="http", threads=4)
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.hget("rivalwatch:dispatcher", "holder"), 60, "a dispatcher to become active")
    wait_for(workers_ready(redis_url, 1), 60, "the worker")

    slot = datetime(2026, 3, 1, 7, tzinfo=UTC)
    engine = connect(config)
    assert Dispatcher(config, db, engine=engine, start=False).plan(slot) == N

    def senders() -> dict[str, int]:
        return {k.decode(): int(v) for k, v in client.hgetall("rivalwatch:dispatcher:sent").items()}

    wait_for(lambda: sum(senders().values()) >= 5, 20, "the first sends")
    # Over a window, exactly one dispatcher sends: the lease holder. (Under load a holder that stalls for
    # longer than the lease loses it to the standby: that is a handover, never two senders at once.)
    window_start = senders()
    time.sleep(0.8)
    window = {h: n - window_start.get(h, 0) for h, n in senders().items() if n - window_start.get(h, 0) > 0}
    assert len(window) == 1, window
    active_holder = next(iter(window))
    assert client.hget("rivalwatch:dispatcher", "holder").decode() == active_holder
    active_pid = int(active_holder.split(":")[1])
    victim, survivor = (one, two) if active_pid == one.pid else (two, one)
    assert active_pid == victim.pid
    before = senders()
    procs.kill(victim)
    killed_at = time.monotonic()
    sent_at_kill = sum(before.values())

    survivor_sent = lambda: sum(n for h, n in senders().items() if int(h.split(":")[1]) == survivor.pid)  # noqa: E731
    survivor_before = survivor_sent()
    wait_for(lambda: survivor_sent() > survivor_before, float(FAST_ENV["TRACKER_QUEUE_LEASE_TTL_S"]) + 5,
             "the standby to send")
    takeover_s = time.monotonic() - killed_at
    assert takeover_s <= float(FAST_ENV["TRACKER_QUEUE_LEASE_TTL_S"]) + 3, takeover_s

    def all_checked() -> bool:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(Target).where(Target.last_slot == slot)) == N

    wait_for(all_checked, 30, "every target of the slot to be checked")
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Observation)) == N
        assert session.scalar(select(func.max(Observation.seen_count))) == 1
    wait_for(lambda: _count(db) == 0, 5, "the finished dispatches to be cleared")
    # The victim's counter may miss its last tick (killed before publishing it); sends overlap at most in
    # that tick, and an extra message is an idempotent no-op.
    assert sent_at_kill < N and sum(senders().values()) <= N + 5
    assert max(host.hits.values()) == 1
    assert survivor.poll() is None
    engine.close()
    db.close()


def _count(db) -> int:  # type: ignore[no-untyped-def]
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(dispatches))
