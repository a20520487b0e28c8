"""Turning the config into rows: rivals and targets, synchronized at every start.

A target row carries in `spec` everything a worker needs to check it (URL, fetch mode, selectors, robots
override), so the unit of work "check target T for slot S" needs only the target id and the database.
Targets removed from the config are deactivated, never deleted: their history stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tracker.config import Config, ProductConfig, RivalConfig
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


def sync_targets(session: Session, config: Config) -> list[TargetRef]:
    """Upsert rivals and targets from the config; deactivate targets no longer in it."""
    rivals = {r.name: r for r in session.scalars(select(Rival))}
    existing = {(t.kind, t.key): t for t in session.scalars(select(Target))}
    wanted: set[tuple[str, str]] = set()
    for rc in config.rivals:
        rival = rivals.get(rc.name)
        if rival is None:
            rival = rivals[rc.name] = Rival(name=rc.name)
            session.add(rival)
        rival.domain = rc.domain
        rival.own = rc.own
        session.flush()
        for pc in rc.products:
            key = ("product", pc.url)
            wanted.add(key)
            target = existing.get(key)
            if target is None:
                target = existing[key] = Target(kind="product", key=pc.url, fail_streak=0)
                session.add(target)
            target.rival_id = rival.id
            target.url = pc.url
            target.name = pc.name
            target.match_key = pc.match
            target.group = pc.group
            target.spec = _product_spec(rc, pc)
            target.active = True
    for key, target in existing.items():
        if key not in wanted and target.kind == "product" and target.active:
            target.active = False
    session.flush()
    return active_targets(session)


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
