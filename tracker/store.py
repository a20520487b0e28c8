"""Recording one check: the idempotent write at the heart of the unit of work.

`record_check` runs in ONE transaction: claim the slot (compare-and-set on `targets.last_slot`), extend or
start an observation span, diff against the previous `ok` observation, write the changes, update the
target's failure streak. A second delivery of the same (target, slot) finds the slot taken and writes
nothing, so a check retried by a worker, the scheduler or a restart is counted once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tracker.diff import ChangeData, ProductState, Rules, diff_product, health_changes
from tracker.models import Change, Observation, Target


@dataclass(frozen=True)
class Observed:
    """What one check saw, before it is stored. `status` is ok | failed | blocked | unextractable."""

    status: str
    reason: str | None = None
    price: Decimal | None = None
    regular_price: Decimal | None = None
    currency: str | None = None
    availability: str | None = None
    promotions: tuple[str, ...] = ()
    title: str | None = None
    sku: str | None = None
    gtin: str | None = None
    rank: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Equal for two checks that saw the same thing (time-independent)."""
        payload = orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS, default=_json_default)
        return hashlib.blake2b(payload, digest_size=16).hexdigest()

    @classmethod
    def from_row(cls, row: Observation) -> "Observed":
        return cls(status=row.status, reason=row.reason, price=row.price, regular_price=row.regular_price,
                   currency=row.currency, availability=row.availability,
                   promotions=tuple(row.promotions or ()), title=row.title, sku=row.sku, gtin=row.gtin,
                   rank=row.rank, data=dict(row.data or {}))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(type(value).__name__)


def product_state(obs: Observed) -> ProductState:
    return ProductState(price=obs.price, regular_price=obs.regular_price, currency=obs.currency,
                        availability=obs.availability, promotions=frozenset(obs.promotions), name=obs.title)


def _diff_product(prev: Observed | None, cur: Observed, rules: Rules) -> list[ChangeData]:
    return diff_product(product_state(prev) if prev else None, product_state(cur), rules)


# Target kind -> diff of two `ok` observations. A new kind of target registers its differ here.
DIFFERS: dict[str, Callable[[Observed | None, Observed, Rules], list[ChangeData]]] = {
    "product": _diff_product,
}


@dataclass(frozen=True)
class Recorded:
    """The outcome of record_check."""

    duplicate: bool                 # the slot was already recorded: nothing written
    observation_id: int | None = None
    new_span: bool = False
    changes: tuple[ChangeData, ...] = ()


def record_check(session: Session, target_id: int, slot: datetime, observed: Observed, *, now: datetime,
                 rules: Rules = Rules()) -> Recorded:
    """Store one check of one target for one slot, idempotently. The caller commits."""
    claimed = session.execute(
        update(Target)
        .where(Target.id == target_id, or_(Target.last_slot.is_(None), Target.last_slot < slot))
        .values(last_slot=slot)
        .returning(Target.kind, Target.fail_streak, Target.failing_since)
    ).first()
    if claimed is None:
        return Recorded(duplicate=True)
    kind, streak_before, failing_since = claimed

    latest = session.scalars(
        select(Observation).where(Observation.target_id == target_id).order_by(Observation.id.desc()).limit(1)
    ).first()
    fingerprint = observed.fingerprint()
    changes: list[ChangeData] = []
    if latest is not None and latest.fingerprint == fingerprint:
        latest.last_seen_at = now
        latest.last_slot = slot
        latest.seen_count += 1
        row, new_span = latest, False
    else:
        if observed.status == "ok":
            previous_ok = latest if latest is not None and latest.status == "ok" else session.scalars(
                select(Observation)
                .where(Observation.target_id == target_id, Observation.status == "ok")
                .order_by(Observation.id.desc()).limit(1)
            ).first()
            differ = DIFFERS.get(kind)
            if differ is not None:
                changes += differ(Observed.from_row(previous_ok) if previous_ok else None, observed, rules)
        row = Observation(
            target_id=target_id, status=observed.status, reason=observed.reason, fingerprint=fingerprint,
            first_seen_at=now, last_seen_at=now, first_slot=slot, last_slot=slot, seen_count=1,
            price=observed.price, regular_price=observed.regular_price, currency=observed.currency,
            availability=observed.availability, promotions=list(observed.promotions) or None,
            title=observed.title, sku=observed.sku, gtin=observed.gtin, rank=observed.rank,
            data=observed.data or None)
        session.add(row)
        session.flush()
        new_span = True

    since = failing_since.isoformat() if failing_since else now.isoformat()
    streak, health = health_changes(status=observed.status, reason=observed.reason,
                                    streak_before=streak_before, failing_since=since, rules=rules)
    changes += health
    session.execute(update(Target).where(Target.id == target_id).values(
        fail_streak=streak,
        failing_since=None if streak == 0 else (failing_since or now)))
    for change in changes:
        session.add(Change(target_id=target_id, observation_id=row.id, kind=change.kind, detected_at=now,
                           data=change.data))
    return Recorded(duplicate=False, observation_id=row.id, new_span=new_span, changes=tuple(changes))
