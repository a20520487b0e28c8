"""Price history of tracked products, as plain rows (for `tracker history` and the report's charts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tracker.models import Observation, Rival, Target


def find_products(session: Session, query: str) -> list[tuple[Target, Rival | None]]:
    """Product targets whose URL equals `query` or whose name/URL contains it (case-insensitive)."""
    like = f"%{query.lower()}%"
    rows = session.execute(
        select(Target, Rival).outerjoin(Rival, Rival.id == Target.rival_id)
        .where(Target.kind == "product")
        .where(or_(Target.url == query, Target.key.ilike(like), Target.name.ilike(like)))
        .order_by(Target.id)).all()
    if not rows:
        # The name may only be known from the page: look at observed titles too.
        ids = select(Observation.target_id).where(Observation.title.ilike(like)).distinct()
        rows = session.execute(select(Target, Rival).outerjoin(Rival, Rival.id == Target.rival_id)
                               .where(Target.kind == "product", Target.id.in_(ids))).all()
    return [(t, r) for t, r in rows]


def price_history(session: Session, query: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    out = []
    for target, rival in find_products(session, query):
        spans = session.scalars(select(Observation).where(Observation.target_id == target.id)
                                .order_by(Observation.id)).all()
        title = next((s.title for s in reversed(spans) if s.title), None)
        rows = [{
            "first_seen": s.first_seen_at.strftime("%Y-%m-%d %H:%M"),
            "last_seen": s.last_seen_at.strftime("%Y-%m-%d %H:%M"),
            "checks": s.seen_count, "status": s.status,
            "price": f"{s.price} {s.currency or ''}".strip() if s.price is not None else "",
            "regular_price": f"{s.regular_price}" if s.regular_price is not None else "",
            "promotions": ", ".join(s.promotions or []), "availability": s.availability,
            "reason": s.reason,
        } for s in spans]
        out.append(({"name": target.name or title, "url": target.url,
                     "rival": rival.name if rival else ""}, rows))
    return out
