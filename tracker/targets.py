"""Turning the config into rows: rivals and targets, synchronized at every start.

A target row carries in `spec` everything a worker needs to check it (URL, fetch mode, selectors, robots
override), so the unit of work "check target T for slot S" needs only the target id and the database.
Targets removed from the config are deactivated, never deleted: their history stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tracker.config import Config, KeywordConfig, ListingConfig, ProductConfig, RivalConfig
from tracker.models import Rival, Target


@dataclass(frozen=True)
class TargetRef:
    """A target to check in a pass."""

    id: int
    kind: str
    rival: str | None
    url: str | None
    name: str | None


def _product_spec(rival: RivalConfig, product: ProductConfig) -> dict:
    return {
        "fetch": product.fetch or rival.fetch,
        "selectors": product.selectors.model_dump(exclude_none=True) if product.selectors else {},
        "respect_robots": rival.respect_robots,
        "rival": rival.name,
    }


def _listing_spec(rival: RivalConfig, listing: ListingConfig) -> dict:
    names = {"item": "item", "link": "link", "title": "name", "price": "price", "regular_price": "regular_price",
             "badge": "badge", "next": "next"}  # config key -> ListingSelectors field
    selectors = {field: getattr(listing, key) for key, field in names.items() if getattr(listing, key)}
    return {"fetch": listing.fetch or rival.fetch, "selectors": selectors, "max_pages": listing.max_pages,
            "confirm_removal_after": listing.confirm_removal_after,
            "respect_robots": rival.respect_robots, "rival": rival.name}


def keyword_key(kw: KeywordConfig) -> str:
    return f"{kw.engine}|{kw.locale}|{kw.device}|{kw.depth}|{kw.term}"


def _keyword_spec(config: Config, kw: KeywordConfig) -> dict:
    """Everything a worker needs for a ranking check, including the domains to find in the results."""
    domains = {r.name: r.domain for r in config.rivals if r.domain}
    spec = {"term": kw.term, "engine": kw.engine, "locale": kw.locale, "device": kw.device,
            "depth": kw.depth, "tags": list(kw.tags), "own_domain": config.own_domain, "domains": domains,
            "rank_change": kw.rank_change, "top_n": kw.top_n}
    if kw.engine in config.engines:
        spec["custom_engine"] = config.engines[kw.engine].model_dump()
    return spec


def sync_targets(session: Session, config: Config) -> list[TargetRef]:
    """Upsert rivals and targets from the config; deactivate targets no longer in it.

    Targets are compared as plain rows (Core, no ORM objects) and only new or changed ones are written:
    every `tracker check` and every dispatcher tick runs this over all targets, 50,000 and more."""
    rivals = {r.name: r for r in session.scalars(select(Rival))}
    table = Target.__table__
    columns = [table.c[name] for name in _SYNCED]
    existing = {(kind, key): (tid, active, dict(zip(_SYNCED, values, strict=True)))
                for tid, kind, key, active, *values in session.execute(
                    select(table.c.id, table.c.kind, table.c.key, table.c.active, *columns))}
    wanted: dict[tuple[str, str], dict[str, Any]] = {}

    def upsert(kind: str, key: str, rival: Rival | None, **values: Any) -> None:
        values["spec"] = orjson.loads(orjson.dumps(values["spec"]))  # as it reads back from the JSON column
        wanted[(kind, key)] = {"rival_id": rival.id if rival else None, **values}

    for rc in config.rivals:
        rival = rivals.get(rc.name)
        if rival is None:
            rival = rivals[rc.name] = Rival(name=rc.name)
            session.add(rival)
        rival.domain = rc.domain
        rival.own = rc.own
        session.flush()
        for pc in rc.products:
            upsert("product", pc.url, rival, url=pc.url, name=pc.name, match_key=pc.match, group=pc.group,
                   spec=_product_spec(rc, pc))
        for lc in rc.listings:
            upsert("listing", lc.url, rival, url=lc.url, name=lc.name, spec=_listing_spec(rc, lc))
        seo_urls = list(rc.seo_pages)
        if rc.track_seo:
            seo_urls += [p.url for p in rc.products] + [li.url for li in rc.listings]
        for url in dict.fromkeys(seo_urls):
            upsert("seo", url, rival, url=url, name=None,
                   spec={"respect_robots": rc.respect_robots, "rival": rc.name})
    for kw in config.keywords:
        upsert("serp", keyword_key(kw), None, url=None, name=kw.term, spec=_keyword_spec(config, kw))

    new_rows = []
    for (kind, key), values in wanted.items():
        found = existing.get((kind, key))
        if found is None:
            new_rows.append({"kind": kind, "key": key, "fail_streak": 0, "active": True, "match_key": None,
                             "group": None, **values})
            continue
        tid, active, current = found
        # Only the fields the config sets are compared (a listing's match key, say, is not the config's).
        changed = {name: value for name, value in values.items() if current[name] != value}
        if changed or not active:
            session.execute(update(table).where(table.c.id == tid).values(active=True, **changed))
    if new_rows:
        session.execute(insert(table), new_rows)
    # Products found by `tracker discover --track` are not in the config but stay tracked.
    gone = [tid for key, (tid, active, current) in existing.items()
            if key not in wanted and active and not (current["spec"] or {}).get("discovered")]
    for start in range(0, len(gone), 500):
        session.execute(update(table).where(table.c.id.in_(gone[start:start + 500])).values(active=False))
    return active_targets(session)


_SYNCED = ("rival_id", "url", "name", "match_key", "group", "spec")


def active_targets(session: Session, *, rival: str | None = None, kinds: tuple[str, ...] | None = None
                   ) -> list[TargetRef]:
    query = (select(Target.id, Target.kind, Rival.name, Target.url, Target.name)
             .outerjoin(Rival, Rival.id == Target.rival_id)
             .where(Target.active.is_(True)).order_by(Target.id))
    if rival is not None:
        query = query.where(Rival.name == rival)
    if kinds:
        query = query.where(Target.kind.in_(kinds))
    return [TargetRef(*row) for row in session.execute(query)]


def deactivate_all(session: Session) -> None:
    session.execute(update(Target).values(active=False))
