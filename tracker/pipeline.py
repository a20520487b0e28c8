"""One check pass: plan targets -> fetch -> extract -> store -> diff.

The unit of work is `Checker.check(target_id, slot)`: self-contained (it needs only the id, the slot and the
database), idempotent (see tracker.store) and free of process-local state beyond shared connections, so
the same coroutine runs in `tracker check`, under the scheduler, and inside a distributed worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from scrapers.blocked import detect_block
from scrapers.browser import BrowserFetcher
from scrapers.errors import FetchError
from scrapers.fetch import HttpFetcher, Page, Politeness
from scrapers.product import extract_product
from scrapers.types import Product, Selectors
from tracker.config import Config
from tracker.db import Database
from tracker.errors import DatabaseError
from tracker.diff import Rules
from tracker.models import Rival, Run, Target
from tracker.store import CheckItem, CheckWrite, Observed, PageChanged, Recorded, run_writes
from tracker.targets import TargetRef

T = TypeVar("T")
log = logging.getLogger("tracker.pipeline")
STATUSES = ("ok", "failed", "blocked", "unextractable")


@dataclass(frozen=True)
class TargetSpec:
    """A target as a worker sees it: loaded from its row, nothing from the config file needed."""

    id: int
    kind: str
    url: str | None
    name: str | None
    rival: str | None
    spec: dict[str, Any]
    page_digest: str | None = None   # of the page behind the latest observation (see observe_product)


# The columns of a TargetSpec (a worker adds `last_slot`, see tracker.queue) and the spec from such a row.
TARGET_SPECS = (select(Target.id, Target.kind, Target.url, Target.name, Rival.name.label("rival"), Target.spec,
                       Target.page_digest)
                .outerjoin(Rival, Rival.id == Target.rival_id))


def target_spec(row: Any) -> TargetSpec:
    return TargetSpec(row.id, row.kind, row.url, row.name, row.rival, dict(row.spec or {}), row.page_digest)


@dataclass(frozen=True)
class CheckResult:
    target_id: int
    rival: str | None
    status: str
    reason: str | None = None
    changes: int = 0
    duplicate: bool = False
    via: str | None = None


@dataclass
class PassSummary:
    """Counts per rival and status for one pass, and how many changes it found."""

    run_id: int | None = None
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    changes: int = 0
    duplicates: int = 0

    def add(self, result: CheckResult) -> None:
        if result.duplicate:
            self.duplicates += 1
            return
        self.counts[result.rival or "(keywords)"][result.status] += 1
        self.changes += result.changes

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "changes": self.changes, "duplicates": self.duplicates,
                "rivals": {r: dict(c) for r, c in self.counts.items()}}

    def merge(self, other: dict[str, Any]) -> None:
        """Add another summary's `as_json()` (a part of this pass checked elsewhere)."""
        self.changes += other["changes"]
        self.duplicates += other["duplicates"]
        for rival, counts in other["rivals"].items():
            self.counts[rival].update(counts)


def rules_from(config: Config) -> Rules:
    t = config.thresholds
    return Rules(price_change_pct=t.price_change_pct, health_after=t.health_after, rating_drop=t.rating_drop,
                 review_jump_pct=t.review_jump_pct, review_jump_min=t.review_jump_min)


def utc_slot(when: datetime | None = None) -> datetime:
    """A slot: an aware UTC time. An ad-hoc check uses 'now' to the microsecond, so two `tracker check`
    runs within one second are two passes, not one pass and a duplicate (a scheduled slot is the
    schedule's whole-second time)."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC)


def db_writers(dialect: str) -> int:
    """Group commits a process runs at once: one on SQLite (one writer per database), four on a server
    database (while one batch's statements run on the server, the next batch is prepared)."""
    return 1 if dialect == "sqlite" else 4


class Checker:
    """Holds a process's shared resources (fetchers, database) and runs checks with them."""

    def __init__(self, config: Config, db: Database, *, http: HttpFetcher | None = None,
                 browser: BrowserFetcher | None = None):
        self.config = config
        self.db = db
        self.rules = rules_from(config)
        self.http = http or HttpFetcher(
            user_agent=config.http.user_agent, timeout_s=config.http.timeout_s,
            max_bytes=config.http.max_bytes, retries=config.http.retries,
            politeness=Politeness(config.http.per_domain_concurrency, config.http.per_domain_delay_s),
            verify_tls=config.http.verify_tls, max_connections=config.http.max_connections,
            respect_robots=config.http.respect_robots)
        self.browser = browser or BrowserFetcher(
            executable=config.resolve(config.browser.executable) if config.browser.executable else None,
            concurrency=config.browser.concurrency, block=tuple(config.browser.block),
            timeout_s=config.browser.timeout_s, headless=config.browser.headless)
        # SQLite has one writer: a single DB thread keeps writes in order and the event loop free.
        self._db_threads = ThreadPoolExecutor(max_workers=db_writers(db.dialect), thread_name_prefix="tracker-db")
        # Group commit: writes of checks that finish while the DB thread is busy wait together and are
        # committed in one transaction (one fsync/round trip for many targets, see _write).
        self._pending_writes: list[tuple[Callable[[Session], Any], asyncio.Future[Any]]] = []
        self._flushers = 0
        self._max_flushers = db_writers(db.dialect)

    async def __aenter__(self) -> "Checker":
        await self.http.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.__aexit__(*exc)
        await self.browser.close()
        self._db_threads.shutdown(wait=True)

    async def _in_db(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_threads, fn)

    async def _write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in a transaction on a DB thread, group-committed with other pending writes.

        Each `fn` is one whole unit of work (record_check is idempotent and self-contained), so a batch of
        them in one transaction is all-or-nothing like each of them alone. If the batch fails, it is rolled
        back and every `fn` is retried in a transaction of its own, so one bad write never fails another.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending_writes.append((fn, future))
        if self._flushers < self._max_flushers:
            self._flushers += 1
            asyncio.get_running_loop().create_task(self._flush_writes())
        return await future

    async def _flush_writes(self, max_batch: int = 256) -> None:
        try:
            while self._pending_writes:
                batch = self._pending_writes[:max_batch]
                del self._pending_writes[:max_batch]
                try:
                    outcomes = await self._in_db(lambda: self._run_batch([fn for fn, _ in batch]))
                except BaseException as exc:  # noqa: BLE001 - e.g. cancelled: nobody may wait forever
                    outcomes = [(False, exc)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushers -= 1

    def _run_batch(self, fns: list[Callable[[Session], Any]]) -> list[tuple[bool, Any]]:
        if len(fns) > 1:
            try:
                with self.db.session() as session:
                    # Check writes (CheckWrite) are recorded together: record_checks, a few statements.
                    return [(True, value) for value in run_writes(session, fns)]
            except Exception:  # noqa: BLE001 - rolled back: redo one by one below
                pass
        outcomes: list[tuple[bool, Any]] = []
        for fn in fns:
            for attempt in range(2):
                try:
                    with self.db.session() as session:
                        outcomes.append((True, fn(session)))
                    break
                except (OperationalError, DatabaseError) as exc:
                    # A connection dropped mid-transaction: the write is idempotent, so try it once more.
                    if attempt == 1:
                        outcomes.append((False, exc))
                    else:
                        time.sleep(0.5)
                except Exception as exc:  # noqa: BLE001 - handed to that write's caller
                    outcomes.append((False, exc))
                    break
        return outcomes

    # -- the unit of work -------------------------------------------------------------------------------

    async def check(self, target_id: int, slot: datetime, *, target: TargetSpec | None = None) -> CheckResult:
        """Check one target for one slot: fetch, extract, store, diff. Never raises for a bad page.

        `target` is the target's row when the caller already loaded it (run_pass loads a pass's in one query).
        """
        if target is None or target.id != target_id:
            target = await self._in_db(lambda: self._load(target_id))
        try:
            return await self._check(target, slot)
        except PageChanged:
            # Another process recorded a different page since `target` was loaded: parse this time.
            return await self._check(replace(target, page_digest=None), slot)

    async def _check(self, target: TargetSpec, slot: datetime) -> CheckResult:
        observe = observer_for(target.kind)
        if observe is None:
            observed, via = Observed("failed", f"no observer for target kind {target.kind!r}"), None
        else:
            try:
                observed, via = await observe(self, target)
            except Exception as exc:  # noqa: BLE001 - a bug on one page must not stop the pass
                log.exception("check of target %s (%s) crashed", target.id, target.url)
                observed, via = Observed("failed", f"internal error: {type(exc).__name__}: {exc}"[:500]), None
        now = datetime.now(UTC)

        def result(recorded: Recorded) -> CheckResult:
            return CheckResult(target.id, target.rival, observed.status, observed.reason,
                               len(recorded.changes), recorded.duplicate, via)

        # Callable as write(session) like any unit of work; batched with the other checks' by _run_batch.
        return await self._write(CheckWrite(CheckItem(target.id, slot, observed, now), result, self.rules))

    def _load(self, target_id: int) -> TargetSpec:
        spec = self._load_many([target_id]).get(target_id)
        if spec is None:
            raise LookupError(f"target {target_id} does not exist")
        return spec

    def _load_many(self, target_ids: list[int]) -> dict[int, TargetSpec]:
        """The rows of many targets in a few queries (missing ids are left out: check() reports them)."""
        found: dict[int, TargetSpec] = {}
        with self.db.session() as session:
            for start in range(0, len(target_ids), 500):
                for row in session.execute(TARGET_SPECS.where(Target.id.in_(target_ids[start:start + 500]))):
                    found[row.id] = target_spec(row)
        return found

    # -- a pass -------------------------------------------------------------------------------------------

    async def run_pass(self, targets: Iterable[TargetRef], slot: datetime, *, trigger: str = "check",
                       on_result: Callable[[CheckResult], None] | None = None,
                       max_in_flight: int = 512, run_id: int | None = None) -> PassSummary:
        """Check every target for `slot` and record the pass as a Run (or as part of the Run `run_id`,
        which its caller then finishes: a pass split over processes, see tracker.app)."""
        targets = list(targets)
        own_run = run_id is None
        if run_id is None:
            run_id = await self._in_db(lambda: start_run(self.db, slot, trigger))
        summary = PassSummary(run_id=run_id)
        gate = asyncio.Semaphore(max_in_flight)
        specs = await self._in_db(lambda: self._load_many([ref.id for ref in targets]))

        async def one(ref: TargetRef) -> None:
            async with gate:
                try:
                    result = await self.check(ref.id, slot, target=specs.get(ref.id))
                except LookupError as exc:
                    result = CheckResult(ref.id, ref.rival, "failed", str(exc))
            summary.add(result)
            if on_result is not None:
                on_result(result)

        await asyncio.gather(*(one(ref) for ref in targets))
        if own_run:
            await self._in_db(lambda: finish_run(self.db, run_id, summary))
        return summary


def start_run(db: Database, slot: datetime, trigger: str) -> int:
    with db.session() as session:
        run = Run(slot=slot, trigger=trigger, started_at=datetime.now(UTC))
        session.add(run)
        session.flush()
        return run.id


def finish_run(db: Database, run_id: int, summary: PassSummary) -> None:
    with db.session() as session:
        run = session.get(Run, run_id)
        if run is not None:
            run.finished_at = datetime.now(UTC)
            run.counts = summary.as_json()


# ------------------------------------------------------------------------------------------------------
# Observers: target kind -> coroutine(checker, target) -> (Observed, via). A new kind registers here.

_EXTRACTOR_DIGEST: bytes | None = None


def _extractor_digest() -> bytes:
    """A digest of the extraction code (every module of `scrapers`): a page digest made with it stops
    matching when the extractor changes, so an upgrade re-reads unchanged pages."""
    global _EXTRACTOR_DIGEST
    if _EXTRACTOR_DIGEST is None:
        import scrapers

        h = hashlib.blake2b(digest_size=16)
        for path in sorted(Path(scrapers.__file__).parent.glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _EXTRACTOR_DIGEST = h.digest()
    return _EXTRACTOR_DIGEST


def page_digest(page: Page, selectors: dict[str, Any] | None) -> str:
    """Everything an observation of an HTTP page depends on: the extractor, the target's selectors, the
    final URL, the status and the body."""
    h = hashlib.blake2b(_extractor_digest(), digest_size=16)
    h.update(orjson.dumps(selectors or {}, option=orjson.OPT_SORT_KEYS))
    h.update(f"\0{page.final_url}\0{page.status}\0".encode())
    h.update(page.text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def observe_page(page: Page, product: Product | None = None, selectors: Selectors | None = None,
                 ) -> Observed:
    """Turn a fetched product page into an observation: blocked, failed, unextractable or ok."""
    block = detect_block(page.text, status=page.status, url=page.final_url, headers=page.headers)
    if block is not None:
        return Observed("blocked", f"{block.kind}: {block.reason}")
    if page.status >= 400:
        return Observed("failed", f"HTTP {page.status}")
    if product is None:
        product = extract_product(page.text, page.final_url, selectors)
    if product.price is None and (product.availability is None or product.availability.buyable):
        what = f"selector {selectors.price!r} matched nothing" if selectors and selectors.price \
            else "no price found on the page"
        return Observed("unextractable", what, title=product.name)
    return Observed(
        "ok", price=product.price, regular_price=product.regular_price, currency=product.currency,
        availability=product.availability.value if product.availability else None,
        promotions=tuple(sorted(set(product.promotions))), title=product.name, sku=product.sku,
        gtin=product.gtin, data=_product_extras(product))


def _product_extras(product: Product) -> dict[str, Any]:
    extras = {"coupon": product.coupon, "promotion_ends": product.promotion_ends,
              "shipping": format(product.shipping, "f") if product.shipping is not None else None,
              "rating": format(product.rating, "f") if product.rating is not None else None,
              "review_count": product.review_count, "brand": product.brand, "mpn": product.mpn}
    return {k: v for k, v in extras.items() if v is not None}


async def observe_product(checker: Checker, target: TargetSpec) -> tuple[Observed, str | None]:
    assert target.url is not None
    mode = target.spec.get("fetch", "auto")
    selectors = Selectors(**target.spec.get("selectors", {}))
    if mode in ("http", "auto"):
        try:
            page = await checker.http.fetch(target.url, respect_robots=target.spec.get("respect_robots"))
        except FetchError as exc:
            return Observed("failed", exc.reason), "http"
        digest = page_digest(page, target.spec.get("selectors"))
        if digest == target.page_digest:
            # Byte for byte the page behind the latest observation (and the same extractor): it would
            # be parsed into the same observation, so it is not parsed again.
            return Observed.unchanged_page(digest), "http"
        observed = observe_page(page, selectors=selectors)
        if observed.status == "ok":
            observed = replace(observed, page_digest=digest)
        # `auto` goes to the browser only when the page loaded but the value is not in its HTML.
        if mode == "http" or observed.status in ("ok", "failed") or (
                observed.status == "blocked" and not observed.reason.startswith("challenge")):
            return observed, "http"
    found: dict[str, Product] = {}

    def ready(html: str) -> bool:
        found["product"] = extract_product(html, target.url, selectors)
        return found["product"].price is not None

    try:
        page = await checker.browser.fetch(target.url, context_key=target.rival or "default",
                                           wait_for=selectors.wait_for, ready=ready)
    except FetchError as exc:
        return Observed("failed", exc.reason), "browser"
    product = found.get("product") if not selectors.wait_for else None
    return observe_page(page, product, selectors), "browser"


Observer = Callable[[Checker, TargetSpec], Awaitable[tuple[Observed, str | None]]]
OBSERVERS: dict[str, Observer] = {
    "product": observe_product,
}


def register_observer(kind: str, observer: Observer) -> Observer:
    """A new kind of target (listing, serp, seo) is one observer here and one differ in tracker.store."""
    OBSERVERS[kind] = observer
    return observer


def observer_for(kind: str) -> Observer | None:
    """The observer of a target kind, importing the kind's module (tracker.kinds) on first use."""
    from tracker import kinds

    return kinds.registered(OBSERVERS, kind)
