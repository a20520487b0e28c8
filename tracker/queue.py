"""Scale-out mode: checks run on many worker machines through Dramatiq (Redis; RabbitMQ possible).

The pieces, and who runs them:

* `Engine`: a Dramatiq broker plus the actors. The actors are thin wrappers around the pipeline's unit of
  work, `Checker.check(target_id, slot)`: a message is only `(target_id, slot)` (and, for `tracker check`,
  the id of the pass that waits for its result). Queues: `http`, `browser`, `serp`, `notify`.
* `Dispatcher` (in `tracker run --dispatch-only`, one active per database): `dispatch_pass(slot)` plans a
  slot into the `dispatches` table, each domain's targets spread `per_domain_delay_s` apart, so work reaches
  the queues already paced; a tick loop, gated by a database lease, claims due rows (FOR UPDATE SKIP LOCKED
  on PostgreSQL), sends them, and sends again a slot that has no result after `resend_after_s` and whose
  message is no longer in the broker (a message lost with Redis costs a delay, not a missed check).
* Workers (`tracker worker`, tracker/worker.py): one asyncio loop per process (Dramatiq's AsyncIO
  middleware), one process-wide `Checker` (one Chromium, one aiohttp session), and a `RedisDomainLimiter`
  that holds the per-domain concurrency, request rate and 429 cool-downs in Redis for every process.
* `check_distributed`: what `tracker check` does when a broker is configured: send the pass, wait for
  every result, return the same `PassSummary` as in one process.
* `status`: queue depths, in-flight checks, worker heartbeats, throttled domains (`tracker status`).

Idempotency is the store's compare-and-set on `targets.last_slot` (tracker/store.py): a message delivered
twice, a resend racing a slow worker, a worker killed after its commit: all write once. Workers also skip
the fetch when the slot is already recorded, so a late duplicate costs one indexed read, not a page load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import redis
import redis.asyncio as aioredis
from dramatiq.middleware import AsyncIO, Middleware
from sqlalchemy import (
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from scrapers.browser import BrowserFetcher
from scrapers.fetch import HttpFetcher, Politeness, domain_key
from tracker.config import Config, broker_url  # noqa: F401 - broker_url is part of this module's API
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.lease import DbLease, holder_id
from tracker.loop import loop_factory
from tracker.models import Observation, Run, Target, dispatches
from tracker.pipeline import (TARGET_SPECS, CheckResult, Checker, PassSummary, TargetSpec, target_spec,
                              utc_slot)

log = logging.getLogger("tracker.queue")

QUEUES = ("http", "browser", "serp", "notify")
CHECK_QUEUES = ("http", "browser", "serp")
PREFIX = "rivalwatch"                       # our own Redis keys; Dramatiq's live under "dramatiq:"
NAMESPACE = "dramatiq"


# ------------------------------------------------------------------------------------------------------
# Settings: config.queue (when the fields exist), then TRACKER_QUEUE_<NAME> environment variables.

@dataclass(frozen=True)
class QueueSettings:
    heartbeat_timeout_s: float = 60.0     # a worker silent this long is dead: its unacked messages requeue
    resend_after_s: float = 600.0         # a slot with no result after this is sent again
    max_attempts: int = 5                 # sends of one slot before the dispatcher gives up on it
    tick_s: float = 1.0                   # how often the dispatcher claims due work
    lease_ttl_s: float = 30.0             # the dispatcher lease: a standby takes over after this
    batch: int = 2000                     # rows claimed per tick
    worker_threads: int = 16              # checks in flight per worker process
    check_time_limit_s: float = 600.0
    maintenance_chance: int = 1000        # of 1,000,000 broker commands: requeue dead workers' messages
    limiter_wait_s: float = 300.0         # how long a fetch waits for an unreachable Redis limiter


def queue_settings(config: Config | None = None, **overrides: Any) -> QueueSettings:
    values: dict[str, Any] = {}
    for f in fields(QueueSettings):
        value = getattr(config.queue, f.name, None) if config is not None else None
        env = os.environ.get(f"TRACKER_QUEUE_{f.name.upper()}")
        if env:
            value = env
        if value is not None:
            values[f.name] = type(f.default)(value)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return QueueSettings(**values)


def queue_for(kind: str, spec: dict[str, Any] | None) -> str:
    """Which queue a target's checks go to."""
    if kind == "serp":
        return "serp"
    if (spec or {}).get("fetch") == "browser":
        return "browser"
    return "http"


def _slot_text(slot: datetime) -> str:
    return utc_slot(slot).isoformat()


# ------------------------------------------------------------------------------------------------------
# The dispatches table (tracker.models.dispatches): the slot each target is due for and when it was sent.


# ------------------------------------------------------------------------------------------------------
# Broker and actors

class Engine:
    """A Dramatiq broker with Rivalwatch's actors declared on it, and a Redis client for our own keys."""

    def __init__(self, url: str, *, settings: QueueSettings | None = None, worker: bool = False,
                 prometheus: bool = False):
        self.url = url
        self.settings = settings or QueueSettings()
        scheme = urlsplit(url).scheme
        if scheme in ("redis", "rediss", "unix"):
            from dramatiq.brokers.redis import RedisBroker

            self.broker = RedisBroker(url=url, namespace=NAMESPACE,
                                      heartbeat_timeout=int(self.settings.heartbeat_timeout_s * 1000),
                                      maintenance_chance=self.settings.maintenance_chance)
            self.redis: redis.Redis | None = self.broker.client
            self.redis_url: str | None = url
        elif scheme in ("amqp", "amqps"):
            from dramatiq.brokers.rabbitmq import RabbitmqBroker  # needs `pip install dramatiq[rabbitmq]`

            self.broker = RabbitmqBroker(url=url)
            # Heartbeats, results and the domain limiter still need a Redis: $TRACKER_REDIS_URL.
            self.redis_url = os.environ.get("TRACKER_REDIS_URL")
            self.redis = redis.Redis.from_url(self.redis_url) if self.redis_url else None
        else:
            raise TrackerError(f"queue.broker {url!r}: expected redis://host:6379/0 or amqp://host")
        self.broker.add_middleware(_AsyncIO())
        if prometheus:
            from dramatiq.middleware.prometheus import Prometheus

            self.broker.add_middleware(Prometheus())
        dramatiq.set_broker(self.broker)
        limit_ms = int(self.settings.check_time_limit_s * 1000)
        self.actors: dict[str, dramatiq.Actor] = {}
        for queue in CHECK_QUEUES:
            self.actors[queue] = dramatiq.actor(
                _check_actor, broker=self.broker, actor_name=f"check_{queue}", queue_name=queue,
                max_retries=3, min_backoff=1000, max_backoff=30000, time_limit=limit_ms, throws=(LookupError,))
        self.actors["notify"] = dramatiq.actor(
            _notify_actor, broker=self.broker, actor_name="deliver_outbox", queue_name="notify",
            max_retries=3, min_backoff=5000, time_limit=limit_ms)

    def send_check(self, queue: str, target_id: int, slot: datetime, pass_id: str | None = None) -> str | None:
        """Enqueue one check; returns the broker's message id (Redis) to look the message up later."""
        kwargs: dict[str, Any] = {"target_id": target_id, "slot": _slot_text(slot)}
        if pass_id:
            kwargs["pass_id"] = pass_id
        message = self.actors[queue].send_with_options(kwargs=kwargs)
        return message.options.get("redis_message_id")

    def send_notify(self) -> None:
        self.actors["notify"].send()

    def message_pending(self, queue: str, message_id: str | None) -> bool | None:
        """Is this message still queued or in flight? None when the broker cannot say (RabbitMQ)."""
        if message_id is None or self.redis is None or self.redis_url != self.url:
            return None
        key = f"{NAMESPACE}:{queue}"
        return bool(self.redis.hexists(f"{key}.msgs", message_id) or self.redis.hexists(f"{key}.DQ.msgs", message_id))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.broker.close()


class _AsyncIO(AsyncIO):
    """Dramatiq's AsyncIO middleware with one change: a worker thread waiting for its check's coroutine
    looks for an interrupt (time limit, shutdown) once a second instead of ten times (Dramatiq's
    default); 32 worker threads waiting on checks woke the process 320 times a second, each wake-up
    taking the GIL from the event loop thread. Interrupts come a second later at most: time limits are
    minutes."""

    INTERRUPT_CHECK_S = 1.0

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        from dramatiq.asyncio import set_event_loop_thread

        thread = _event_loop_thread(self.logger, self.INTERRUPT_CHECK_S)
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)


def _event_loop_thread(logger: logging.Logger, interrupt_check_s: float) -> Any:
    """Dramatiq's event-loop thread, running the loop every `tracker` command runs on (tracker.loop:
    uvloop where installed) instead of the asyncio loop Dramatiq makes."""
    from dramatiq.asyncio import EventLoopThread

    thread = EventLoopThread(logger, interrupt_check_ival=interrupt_check_s)
    thread.loop.close()  # Dramatiq's own, never started
    thread.loop = loop_factory()
    return thread


def connect(config: Config, **kwargs: Any) -> Engine:
    url = broker_url(config)
    if not url:
        raise TrackerError("no broker configured: set queue.broker in the config or $TRACKER_BROKER_URL")
    return Engine(url, settings=queue_settings(config), **kwargs)


# ------------------------------------------------------------------------------------------------------
# Worker side: the process-wide runtime the actors use

class WorkerRuntime(Middleware):
    """One per worker process: config, database, one Checker (created on the event loop at first use),
    the Redis domain limiter, heartbeats. Added after AsyncIO so it closes the Checker before the loop stops."""

    def __init__(self, config: Config, db: Database, engine: Engine, queues: Iterable[str]):
        self.config = config
        self.db = db
        self.engine = engine
        self.queues = sorted(queues)
        self.worker_id = holder_id()
        self.started_at = time.time()
        self.checker: Checker | None = None
        self.limiter: RedisDomainLimiter | None = None
        self.aredis: aioredis.Redis | None = None
        self._lock: asyncio.Lock | None = None
        self.in_flight: dict[int, tuple[int, str, float]] = {}
        self.done = 0
        self.duplicates = 0
        self.errors = 0
        self.notified = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        # Messages in flight at once share round trips (see lookup() and report()): a batch is what
        # arrived while the previous batch's round trip was under way, so a lone message never waits.
        self._lookups = _Batch(self._load_batch)
        self._results = _Batch(self._push_batch)

    # -- lifecycle (Dramatiq middleware hooks) ------------------------------------------------------------

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        global _RUNTIME
        _RUNTIME = self
        self.beat()
        self._beat = threading.Thread(target=self._beat_loop, name="rivalwatch-heartbeat", daemon=True)
        self._beat.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        from dramatiq.asyncio import get_event_loop_thread

        self._stop.set()
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and self.checker is not None:
            with contextlib.suppress(Exception):
                loop_thread.run_coroutine(self._close())
        if self.engine.redis is not None:
            with contextlib.suppress(Exception):
                self.engine.redis.hdel(f"{PREFIX}:workers", self.worker_id)

    async def _close(self) -> None:
        if self.checker is not None:
            await self.checker.__aexit__(None, None, None)
            self.checker = None
        if self.aredis is not None:
            await self.aredis.aclose()

    async def get_checker(self) -> Checker:
        if self.checker is not None:
            return self.checker
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.checker is None:
                cfg = self.config
                if self.engine.redis_url:
                    self.aredis = aioredis.Redis.from_url(self.engine.redis_url)
                    self.limiter = RedisDomainLimiter(
                        self.aredis, concurrency=cfg.http.per_domain_concurrency,
                        delay_s=cfg.http.per_domain_delay_s,
                        hold_s=cfg.http.timeout_s + 30, outage_wait_s=self.engine.settings.limiter_wait_s)
                http = HttpFetcher(
                    user_agent=cfg.http.user_agent, timeout_s=cfg.http.timeout_s, max_bytes=cfg.http.max_bytes,
                    retries=cfg.http.retries,
                    politeness=Politeness(cfg.http.per_domain_concurrency, cfg.http.per_domain_delay_s),
                    verify_tls=cfg.http.verify_tls, max_connections=cfg.http.max_connections,
                    respect_robots=cfg.http.respect_robots, limiter=self.limiter)
                browser = LimitedBrowserFetcher(
                    self.limiter,
                    executable=cfg.resolve(cfg.browser.executable) if cfg.browser.executable else None,
                    concurrency=cfg.browser.concurrency, block=tuple(cfg.browser.block),
                    timeout_s=cfg.browser.timeout_s, headless=cfg.browser.headless)
                checker = Checker(cfg, self.db, http=http, browser=browser)
                await checker.__aenter__()
                self.checker = checker
        return self.checker

    # -- the round trips of a message, shared by the messages in flight -------------------------------------

    async def lookup(self, target_id: int) -> tuple[datetime | None, TargetSpec | None]:
        """The target's row (for Checker.check) and its last recorded slot (to skip a late duplicate):
        one query for every message that asks while the previous query runs."""
        return await self._lookups.submit(target_id)

    async def _load_batch(self, ids: list[int]) -> list[tuple[datetime | None, TargetSpec | None]]:
        checker = await self.get_checker()
        rows = await checker._in_db(lambda: _load_targets(self.db, sorted(set(ids))))
        return [rows.get(target_id, (None, None)) for target_id in ids]

    async def report(self, pass_id: str, payload: str) -> None:
        """Hand a result to the `tracker check` waiting for it; one pipeline for the results of a batch."""
        await self._results.submit((f"{PREFIX}:pass:{pass_id}", payload))

    async def _push_batch(self, items: list[tuple[str, str]]) -> list[None]:
        assert self.aredis is not None
        by_key: dict[str, list[str]] = defaultdict(list)
        for key, payload in items:
            by_key[key].append(payload)
        async with self.aredis.pipeline(transaction=False) as pipe:
            for key, payloads in by_key.items():
                pipe.rpush(key, *payloads)
                pipe.expire(key, 86400)
            await pipe.execute()
        return [None] * len(items)

    # -- heartbeats -----------------------------------------------------------------------------------------

    def beat(self) -> None:
        client = self.engine.redis
        if client is None:
            return
        now = time.time()
        info = {"worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                "queues": self.queues, "beat_at": now, "started_at": self.started_at, "done": self.done,
                "duplicates": self.duplicates, "errors": self.errors,
                "notified": self.notified,
                "in_flight": [{"target_id": t, "slot": s, "since": since}
                              for t, s, since in list(self.in_flight.values())]}
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"{PREFIX}:workers", self.worker_id, json.dumps(info))
        # Keep Dramatiq's own heartbeat fresh even while every thread is busy on a long check (its consumer
        # only beats when it fetches), so a live worker's messages are never requeued as a dead one's.
        broker_id = getattr(self.engine.broker, "broker_id", None)
        if broker_id:
            pipe.zadd(f"{NAMESPACE}:__heartbeats__", {broker_id: int(now * 1000)})
        pipe.execute()

    def _beat_loop(self) -> None:
        interval = max(0.2, min(5.0, self.engine.settings.heartbeat_timeout_s / 4))
        while not self._stop.wait(interval):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)


_RUNTIME: WorkerRuntime | None = None


async def _check_actor(target_id: int, slot: str, pass_id: str | None = None) -> None:
    rt = _RUNTIME
    if rt is None:
        raise RuntimeError("the check actor runs only inside `tracker worker`")
    when = datetime.fromisoformat(slot)
    key = id(asyncio.current_task())
    rt.in_flight[key] = (target_id, slot, time.time())
    try:
        checker = await rt.get_checker()
        # A late duplicate (redelivery after the commit, a resend) needs no page load: one indexed read,
        # which also loads the target's row for the check (shared with the other messages in flight).
        last, target = await rt.lookup(target_id)
        if last is not None and last >= when:
            result = CheckResult(target_id, None, "ok", duplicate=True)
        else:
            try:
                result = await checker.check(target_id, when, target=target)
            except LookupError as exc:
                result = CheckResult(target_id, None, "failed", str(exc))
    except Exception:
        rt.errors += 1
        raise
    finally:
        rt.in_flight.pop(key, None)
    rt.done += 1
    rt.duplicates += result.duplicate
    if pass_id and rt.aredis is not None:
        await rt.report(pass_id, json.dumps({
            "target_id": result.target_id, "rival": result.rival, "status": result.status,
            "reason": result.reason, "changes": result.changes, "duplicate": result.duplicate,
            "via": result.via}))


def _load_targets(db: Database, ids: list[int]) -> dict[int, tuple[datetime | None, TargetSpec]]:
    """last_slot and the TargetSpec of these targets, in one query on a plain connection (a read needs no
    ORM session); a missing id is left out (Checker.check then reports it)."""
    with db.engine.connect() as conn:
        rows = conn.execute(TARGET_SPECS.add_columns(Target.last_slot).where(Target.id.in_(ids)))
        return {row.id: (row.last_slot, target_spec(row)) for row in rows}


class _Batch:
    """Group the calls made while one batch is under way into the next: `await batch.submit(item)`
    returns `run(items)[i]` for its item, or raises what the batch raised. Runs on one event loop."""

    def __init__(self, run: Callable[[list[Any]], Any], max_batch: int = 500):
        self.run = run
        self.max_batch = max_batch
        self.pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self.running = False

    async def submit(self, item: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self.pending[:self.max_batch]
                del self.pending[:self.max_batch]
                try:
                    outcomes = await self.run([item for item, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch + self.pending:    # the loop is stopping: nobody waits forever
                        future.cancel()
                    self.pending.clear()
                    raise
                except Exception as exc:  # noqa: BLE001 - each caller of this batch gets it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), value in zip(batch, outcomes):
                    if not future.done():
                        future.set_result(value)
        finally:
            self.running = False


async def _notify_actor() -> None:
    """Deliver what is due in the outbox. Exactly once per message however often this runs (tracker.mail
    claims a message before talking to the server)."""
    from tracker.app import send_reports

    rt = _RUNTIME
    if rt is None:
        raise RuntimeError("the notify actor runs only inside `tracker worker`")
    report = await asyncio.to_thread(send_reports, rt.config, rt.db)
    rt.notified += 1
    log.info("outbox: %s sent, %s written, %s pending", report.sent, report.written, report.pending)


# ------------------------------------------------------------------------------------------------------
# Politeness across machines

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cool = redis.call('PTTL', KEYS[3])
if cool > 0 then return cool end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
if nxt > now then return nxt - now end
local hold = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + hold, ARGV[4])
redis.call('PEXPIRE', KEYS[1], hold)
local delay = tonumber(ARGV[2])
if delay > 0 then redis.call('SET', KEYS[2], now + delay, 'PX', delay + 1000) end
return 0
"""

_COOL = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], ARGV[2], 'PX', ms) end
return 1
"""


class LimiterUnavailable(RuntimeError):
    """Redis stayed unreachable longer than the limiter waits: the check fails and the message retries."""


class RedisDomainLimiter:
    """Per-domain concurrency, request spacing and cool-downs held in Redis, for every process at once.

    `async with limiter.slot(domain)`: at most `concurrency` requests to the domain in flight across all
    workers, starts at least `delay_s` apart, none during a cool-down. One Lua call per attempt, on the
    Redis clock (machines' clocks may differ). A slot held by a process that died expires after `hold_s`.

    Inside one process the requests of a domain first queue on a local semaphore of `concurrency`
    (more than that can never hold a Redis slot at once anyway): the others wait without a Redis round
    trip, and only the few at the head of the queue ask Redis (and poll it while other machines hold
    every slot). Before, each of a worker's 32 in-flight checks of a busy domain polled Redis on its own.
    """

    def __init__(self, client: aioredis.Redis, *, concurrency: int = 2, delay_s: float = 1.0,
                 hold_s: float = 60.0, prefix: str = PREFIX, outage_wait_s: float = 300.0):
        self.client = client
        self.concurrency = concurrency
        self.delay_ms = int(delay_s * 1000)
        self.hold_ms = int(hold_s * 1000)
        self.prefix = prefix
        self.outage_wait_s = outage_wait_s
        self._acquire = client.register_script(_ACQUIRE)
        self._cool = client.register_script(_COOL)
        self._local: dict[str, asyncio.Semaphore] = {}

    def _keys(self, domain: str) -> list[str]:
        return [f"{self.prefix}:conc:{domain}", f"{self.prefix}:next:{domain}", f"{self.prefix}:cool:{domain}"]

    async def _call(self, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.outage_wait_s
        backoff = 0.1
        while True:
            try:
                return await fn()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise LimiterUnavailable(f"domain limiter: Redis unreachable: {exc}") from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    @contextlib.asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        local = self._local.get(domain)
        if local is None:
            local = self._local[domain] = asyncio.Semaphore(self.concurrency)
        async with local:
            keys = self._keys(domain)
            token = uuid.uuid4().hex
            poll = 0.005
            while True:
                wait_ms = await self._call(lambda: self._acquire(
                    keys=keys, args=[self.concurrency, self.delay_ms, self.hold_ms, token]))
                if wait_ms == 0:
                    break
                if wait_ms < 0:      # all slots taken elsewhere: poll, a little later each time, with jitter
                    await asyncio.sleep(poll * (0.5 + random.random()))
                    poll = min(poll * 1.5, 0.1)
                else:
                    await asyncio.sleep(wait_ms / 1000)
            try:
                yield
            finally:
                await self._call(lambda: self.client.zrem(keys[0], token))

    async def cool_down(self, domain: str, seconds: float) -> None:
        """No request to `domain` from any worker for `seconds` (a 429 / Retry-After)."""
        ms = max(1, int(seconds * 1000))
        await self._call(lambda: self._cool(keys=[self._keys(domain)[2]], args=[ms, f"{seconds:.0f}"]))


class LimitedBrowserFetcher(BrowserFetcher):
    """Chromium page loads count against the same per-domain limits as plain HTTP requests."""

    def __init__(self, limiter: RedisDomainLimiter | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.limiter = limiter

    def _around_load(self, url: str):  # type: ignore[no-untyped-def]
        # Taken once the fetch has its page: waiting for a page holds no slot on any machine, and a long
        # queue for pages cannot outlast the slot's expiry.
        if self.limiter is None:
            return super()._around_load(url)
        return self.limiter.slot(domain_key(url))


def throttled_domains(client: redis.Redis) -> dict[str, float]:
    """Domains in a cool-down now, with the seconds left."""
    found: dict[str, float] = {}
    for key in client.scan_iter(match=f"{PREFIX}:cool:*", count=500):
        ttl = client.pttl(key)
        if ttl and ttl > 0:
            name = key.decode() if isinstance(key, bytes) else key
            found[name.split(":cool:", 1)[1]] = ttl / 1000
    return found


# ------------------------------------------------------------------------------------------------------
# The dispatcher

@dataclass
class TickResult:
    active: bool
    sent: int = 0
    resent: int = 0
    done: int = 0
    gave_up: int = 0


def _domain_of(kind: str, url: str | None, spec: dict[str, Any]) -> str:
    if kind == "serp":
        return "serp:" + str(spec.get("engine", "?"))
    return domain_key(url or "") or "?"


class Dispatcher:
    """Plans slots into `dispatches`, paced per domain, and sends due work while it holds the lease.

    Constructed inside a running event loop (the scheduler's), it starts its tick loop at once; every
    tick first takes or renews the `dispatcher` lease, so of several `tracker run --dispatch-only` only
    one sends, and a standby takes over within the lease time when the active one dies.
    """

    def __init__(self, config: Config, db: Database, *, engine: Engine | None = None,
                 settings: QueueSettings | None = None, start: bool = True):
        self.config = config
        self.db = db
        self.settings = settings or queue_settings(config)
        self.engine = engine or connect(config)
        self.lease = DbLease(db, "dispatcher", ttl_s=self.settings.lease_ttl_s)
        self.active = False
        self._broker_down = False
        self._rearm_all = False
        self._task: asyncio.Task[None] | None = None
        if start:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._task = loop.create_task(self.run())

    # -- planning ----------------------------------------------------------------------------------------

    def spacing_s(self, domain: str) -> float:
        if domain.startswith("serp:"):
            low, high = self.config.serp.delay_s
            return (low + high) / 2 / self.config.serp.concurrency_per_engine
        return self.config.http.per_domain_delay_s

    def plan(self, slot: datetime, kinds: tuple[str, ...] | None = None, *, rival: str | None = None,
             now: datetime | None = None, sync: bool = True) -> int:
        """Make every active target of `kinds` due for `slot`, each domain's targets spread apart.
        Idempotent: planning the same slot again changes nothing; a newer slot replaces an older one."""
        from tracker.targets import active_targets, sync_targets

        slot = utc_slot(slot)
        now = now or datetime.now(UTC)
        with self.db.session() as session:
            if sync:
                sync_targets(session, self.config)
            refs = active_targets(session, rival=rival, kinds=kinds)
            ids = [r.id for r in refs]
            specs = dict(session.execute(select(Target.id, Target.spec).where(Target.id.in_(ids))).all()) \
                if ids else {}
            planned = dict(session.execute(select(dispatches.c.target_id, dispatches.c.slot)
                                           .where(dispatches.c.target_id.in_(ids))).all()) if ids else {}
            position: dict[str, int] = defaultdict(int)
            rows = []
            for ref in refs:
                if ref.id in planned and planned[ref.id] >= slot:
                    continue
                spec = specs.get(ref.id) or {}
                domain = _domain_of(ref.kind, ref.url, spec)
                due = now + timedelta(seconds=position[domain] * self.spacing_s(domain))
                position[domain] += 1
                rows.append({"target_id": ref.id, "slot": slot, "queue": queue_for(ref.kind, spec),
                             "due_at": due, "sent_at": None, "attempts": 0, "message_id": None})
            if not rows:
                return 0
            insert = (postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert)(dispatches)
            for chunk in _chunks(rows, 500):
                stmt = insert.values(chunk)
                excluded = stmt.excluded
                session.execute(stmt.on_conflict_do_update(
                    index_elements=[dispatches.c.target_id],
                    set_={c: excluded[c] for c in ("slot", "queue", "due_at", "sent_at", "attempts",
                                                   "message_id")},
                    where=dispatches.c.slot < excluded.slot))
            for row in rows:
                session.execute(update(Target).where(Target.id == row["target_id"])
                                .values(next_due_at=row["due_at"]))
        return len(rows)

    async def dispatch_pass(self, slot: datetime, kinds: tuple[str, ...] | None = None, *,
                            rival: str | None = None) -> int:
        """Called by the scheduler for each cron slot: plan it; the tick loop sends it, paced."""
        planned = await asyncio.to_thread(self.plan, slot, kinds, rival=rival)
        log.info("slot %s planned for %d targets (%s)", utc_slot(slot).isoformat(), planned,
                 ",".join(kinds or ()) or "all kinds")
        await asyncio.to_thread(self.tick_once)
        return planned

    # -- sending -----------------------------------------------------------------------------------------

    def tick_once(self, now: datetime | None = None) -> TickResult:
        if not self.lease.try_acquire():
            self.active = False
            return TickResult(active=False)
        if not self.active:
            log.info("dispatcher %s is active", self.lease.holder)
        self.active = True
        now = now or datetime.now(UTC)
        result = TickResult(active=True)
        s = self.settings
        if not self._broker_up():
            return result
        with self.db.session() as session:
            if self._rearm_all:
                # The broker was away: a restarted Redis has forgotten which checks workers are still
                # running, so give every sent slot a full resend_after from now before sending it again.
                session.execute(update(dispatches).where(dispatches.c.sent_at.is_not(None)).values(sent_at=now))
                self._rearm_all = False
            finished = select(Target.id).where(Target.id == dispatches.c.target_id,
                                               Target.last_slot.is_not(None), Target.last_slot >= dispatches.c.slot)
            result.done = session.execute(delete(dispatches).where(finished.exists())).rowcount or 0
            resend_before = now - timedelta(seconds=s.resend_after_s)
            claim = (select(dispatches)
                     .where(dispatches.c.due_at <= now,
                            or_(dispatches.c.sent_at.is_(None), dispatches.c.sent_at <= resend_before))
                     .order_by(dispatches.c.due_at).limit(s.batch)
                     .with_for_update(skip_locked=True))
            rows = session.execute(claim).mappings().all()
            sent_ids: dict[int, tuple[str | None, int]] = {}
            rearm: list[int] = []
            gave_up: list[int] = []
            try:
                for row in rows:
                    if row["sent_at"] is not None:
                        if self.engine.message_pending(row["queue"], row["message_id"]):
                            rearm.append(row["target_id"])   # still queued or in flight: not lost
                            continue
                        if row["attempts"] >= s.max_attempts:
                            gave_up.append(row["target_id"])
                            continue
                        result.resent += 1
                    message_id = self.engine.send_check(row["queue"], row["target_id"], row["slot"])
                    sent_ids[row["target_id"]] = (message_id, row["attempts"] + 1)
            except (redis.RedisError, OSError, dramatiq.errors.BrokerConnectionError) as exc:
                log.warning("broker unreachable, %d sent this tick: %s", len(sent_ids), exc)
            for target_id, (message_id, attempts) in sent_ids.items():
                session.execute(update(dispatches).where(dispatches.c.target_id == target_id)
                                .values(sent_at=now, attempts=attempts, message_id=message_id))
            if rearm:
                session.execute(update(dispatches).where(dispatches.c.target_id.in_(rearm)).values(sent_at=now))
            if gave_up:
                log.error("giving up on %d targets after %d sends: %s", len(gave_up), s.max_attempts, gave_up[:20])
                session.execute(delete(dispatches).where(dispatches.c.target_id.in_(gave_up)))
            result.sent = len(sent_ids)
            result.gave_up = len(gave_up)
        if result.sent or result.gave_up:
            log.info("sent %d checks (%d again), %d slots finished since the last tick", result.sent,
                     result.resent, result.done)
        self._publish(result)
        return result

    def _broker_up(self) -> bool:
        client = self.engine.redis
        if client is None:
            return True
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            if not self._broker_down:
                log.warning("broker unreachable: sending paused (%s)", exc)
            self._broker_down = True
            return False
        if self._broker_down:
            log.info("broker back: slots sent before the outage get a new resend_after")
            self._broker_down, self._rearm_all = False, True
        return True

    def _publish(self, result: TickResult) -> None:
        client = self.engine.redis
        if client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hset(f"{PREFIX}:dispatcher", mapping={"holder": self.lease.holder, "tick_at": time.time()})
            if result.sent:
                pipe.hincrby(f"{PREFIX}:dispatcher:sent", self.lease.holder, result.sent)
            pipe.execute()
        except redis.RedisError:
            pass

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick_once)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be away for a moment: try next tick
                log.exception("dispatcher tick failed")
            await asyncio.sleep(self.settings.tick_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.lease.release)
        self.engine.close()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ------------------------------------------------------------------------------------------------------
# `tracker check` with a broker: send the pass to the workers and wait

def _interleave_by_domain(refs: list[Any], domains: dict[int, str]) -> list[Any]:
    """Round-robin over domains, so no domain's backlog blocks the worker threads for the others."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for ref in refs:
        groups[domains[ref.id]].append(ref)
    out: list[Any] = []
    for batch in itertools.zip_longest(*groups.values()):
        out.extend(r for r in batch if r is not None)
    return out


async def check_distributed(config: Config, db: Database, *, rival: str | None = None,
                            slot: datetime | None = None, trigger: str = "check",
                            kinds: tuple[str, ...] | None = None,
                            on_start: Callable[[int], None] | None = None,
                            on_result: Callable[[CheckResult], None] | None = None,
                            timeout_s: float | None = None, engine: Engine | None = None) -> PassSummary:
    """One pass like `check_once`, run by the workers: send one message per target, wait for every
    result (resending what the broker lost), record the Run, return the same summary."""
    from tracker.targets import active_targets, sync_targets

    own_engine = engine is None
    engine = engine or connect(config)
    if engine.redis is None:
        raise TrackerError("`tracker check` with a RabbitMQ broker needs $TRACKER_REDIS_URL for the results")
    settings = engine.settings
    slot = utc_slot(slot)

    def prepare() -> tuple[list[Any], dict[int, dict[str, Any]], int]:
        with db.session() as session:
            sync_targets(session, config)
            refs = active_targets(session, rival=rival, kinds=kinds)
            ids = [r.id for r in refs]
            specs = dict(session.execute(select(Target.id, Target.spec).where(Target.id.in_(ids))).all()) \
                if ids else {}
            run = Run(slot=slot, trigger=trigger, started_at=datetime.now(UTC))
            session.add(run)
            session.flush()
            return refs, specs, run.id

    refs, specs, run_id = await asyncio.to_thread(prepare)
    if rival is not None and not refs:
        names = ", ".join(r.name for r in config.rivals) or "none configured"
        raise TrackerError(f"no rival named {rival!r} with targets (rivals: {names})")
    if on_start is not None:
        on_start(len(refs))
    summary = PassSummary(run_id=run_id)
    pass_id = uuid.uuid4().hex
    results_key = f"{PREFIX}:pass:{pass_id}"
    by_id = {r.id: r for r in refs}
    domains = {r.id: _domain_of(r.kind, r.url, specs.get(r.id) or {}) for r in refs}
    queues = {r.id: queue_for(r.kind, specs.get(r.id)) for r in refs}
    message_ids: dict[int, str | None] = {}
    sent_at: dict[int, float] = {}

    def send(ids: list[int]) -> None:
        for target_id in ids:
            message_ids[target_id] = engine.send_check(queues[target_id], target_id, slot, pass_id)
            sent_at[target_id] = time.monotonic()

    await asyncio.to_thread(send, [r.id for r in _interleave_by_domain(refs, domains)])
    pending = set(by_id)

    def finish(result: CheckResult) -> None:
        pending.discard(result.target_id)
        summary.add(result)
        if on_result is not None:
            on_result(result)

    def settle_from_db(ids: set[int]) -> list[CheckResult]:
        """Targets recorded for this slot whose result message never came (a worker died after its
        commit): their status is the observation span that holds the slot."""
        out = []
        with db.session() as session:
            rows = session.execute(
                select(Observation.target_id, Observation.status, Observation.reason)
                .join(Target, Target.id == Observation.target_id)
                .where(Observation.target_id.in_(ids), Target.last_slot >= slot,
                       Observation.first_slot <= slot, Observation.last_slot >= slot)).all()
            for target_id, status, reason in rows:
                out.append(CheckResult(target_id, by_id[target_id].rival, status, reason))
        return out

    deadline = time.monotonic() + timeout_s if timeout_s else None
    last_sweep = time.monotonic()
    sweep_every = max(1.0, min(settings.resend_after_s, 60.0))
    client = engine.redis
    try:
        while pending:
            if deadline is not None and time.monotonic() > deadline:
                raise TrackerError(f"{len(pending)} checks still without a result after {timeout_s:.0f}s "
                                   "(are workers running? `tracker status`)")
            try:
                item = await asyncio.to_thread(client.blpop, [results_key], 1)
            except redis.RedisError as exc:
                log.warning("waiting for results: %s", exc)
                await asyncio.sleep(1)
                item = None
            raws = [item[1]] if item is not None else []
            while raws:
                duplicates: dict[int, CheckResult] = {}
                for raw in raws:
                    data = json.loads(raw)
                    target_id = data["target_id"]
                    if target_id not in pending:
                        continue
                    result = CheckResult(target_id, by_id[target_id].rival, data["status"], data["reason"],
                                         data["changes"], data["duplicate"], data["via"])
                    if result.duplicate:
                        duplicates[target_id] = result
                    else:
                        finish(result)
                if duplicates:
                    # Recorded by another delivery (or another pass): count what was recorded, read for
                    # all of this batch's duplicates at once.
                    settled = {r.target_id: r for r in
                               await asyncio.to_thread(settle_from_db, set(duplicates))}
                    for target_id, result in duplicates.items():
                        if target_id in pending:
                            finish(settled.get(target_id, result))
                raws = _pop_many(client, results_key, 1000)
            if pending and time.monotonic() - last_sweep >= sweep_every:
                last_sweep = time.monotonic()
                for result in await asyncio.to_thread(settle_from_db, set(pending)):
                    finish(result)
                lost = []
                for target_id in list(pending):
                    if time.monotonic() - sent_at[target_id] < settings.resend_after_s:
                        continue
                    try:
                        still = engine.message_pending(queues[target_id], message_ids.get(target_id))
                    except redis.RedisError:
                        continue
                    if still is False or (still is None):
                        lost.append(target_id)
                    else:
                        sent_at[target_id] = time.monotonic()
                if lost:
                    log.warning("sending %d checks again (no result after %.0fs)", len(lost),
                                settings.resend_after_s)
                    try:
                        await asyncio.to_thread(send, lost)
                    except redis.RedisError as exc:
                        log.warning("resend failed: %s", exc)
    finally:
        with contextlib.suppress(redis.RedisError):
            client.delete(results_key)
        if own_engine:
            engine.close()

    def finish_run() -> None:
        with db.session() as session:
            run = session.get(Run, run_id)
            if run is not None:
                run.finished_at = datetime.now(UTC)
                run.counts = summary.as_json()

    await asyncio.to_thread(finish_run)
    return summary


def _pop_many(client: redis.Redis, key: str, count: int) -> list[bytes]:
    """Up to `count` items from the head of a list in one round trip (LPOP with a count: Redis 6.2+)."""
    try:
        return client.lpop(key, count) or []
    except redis.ResponseError:          # an older Redis: one at a time
        raw = client.lpop(key)
        return [raw] if raw is not None else []
    except redis.RedisError:
        return []


# ------------------------------------------------------------------------------------------------------
# `tracker status`

def status(config: Config, db: Database | None = None, *, engine: Engine | None = None) -> dict[str, Any]:
    """Queue depths, in-flight checks, worker heartbeats, throttled domains, the dispatcher."""
    engine = engine or connect(config)
    client = engine.redis
    now = time.time()
    out: dict[str, Any] = {"broker": _mask(engine.url), "queues": {}, "workers": [], "in_flight": [],
                           "throttled": {}, "dispatcher": {}}
    if client is not None and engine.redis_url == engine.url:
        for q in QUEUES:
            key = f"{NAMESPACE}:{q}"
            ready = client.llen(key)
            stored = client.hlen(f"{key}.msgs")
            out["queues"][q] = {"ready": ready, "unacked": max(0, stored - ready),
                                "delayed": client.hlen(f"{key}.DQ.msgs"), "dead": client.zcard(f"{key}.XQ")}
    if client is not None:
        for raw in client.hgetall(f"{PREFIX}:workers").values():
            info = json.loads(raw)
            info["age_s"] = round(now - info["beat_at"], 1)
            out["workers"].append(info)
            for item in info.get("in_flight", []):
                out["in_flight"].append(dict(item, worker=info["worker"], running_s=round(now - item["since"], 1)))
        out["workers"].sort(key=lambda w: w["worker"])
        out["throttled"] = throttled_domains(client)
        disp = {k.decode(): v.decode() for k, v in client.hgetall(f"{PREFIX}:dispatcher").items()}
        if disp:
            out["dispatcher"] = {"holder": disp.get("holder"),
                                 "tick_age_s": round(now - float(disp.get("tick_at", now)), 1)}
    if db is not None:
        with db.session() as session:
            pending = session.scalar(select(func.count()).select_from(dispatches)) or 0
            unsent = session.scalar(select(func.count()).select_from(dispatches)
                                    .where(dispatches.c.sent_at.is_(None))) or 0
        out["dispatcher"].update({"lease": DbLease(db, "dispatcher").current_holder(),
                                  "slots_pending": pending, "slots_unsent": unsent})
    return out


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def prune_workers(client: redis.Redis, older_than_s: float = 86400) -> int:
    """Forget heartbeats of workers gone for more than a day."""
    gone = [k for k, v in client.hgetall(f"{PREFIX}:workers").items()
            if time.time() - json.loads(v)["beat_at"] > older_than_s]
    if gone:
        client.hdel(f"{PREFIX}:workers", *gone)
    return len(gone)


__all__ = ["QUEUES", "Engine", "Dispatcher", "RedisDomainLimiter", "WorkerRuntime", "QueueSettings",
           "broker_url", "check_distributed", "connect", "queue_for", "queue_settings", "status"]
