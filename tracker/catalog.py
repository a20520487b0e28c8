"""The catalogue: finding a rival's products (`tracker discover`) and tying them to the own shop's
products (`tracker match`). The CLI (tracker/cli_catalog.py) only parses arguments and prints.

Discovery reads the rival's sitemaps (robots.txt `Sitemap:` lines, else /sitemap.xml; through
`scrapers.sitemap.discover`, run in a thread) and the product cards of its configured listings, keeps
on-domain URLs that pass --include / --exclude, and proposes those no product target has yet. With
`track=True` they become product targets with `spec["discovered"] = True`, so `sync_targets` can tell
them from targets that were removed from the config.

Matching compares each rival product (its newest `ok` observation: title, SKU, GTIN, brand, MPN) with the
own shop's products (the rival with `own: true`) through `tracker.matching.match`. A `match:` key in the
config always wins (no guessing for that product); a decision stored by `--review` (confirmed / rejected,
table `matches`) is never guessed again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrapers.errors import FetchError
from scrapers.fetch import HttpFetcher, Politeness
from scrapers.listing import crawl_listing, normalize_url
from scrapers.sitemap import Fetch, SitemapError, discover, filter_urls
from tracker.config import Config, RivalConfig
from tracker.db import Database
from tracker.errors import TrackerError
from tracker.matching import DEFAULT_THRESHOLD, MatchResult, ProductRef, match
from tracker.models import Observation, Rival, Target
from tracker.models_catalog import ProductMatch

AUTO_ACCEPT = 0.9      # a proposal at least this sure is listed as "auto", below it as "uncertain" (--review)
REVIEW_MIN = 0.5       # below this a best candidate is not worth a person's time


# ============================================================================================ discovery

@dataclass
class DiscoveryReport:
    rival: str
    proposed: list[str] = field(default_factory=list)       # product URLs not tracked yet
    tracked: list[str] = field(default_factory=list)        # of those, added as targets (track=True)
    already_tracked: int = 0
    from_sitemaps: int = 0
    from_listings: int = 0
    sitemaps_read: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    truncated: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def rival_config(config: Config, name: str) -> RivalConfig:
    for rc in config.rivals:
        if rc.name == name or rc.name.lower() == name.lower():
            return rc
    names = ", ".join(r.name for r in config.rivals) or "none configured"
    raise TrackerError(f"no rival named {name!r} (rivals: {names})")


def discovered_spec(rc: RivalConfig) -> dict[str, Any]:
    """The spec tracker/targets.py builds for a product, marked as discovered."""
    return {"fetch": rc.fetch, "selectors": {}, "respect_robots": rc.respect_robots, "rival": rc.name,
            "discovered": True}


def _norm(url: str) -> str:
    return normalize_url(url, url) or url


async def _listing_urls(config: Config, rc: RivalConfig, report: DiscoveryReport) -> list[str]:
    if not rc.listings:
        return []
    http_cfg = config.http
    urls: list[str] = []
    respect = http_cfg.respect_robots if rc.respect_robots is None else rc.respect_robots
    async with HttpFetcher(user_agent=http_cfg.user_agent, timeout_s=http_cfg.timeout_s,
                           max_bytes=http_cfg.max_bytes, retries=http_cfg.retries,
                           politeness=Politeness(http_cfg.per_domain_concurrency, http_cfg.per_domain_delay_s),
                           respect_robots=respect, verify_tls=http_cfg.verify_tls) as http:
        for lc in rc.listings:
            try:
                pages = await crawl_listing(lc.url, http.fetch, max_pages=lc.max_pages)
            except FetchError as exc:
                report.problems.append(f"listing {lc.url}: {exc.reason}")
                continue
            urls += [item.url for _, page in pages for item in page.items]
    return urls


async def discover_products(config: Config, db: Database, rival: str, *, include: Sequence[str] = (),
                            exclude: Sequence[str] = (), max_new: int = 100, track: bool = False,
                            sitemap_fetch: Fetch | None = None) -> DiscoveryReport:
    """Product URLs of `rival` that are not tracked yet (see the module docstring)."""
    rc = rival_config(config, rival)
    if not rc.domain:
        raise TrackerError(f"rival {rc.name!r} has no domain: set `domain:` or give it a product or listing URL")
    report = DiscoveryReport(rival=rc.name)
    first = next((u for u in [p.url for p in rc.products] + [li.url for li in rc.listings]), None)
    start = first or f"https://{rc.domain}/"
    kwargs: dict[str, Any] = {"allowed_domains": [rc.domain], "include": list(include), "exclude": list(exclude)}
    if sitemap_fetch is not None:
        kwargs["fetch"] = sitemap_fetch
    candidates: list[str] = []
    try:
        found = await asyncio.to_thread(discover, start, **kwargs)
        report.from_sitemaps, report.sitemaps_read = len(found.urls), found.sitemaps_read
        report.dropped += found.dropped
        report.truncated = found.truncated
        candidates += found.urls
    except SitemapError as exc:
        report.problems.append(f"sitemaps: {exc.reason}")
    listing_urls = await _listing_urls(config, rc, report)
    kept, dropped, _filtered, _trunc = filter_urls(listing_urls, allowed_domains=[rc.domain], include=include,
                                                   exclude=exclude)
    report.from_listings = len(kept)
    report.dropped += dropped
    candidates += kept

    def work() -> None:
        with db.session() as session:
            known = {_norm(u) for u in session.scalars(select(Target.url).where(Target.kind == "product"))
                     if u}
            known |= {_norm(p.url) for r in config.rivals for p in r.products}
            known |= {_norm(li.url) for r in config.rivals for li in r.listings}
            seen: set[str] = set()
            for url in candidates:
                key = _norm(url)
                if key in seen:
                    continue
                seen.add(key)
                if key in known:
                    report.already_tracked += 1
                    continue
                if len(report.proposed) < max_new:
                    report.proposed.append(url)
            if not track or not report.proposed:
                return
            row = session.scalars(select(Rival).where(Rival.name == rc.name)).first()
            if row is None:
                row = Rival(name=rc.name, domain=rc.domain, own=rc.own)
                session.add(row)
                session.flush()
            for url in report.proposed:
                session.add(Target(kind="product", key=url, url=url, name=None, rival_id=row.id,
                                   spec=discovered_spec(rc), active=True, fail_streak=0))
                report.tracked.append(url)

    await asyncio.to_thread(work)
    return report


# ============================================================================================= matching

@dataclass
class Product:
    target_id: int
    rival: str
    url: str | None
    title: str
    match_key: str | None
    ref: ProductRef


@dataclass
class Proposal:
    rival: str
    target_id: int
    title: str
    url: str | None
    own_target_id: int
    own_title: str
    own_url: str | None
    confidence: float
    method: str
    reason: str
    status: str          # config | confirmed | auto | uncertain

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _products(session: Session) -> list[tuple[Product, bool]]:
    """(product, is_own) for every active product target with something to compare (title at least)."""
    rows = session.execute(
        select(Target, Rival).join(Rival, Rival.id == Target.rival_id)
        .where(Target.kind == "product", Target.active.is_(True)).order_by(Rival.name, Target.id)).all()
    latest: dict[int, Observation] = {}
    ids = [t.id for t, _ in rows]
    if ids:
        for obs in session.scalars(select(Observation).where(Observation.target_id.in_(ids),
                                                             Observation.status == "ok")
                                   .order_by(Observation.target_id, Observation.id)):
            latest[obs.target_id] = obs
    out = []
    for target, rival in rows:
        obs = latest.get(target.id)
        data = (obs.data or {}) if obs is not None else {}
        title = (obs.title if obs is not None and obs.title else None) or target.name
        if not title and not target.match_key:
            continue
        ref = ProductRef(title=title or "", gtin=obs.gtin if obs is not None else None,
                         sku=obs.sku if obs is not None else None, mpn=data.get("mpn"), brand=data.get("brand"))
        out.append((Product(target.id, rival.name, target.url, title or target.url or "", target.match_key, ref),
                    bool(rival.own)))
    return out


def propose_matches(session: Session, *, threshold: float = DEFAULT_THRESHOLD) -> list[Proposal]:
    """For each rival product, its match among the own shop's products (see the module docstring)."""
    products = _products(session)
    own = [p for p, is_own in products if is_own]
    rivals = [p for p, is_own in products if not is_own]
    if not session.scalar(select(Rival.id).where(Rival.own.is_(True)).limit(1)):
        raise TrackerError("no own shop: mark your shop's rival entry with `own: true` in the config")
    decisions = {(m.target_id, m.own_target_id): m for m in session.scalars(select(ProductMatch))}
    by_id = {p.target_id: p for p in own}
    out: list[Proposal] = []

    def proposal(r: Product, o: Product, conf: float, method: str, reason: str, status: str) -> Proposal:
        return Proposal(r.rival, r.target_id, r.title, r.url, o.target_id, o.title, o.url, round(conf, 3),
                        method, reason, status)

    for r in rivals:
        if r.match_key:
            for o in own:
                if o.match_key == r.match_key:
                    out.append(proposal(r, o, 1.0, "config", f"match key {r.match_key!r} in the config", "config"))
            continue  # the config decides for this product: never guessed
        confirmed = [m for (tid, _), m in decisions.items() if tid == r.target_id and m.status == "confirmed"]
        if confirmed and confirmed[0].own_target_id in by_id:
            m = confirmed[0]
            out.append(proposal(r, by_id[m.own_target_id], m.confidence, m.method, "confirmed by a person",
                                "confirmed"))
            continue
        best: tuple[Product, MatchResult] | None = None
        for o in own:
            decided = decisions.get((r.target_id, o.target_id))
            if decided is not None and decided.status == "rejected":
                continue
            res = match(r.ref, o.ref, threshold=threshold)
            if best is None or res.confidence > best[1].confidence:
                best = (o, res)
        if best is None:
            continue
        o, res = best
        if res.is_match and res.confidence >= AUTO_ACCEPT:
            out.append(proposal(r, o, res.confidence, res.method, res.reason, "auto"))
        elif res.confidence >= REVIEW_MIN and (res.is_match or res.method == "title"):
            out.append(proposal(r, o, res.confidence, res.method, res.reason, "uncertain"))
    return out


def decide(session: Session, proposal: Proposal, confirmed: bool, *, now: datetime | None = None) -> None:
    """Store a person's decision on one pair: it is never proposed or guessed again."""
    row = session.scalars(select(ProductMatch).where(ProductMatch.target_id == proposal.target_id,
                                                     ProductMatch.own_target_id == proposal.own_target_id)).first()
    if row is None:
        row = ProductMatch(target_id=proposal.target_id, own_target_id=proposal.own_target_id)
        session.add(row)
    row.confidence = proposal.confidence
    row.method = proposal.method
    row.status = "confirmed" if confirmed else "rejected"
    row.decided_at = now or datetime.now(UTC)
    session.flush()


def review(db: Database, ask: Callable[[Proposal], bool]) -> tuple[list[Proposal], int, int]:
    """Propose matches and ask `ask(proposal)` about each uncertain one; store the answers.
    Returns (proposals before the review, confirmed, rejected)."""
    with db.session() as session:
        proposals = propose_matches(session)
    confirmed = rejected = 0
    for p in proposals:
        if p.status != "uncertain":
            continue
        yes = ask(p)
        with db.session() as session:
            decide(session, p, yes)
        confirmed += yes
        rejected += not yes
    return proposals, confirmed, rejected
