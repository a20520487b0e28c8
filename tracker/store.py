"""Recording one check: the idempotent write at the heart of the unit of work.

`record_check` runs in ONE transaction: claim the slot (compare-and-set on `targets.last_slot`), extend or
start an observation span, diff against the previous `ok` observation, write the changes, update the
target's failure streak. A second delivery of the same (target, slot) finds the slot taken and writes
nothing, so a check retried by a worker, the scheduler or a restart is counted once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import bindparam, exists, func, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError
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
    # Not part of what was seen (left out of the fingerprint): the digest of the page this came from (kept
    # on the target so that the same page next time is not parsed again), and `same_page`: this check
    # fetched a page with the digest the target already has, so it saw exactly what the latest
    # observation holds, without parsing it (the other fields are empty then).
    page_digest: str | None = None
    same_page: bool = False

    @classmethod
    def unchanged_page(cls, page_digest: str) -> "Observed":
        return cls("ok", page_digest=page_digest, same_page=True)

    def fingerprint(self) -> str:
        """Equal for two checks that saw the same thing (time-independent)."""
        # A shallow field dict serializes exactly like dataclasses.asdict(self) (orjson walks the values)
        # without asdict's deep copy, which was half of this method's cost.
        payload = orjson.dumps({f.name: getattr(self, f.name) for f in _OBSERVED_FIELDS},
                               option=orjson.OPT_SORT_KEYS, default=_json_default)
        return hashlib.blake2b(payload, digest_size=16).hexdigest()

    @classmethod
    def from_row(cls, row: Observation) -> "Observed":
        return cls(status=row.status, reason=row.reason, price=row.price, regular_price=row.regular_price,
                   currency=row.currency, availability=row.availability,
                   promotions=tuple(row.promotions or ()), title=row.title, sku=row.sku, gtin=row.gtin,
                   rank=row.rank, data=dict(row.data or {}))


_OBSERVED_FIELDS = tuple(f for f in fields(Observed) if f.name not in ("page_digest", "same_page"))


class PageChanged(Exception):
    """A `same_page` observation met a target whose page digest is no longer the one it was loaded with
    (another process recorded a different page in between): the page must be parsed after all."""


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(type(value).__name__)


def product_state(obs: Observed) -> ProductState:
    rating, reviews = obs.data.get("rating"), obs.data.get("review_count")
    return ProductState(price=obs.price, regular_price=obs.regular_price, currency=obs.currency,
                        availability=obs.availability, promotions=frozenset(obs.promotions), name=obs.title,
                        rating=Decimal(rating) if rating is not None else None,
                        review_count=int(reviews) if reviews is not None else None)


def _diff_product(prev: Observed | None, cur: Observed, rules: Rules) -> list[ChangeData]:
    return diff_product(product_state(prev) if prev else None, product_state(cur), rules)


# Target kind -> diff of two `ok` observations. A new kind of target registers its differ here.
DIFFERS: dict[str, Callable[[Observed | None, Observed, Rules], list[ChangeData]]] = {
    "product": _diff_product,
}


def differ_for(kind: str) -> Callable[[Observed | None, Observed, Rules], list[ChangeData]] | None:
    """The differ of a target kind, importing the kind's module (tracker.kinds) on first use."""
    from tracker import kinds

    return kinds.registered(DIFFERS, kind)


@dataclass(frozen=True)
class Recorded:
    """The outcome of record_check."""

    duplicate: bool                 # the slot was already recorded: nothing written
    observation_id: int | None = None
    new_span: bool = False
    changes: tuple[ChangeData, ...] = ()


# The statements of record_check, built once: Core on the tables (not ORM-enabled), run on the session's
# connection. Building ORM statements for every check cost more than executing them (tracker check spent
# ~0.6 ms per target in SQLAlchemy's statement construction and ORM bulk-update machinery).
_T, _O, _C = Target.__table__, Observation.__table__, Change.__table__
_CLAIM = (update(_T)
          .where(_T.c.id == bindparam("p_tid"),
                 or_(_T.c.last_slot.is_(None), _T.c.last_slot < bindparam("p_slot", type_=_T.c.last_slot.type)))
          .values(last_slot=bindparam("p_new_slot", type_=_T.c.last_slot.type),
                  page_digest=bindparam("p_digest", type_=_T.c.page_digest.type))
          .returning(_T.c.kind, _T.c.fail_streak, _T.c.failing_since))
# The claim of a `same_page` check: only while the target still holds that page's digest.
_CLAIM_SAME_PAGE = _CLAIM.where(_T.c.page_digest == bindparam("p_digest"))
_SLOT_AND_DIGEST = select(_T.c.last_slot, _T.c.page_digest).where(_T.c.id == bindparam("p_tid"))
_LATEST = (select(_O.c.id, _O.c.fingerprint, _O.c.status)
           .where(_O.c.target_id == bindparam("p_tid")).order_by(_O.c.id.desc()).limit(1))
_EXTEND_LATEST = (update(_O)
                  .where(_O.c.id == select(func.max(_O.c.id)).where(_O.c.target_id == bindparam("p_tid"))
                         .scalar_subquery())
                  .returning(_O.c.id)
                  .values(last_seen_at=bindparam("p_now", type_=_O.c.last_seen_at.type),
                          last_slot=bindparam("p_slot", type_=_O.c.last_slot.type),
                          seen_count=_O.c.seen_count + 1))
_EXTEND = _EXTEND_LATEST.where(_O.c.fingerprint == bindparam("p_fp"))
_OBSERVATION = select(_O).where(_O.c.id == bindparam("p_oid"))
_PREVIOUS_OK = (select(_O).where(_O.c.target_id == bindparam("p_tid"), _O.c.status == "ok")
                .order_by(_O.c.id.desc()).limit(1))
_INSERT_OBSERVATION = insert(_O).returning(_O.c.id)
_STREAK = (update(_T).where(_T.c.id == bindparam("p_tid"))
           .values(fail_streak=bindparam("p_streak", type_=_T.c.fail_streak.type),
                   failing_since=bindparam("p_since", type_=_T.c.failing_since.type)))
_INSERT_CHANGE = insert(_C)


class _Direct:
    """A Core statement compiled once per dialect and run straight on the session's DBAPI connection.

    The unchanged check, most checks, is two statements (claim, extend); through SQLAlchemy's execution
    machinery each cost ~3x what SQLite spends running it. Here the parameters go through the same type
    processors (UTCDateTime, Money...) and driver errors are wrapped into SQLAlchemy's exceptions, so the
    callers' error handling is unchanged. The statement runs in the session's transaction."""

    def __init__(self, statement: Any, returning: tuple[Any, ...] = ()):
        self.statement = statement
        self.returning = returning
        self._plans: dict[str, tuple[str, bool, list[tuple[str, Any, Any]], list[Any]]] = {}
        # (dialect, bind name) -> (the last datetime bound, its converted value)
        self._memo: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _plan(self, dialect: Any) -> tuple[str, bool, list[tuple[str, Any, Any]], list[Any]]:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self.statement.compile(dialect=dialect)
            # Each bind's final name (compiled.binds also lists anonymous binds under their raw keys).
            names = list(compiled.positiontup) if compiled.positional \
                else list(dict.fromkeys(compiled.bind_names.values()))
            binds = [(name, compiled.binds[name].effective_value,
                      compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]
            results = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                       for column in self.returning]
            plan = self._plans[dialect.name] = (compiled.string, compiled.positional, binds, results)
        return plan

    def first(self, conn: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
        dialect = conn.dialect
        sql, positional, binds, results = self._plan(dialect)
        values = []
        for name, default, proc in binds:
            value = params[name] if name in params else default
            if proc is not None:
                # A pass binds the same slot and time objects to every check: convert each once.
                memo = self._memo.get((dialect.name, name))
                if memo is not None and memo[0] is value:
                    value = memo[1]
                else:
                    converted = proc(value)
                    if isinstance(value, datetime):
                        self._memo[(dialect.name, name)] = (value, converted)
                    value = converted
            values.append((name, value))
        args: Any = tuple(v for _, v in values) if positional else dict(values)
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(sql, args)
            row = cursor.fetchone() if self.returning else None
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(proc(v) if proc is not None else v for proc, v in zip(results, row, strict=True))


_CLAIM_DIRECT = _Direct(_CLAIM, (_T.c.kind, _T.c.fail_streak, _T.c.failing_since))
# PostgreSQL: claim and extension in one statement, one round trip (data-modifying CTEs; the extension
# runs only if the claim succeeded, under the claim's row lock). The extended id is NULL when the latest
# span is not ours; no row at all means the slot was taken.
_CLAIM_CTE = _CLAIM.cte("claim")
_EXTENDED_CTE = _EXTEND.where(exists(select(literal(1)).select_from(_CLAIM_CTE))).cte("extended")
_CLAIM_AND_EXTEND_PG = _Direct(
    select(_CLAIM_CTE.c.kind, _CLAIM_CTE.c.fail_streak, _CLAIM_CTE.c.failing_since,
           select(_EXTENDED_CTE.c.id).scalar_subquery()),
    (_T.c.kind, _T.c.fail_streak, _T.c.failing_since, _O.c.id))
_CLAIM_SAME_PAGE_DIRECT = _Direct(_CLAIM_SAME_PAGE, (_T.c.kind, _T.c.fail_streak, _T.c.failing_since))
_EXTEND_DIRECT = _Direct(_EXTEND, (_O.c.id,))
_EXTEND_LATEST_DIRECT = _Direct(_EXTEND_LATEST, (_O.c.id,))


def record_check(session: Session, target_id: int, slot: datetime, observed: Observed, *, now: datetime,
                 rules: Rules = Rules()) -> Recorded:
    """Store one check of one target for one slot, idempotently. The caller commits."""
    conn = session.connection()
    params = {"p_tid": target_id, "p_slot": slot, "p_new_slot": slot, "p_digest": observed.page_digest}
    if observed.same_page:
        return _record_same_page(conn, target_id, slot, observed, now=now, params=params)
    fingerprint = observed.fingerprint()
    changes: list[ChangeData] = []
    if conn.dialect.name == "postgresql":
        row = _CLAIM_AND_EXTEND_PG.first(conn, {**params, "p_fp": fingerprint, "p_now": now})
        if row is None:
            return Recorded(duplicate=True)
        kind, streak_before, failing_since, extended_id = row
    else:
        claimed = _CLAIM_DIRECT.first(conn, params)
        if claimed is None:
            return Recorded(duplicate=True)
        kind, streak_before, failing_since = claimed
        # The common case, nothing changed: extend the latest span if its fingerprint is ours.
        extended = _EXTEND_DIRECT.first(conn, {"p_tid": target_id, "p_fp": fingerprint, "p_now": now,
                                               "p_slot": slot})
        extended_id = extended[0] if extended is not None else None
    if extended_id is not None:
        row_id, new_span = extended_id, False
    else:
        latest = conn.execute(_LATEST, {"p_tid": target_id}).first()
        if observed.status == "ok":
            differ = differ_for(kind)
            if differ is not None:
                previous_ok = conn.execute(_OBSERVATION, {"p_oid": latest.id}).first() \
                    if latest is not None and latest.status == "ok" \
                    else conn.execute(_PREVIOUS_OK, {"p_tid": target_id}).first()
                changes += differ(Observed.from_row(previous_ok) if previous_ok else None, observed, rules)
        row_id = conn.execute(_INSERT_OBSERVATION, {
            "target_id": target_id, "status": observed.status, "reason": observed.reason,
            "fingerprint": fingerprint, "first_seen_at": now, "last_seen_at": now, "first_slot": slot,
            "last_slot": slot, "seen_count": 1, "price": observed.price, "regular_price": observed.regular_price,
            "currency": observed.currency, "availability": observed.availability,
            "promotions": list(observed.promotions) or None, "title": observed.title, "sku": observed.sku,
            "gtin": observed.gtin, "rank": observed.rank, "data": observed.data or None}).scalar_one()
        new_span = True

    since = failing_since.isoformat() if failing_since else now.isoformat()
    streak, health = health_changes(status=observed.status, reason=observed.reason,
                                    streak_before=streak_before, failing_since=since, rules=rules)
    changes += health
    new_failing_since = None if streak == 0 else (failing_since or now)
    if streak != streak_before or new_failing_since != failing_since:
        conn.execute(_STREAK, {"p_tid": target_id, "p_streak": streak, "p_since": new_failing_since})
    if changes:
        conn.execute(_INSERT_CHANGE, [
            {"target_id": target_id, "observation_id": row_id, "kind": change.kind, "detected_at": now,
             "data": change.data} for change in changes])
    return Recorded(duplicate=False, observation_id=row_id, new_span=new_span, changes=tuple(changes))


def _record_same_page(conn: Any, target_id: int, slot: datetime, observed: Observed, *, now: datetime,
                      params: dict[str, Any]) -> Recorded:
    """The page is the one behind the latest observation (same digest): extend that observation.

    The latest observation of a target with a page digest is the `ok` one that page gave (the claim of
    every other check overwrites the digest in the same transaction), so nothing else can change: no
    diff, and the failure streak is already 0."""
    claimed = _CLAIM_SAME_PAGE_DIRECT.first(conn, params)
    if claimed is None:
        current = conn.execute(_SLOT_AND_DIGEST, {"p_tid": target_id}).first()
        if current is not None and current.last_slot is not None and current.last_slot >= slot:
            return Recorded(duplicate=True)
        raise PageChanged(f"target {target_id}: page digest changed since the check started")
    extended = _EXTEND_LATEST_DIRECT.first(conn, {"p_tid": target_id, "p_now": now, "p_slot": slot})
    if extended is None:
        raise PageChanged(f"target {target_id}: no observation to extend")
    return Recorded(duplicate=False, observation_id=extended[0], new_span=False)
