"""Recording one check: the idempotent write at the heart of the unit of work.

`record_check` runs in ONE transaction: claim the slot (compare-and-set on `targets.last_slot`), extend or
start an observation span, diff against the previous `ok` observation, write the changes, update the
target's failure streak. A second delivery of the same (target, slot) finds the slot taken and writes
nothing, so a check retried by a worker, the scheduler or a restart is counted once.

`record_checks` does the same for a batch of checks in one transaction (the pipeline's group commit), with
the same results and rows as record_check item by item: the claims of the whole batch are one statement and
the span extensions a second one, so the unchanged check, most checks, costs no statement of its own.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from sqlalchemy import (JSON, Boolean, String, bindparam, cast, func, insert, literal_column, or_, select, type_coerce,
                        update)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeDecorator

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
        payload = orjson.dumps(dict(zip(_OBSERVED_NAMES, _OBSERVED_VALUES(self))),
                               option=orjson.OPT_SORT_KEYS, default=_json_default)
        return hashlib.blake2b(payload, digest_size=16).hexdigest()

    @classmethod
    def from_row(cls, row: Observation) -> "Observed":
        return cls(status=row.status, reason=row.reason, price=row.price, regular_price=row.regular_price,
                   currency=row.currency, availability=row.availability,
                   promotions=tuple(row.promotions or ()), title=row.title, sku=row.sku, gtin=row.gtin,
                   rank=row.rank, data=dict(row.data or {}))


_OBSERVED_FIELDS = tuple(f for f in fields(Observed) if f.name not in ("page_digest", "same_page"))
_OBSERVED_NAMES = tuple(f.name for f in _OBSERVED_FIELDS)
_OBSERVED_VALUES = operator.attrgetter(*_OBSERVED_NAMES)   # every field's value in one call


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


def _claim(tid: Any, slot: Any, new_slot: Any, digest: Any) -> Any:
    """The compare-and-set of a check's slot on its target's row: only a slot newer than the last one."""
    return (update(_T)
            .where(_T.c.id == tid, or_(_T.c.last_slot.is_(None), _T.c.last_slot < slot))
            .values(last_slot=new_slot, page_digest=digest)
            .returning(_T.c.kind, _T.c.fail_streak, _T.c.failing_since))


def _latest_id(tid: Any) -> Any:
    """The id of a target's latest observation span."""
    latest = _O.alias("latest")
    return select(func.max(latest.c.id)).where(latest.c.target_id == tid).scalar_subquery()


def _extend(observation_id: Any, slot: Any, now: Any) -> Any:
    """One more check that saw what the span `observation_id` holds."""
    return (update(_O)
            .where(_O.c.id == observation_id)
            .values(last_seen_at=now, last_slot=slot, seen_count=_O.c.seen_count + 1)
            .returning(_O.c.id))


_CLAIM = _claim(bindparam("p_tid"), bindparam("p_slot", type_=_T.c.last_slot.type),
                bindparam("p_new_slot", type_=_T.c.last_slot.type),
                bindparam("p_digest", type_=_T.c.page_digest.type))
# The claim of a `same_page` check: only while the target still holds that page's digest.
_CLAIM_SAME_PAGE = _CLAIM.where(_T.c.page_digest == bindparam("p_digest"))
_SLOT_AND_DIGEST = select(_T.c.last_slot, _T.c.page_digest).where(_T.c.id == bindparam("p_tid"))
_EXTEND_LATEST = _extend(_latest_id(bindparam("p_tid")), bindparam("p_slot", type_=_O.c.last_slot.type),
                         bindparam("p_now", type_=_O.c.last_seen_at.type))
_EXTEND = _EXTEND_LATEST.where(_O.c.fingerprint == bindparam("p_fp"))
_STREAK = (update(_T).where(_T.c.id == bindparam("p_tid"))
           .values(fail_streak=bindparam("p_streak", type_=_T.c.fail_streak.type),
                   failing_since=bindparam("p_since", type_=_T.c.failing_since.type)))


class _Direct:
    """A Core statement compiled once per dialect and run straight on the session's DBAPI connection.

    The unchanged check, most checks, is two statements (claim, extend); through SQLAlchemy's execution
    machinery each cost ~3x what SQLite spends running it. Here the parameters go through the same type
    processors (UTCDateTime, Money...) and driver errors are wrapped into SQLAlchemy's exceptions, so the
    callers' error handling is unchanged. The statement runs in the session's transaction. `statement` may
    also be a function of the dialect's name that builds it (a statement whose SQL differs per dialect)."""

    def __init__(self, statement: Any, returning: tuple[Any, ...] = ()):
        self.statement = statement
        self.returning = returning
        self._plans: dict[str, tuple[str, bool, list[tuple[str, Any, Any]], list[Any]]] = {}
        # (dialect, bind name) -> (the last datetime bound, its converted value)
        self._memo: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _plan(self, dialect: Any) -> tuple[str, bool, list[tuple[str, Any, Any]], list[Any]]:
        plan = self._plans.get(dialect.name)
        if plan is None:
            statement = self.statement if isinstance(self.statement, ClauseElement) \
                else self.statement(dialect.name)
            compiled = statement.compile(dialect=dialect)
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
        rows = self._run(conn, params, one=True)
        return rows[0] if rows else None

    def all(self, conn: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row the statement returns (a batch statement: one row per item it applied to)."""
        return self._run(conn, params, one=False)

    def _run(self, conn: Any, params: dict[str, Any], *, one: bool) -> list[tuple[Any, ...]]:
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
            if not self.returning:
                rows = []
            elif one:
                row = cursor.fetchone()
                rows = [row] if row is not None else []
            else:
                rows = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
        finally:
            cursor.close()
        if not any(results):
            return [tuple(row) for row in rows]
        if len(rows) < 8:
            return [tuple(proc(v) if proc is not None else v for proc, v in zip(results, row, strict=True))
                    for row in rows]
        # A batch's rows (a claim's: kind, streak, failing_since, id) repeat few distinct values in the columns
        # that need processing (failing_since: mostly NULL): each distinct value processed once, column-wise.
        columns = list(zip(*rows, strict=True))
        for i, proc in enumerate(results):
            if proc is not None:
                columns[i] = _mapped(columns[i], proc)
        return list(zip(*columns, strict=True))


_CLAIM_DIRECT = _Direct(_CLAIM, (_T.c.kind, _T.c.fail_streak, _T.c.failing_since))
_CLAIM_SAME_PAGE_DIRECT = _Direct(_CLAIM_SAME_PAGE, (_T.c.kind, _T.c.fail_streak, _T.c.failing_since))
_EXTEND_DIRECT = _Direct(_EXTEND, (_O.c.id,))
_EXTEND_LATEST_DIRECT = _Direct(_EXTEND_LATEST, (_O.c.id,))


def _mapped(values: Sequence[Any], proc: Callable[[Any], Any]) -> list[Any]:
    """`[proc(v) for v in values]` (a type conversion), with `proc` called once when the values are all the same
    NULL, flag or time (a batch's items share their slot and time; failing_since is mostly NULL). Only for those
    types: equal values of others may differ (1.0 and 1.00)."""
    first = values[0]
    if (first is None or isinstance(first, (bool, datetime))) and values.count(first) == len(values):
        return [proc(first)] * len(values)
    return [proc(value) for value in values]


class _Rows(TypeDecorator[list]):
    """Rows bound as ONE parameter, a JSON array of arrays (a batch's items, read back as a table by _items):
    each value goes through its column type's bind processing for the dialect first (times, as the direct
    statements bind them). JSONB on PostgreSQL, whose parser is the faster one."""

    impl = JSON
    cache_ok = True

    def __init__(self, columns: tuple[tuple[str, Any], ...]):
        super().__init__()
        self.columns = columns

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def bind_processor(self, dialect: Any) -> Callable[[list[tuple[Any, ...]]], str]:
        procs = [(i, proc) for i, (_, type_) in enumerate(self.columns)
                 if (proc := type_.dialect_impl(dialect).bind_processor(dialect)) is not None]

        def process(rows: list[tuple[Any, ...]]) -> str:
            if not procs or not rows:
                return orjson.dumps(rows).decode()
            # Column-wise: a batch's items share their slot and time objects, each converted once.
            columns = list(zip(*rows, strict=True))
            for i, proc in procs:
                columns[i] = _mapped(columns[i], lambda value, proc=proc: None if value is None else proc(value))
            return orjson.dumps(list(zip(*columns, strict=True))).decode()

        return process


# A batch of checks (record_checks): the claim of every item in one statement, then the extension of every
# claimed item's latest span in a second one. The extension must not be part of the claim's statement: on
# PostgreSQL that statement's snapshot predates the row locks it may wait for, and would miss a span that a
# concurrent writer of the same target committed meanwhile. A `same_page` item is claimed only while its
# target holds that digest and extends the latest span whatever its fingerprint, as in _claim_one.
_ITEM_COLUMNS = (("tid", _T.c.id.type), ("slot", _T.c.last_slot.type), ("seen_at", _O.c.last_seen_at.type),
                 ("digest", _T.c.page_digest.type), ("fp", _O.c.fingerprint.type), ("same_page", Boolean()))


def _items(dialect: str, columns: tuple[tuple[str, Any], ...] = _ITEM_COLUMNS) -> Any:
    """The parameter `p_items` (rows of `columns`, see _Rows) as a table `item`."""
    rows = bindparam("p_items", type_=_Rows(columns))
    values, _ = _json_table(rows, [t for _, t in columns], dialect)
    return select(*(value.label(name) for value, (name, _) in zip(values, columns, strict=True))).subquery("item")


def _json_table(rows: Any, types: list[Any], dialect: str, *, ordered: bool = False) -> tuple[list[Any], Any]:
    """The rows of a JSON array of arrays (`rows`, JSONB on PostgreSQL) as a table: its columns, typed
    `types`, and (`ordered`) the column that orders them as in the array, else None."""
    if dialect == "postgresql":
        each = func.jsonb_array_elements(rows).table_valued("value", with_ordinality="n" if ordered else None)
        if ordered:
            each = each.render_derived(name="each")
        values = [cast(each.c.value.op("->>")(literal_column(str(i))), t) for i, t in enumerate(types)]
        return values, each.c.n if ordered else None
    each = func.json_each(rows).table_valued("value", *(("key",) if ordered else ()))
    values = [type_coerce(func.json_extract(each.c.value, f"$[{i}]"), t) for i, t in enumerate(types)]
    return values, each.c.key if ordered else None


def _claim_many_statement(dialect: str) -> Any:
    item = _items(dialect)
    return (_claim(item.c.tid, item.c.slot, item.c.slot, item.c.digest)
            .where(or_(~item.c.same_page, _T.c.page_digest == item.c.digest))
            .returning(_T.c.id))


def _extend_many_statement(dialect: str) -> Any:
    item = _items(dialect)
    claimed = select(item, _latest_id(item.c.tid).label("latest_id")).subquery("claimed")
    return (_extend(claimed.c.latest_id, claimed.c.slot, claimed.c.seen_at)
            .where(or_(claimed.c.same_page, _O.c.fingerprint == claimed.c.fp))
            .returning(_O.c.target_id))


def _latest_ok_statement(dialect: str) -> Any:
    item = _items(dialect, _ITEM_COLUMNS[:1])
    ok = _O.alias("ok")
    latest_ok = select(func.max(ok.c.id)).where(ok.c.target_id == item.c.tid, ok.c.status == "ok").scalar_subquery()
    return select(_O).select_from(item).join(_O, _O.c.id == latest_ok)


_CLAIM_MANY = _Direct(_claim_many_statement, (_T.c.kind, _T.c.fail_streak, _T.c.failing_since, _T.c.id))
_EXTEND_MANY = _Direct(_extend_many_statement, (_O.c.id, _O.c.target_id))
# dialect -> the latest `ok` observation of each target (`p_items`: target ids) that has one. Run through
# SQLAlchemy, which knows how to read every column's type back; once per batch.
_LATEST_OK_MANY: dict[str, Any] = {}


class _InsertRows:
    """INSERT of many rows of `table` in one statement, the rows bound as ONE JSON parameter (an array of
    arrays) and read back in order: the same rows as an executemany of the Core insert, in one round trip and
    without SQLAlchemy's execution of each (a batch's new spans and changes cost ~1.3 ms each that way on
    PostgreSQL). Values go through their column type's bind processing first (times, money); JSON columns
    are bound as the text the driver would write (json.dumps, SQLAlchemy's serializer on SQLite) and cast
    back, so the stored text is the same. With `returning`, the new ids in the order of the rows (nextval runs
    in the SELECT's order, so the ids ascend with the rows)."""

    def __init__(self, table: Any, columns: tuple[str, ...], *, returning: bool = False):
        self.table, self.columns, self.returning = table, columns, returning
        self._direct = _Direct(self._statement, (table.c.id,) if returning else ())
        self._procs: dict[str, list[Callable[[Any], Any] | None]] = {}

    def _statement(self, dialect: str) -> Any:
        rows: Any = bindparam("p_rows", type_=String())
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB  # (here: a SQLite run never loads the dialect)

            rows = cast(rows, JSONB())
        values, order = _json_table(rows, [self.table.c[name].type for name in self.columns], dialect, ordered=True)
        statement = insert(self.table).from_select(self.columns, select(*values).order_by(order))
        return statement.returning(self.table.c.id) if self.returning else statement

    def _processors(self, dialect: Any) -> list[Callable[[Any], Any] | None]:
        procs = self._procs.get(dialect.name)
        if procs is None:
            procs = []
            for name in self.columns:
                type_ = self.table.c[name].type
                if isinstance(type_, JSON) and dialect.name == "postgresql":
                    procs.append(_pg_json_text)
                else:
                    procs.append(type_.dialect_impl(dialect).bind_processor(dialect))
            procs = self._procs[dialect.name] = procs
        return procs

    def run(self, conn: Any, rows: list[dict[str, Any]]) -> list[int]:
        procs = self._processors(conn.dialect)
        values = [[row[name] if proc is None else proc(row[name]) for name, proc in zip(self.columns, procs)]
                  for row in rows]
        params = {"p_rows": orjson.dumps(values, default=_json_default).decode()}
        out = self._direct.all(conn, params)
        return sorted(row[0] for row in out) if self.returning else []


def _pg_json_text(value: Any) -> str:
    """The text psycopg writes for a JSON column's value (SQLAlchemy binds it as Json(value): json.dumps)."""
    return json.dumps(value)


_OBSERVATION_COLUMNS = ("target_id", "status", "reason", "fingerprint", "first_seen_at", "last_seen_at", "first_slot",
                        "last_slot", "seen_count", "price", "regular_price", "currency", "availability", "promotions",
                        "title", "sku", "gtin", "rank", "data")
_INSERT_OBSERVATIONS_MANY = _InsertRows(_O, _OBSERVATION_COLUMNS, returning=True)
_INSERT_CHANGES_MANY = _InsertRows(_C, ("target_id", "observation_id", "kind", "detected_at", "data"))


class CheckItem(NamedTuple):
    """One check to record (record_checks): what it saw of a target for a slot, and when."""

    target_id: int
    slot: datetime
    observed: Observed
    now: datetime | None = None     # None: record_checks' `now`


# A successful claim: the target's kind, failure streak and failing_since before this check, and the id of
# the latest span if the claim extended it (the check saw what it holds), else None.
_Claim = tuple[str, int, datetime | None, int | None]


def record_check(session: Session, target_id: int, slot: datetime, observed: Observed, *, now: datetime,
                 rules: Rules = Rules()) -> Recorded:
    """Store one check of one target for one slot, idempotently. The caller commits."""
    return _record(session.connection(), [CheckItem(target_id, slot, observed, now)], rules)[0]


def record_checks(session: Session, items: Iterable[CheckItem | tuple[Any, ...]], *,
                  now: datetime | None = None, rules: Rules = Rules()) -> list[Recorded]:
    """Store many checks in the session's transaction: the same rows (ids included), changes and results as
    record_check for each item in order. The caller commits; if this raises (PageChanged, a database error),
    the caller must roll back, since items after the failing one may already be written.

    Items are CheckItems or (target_id, slot, observed[, now]) tuples; `now` is the time of those without one.
    A run of items of distinct targets (a whole batch, unless a target comes up twice) costs a few statements
    whatever its length: every claim in one (_claim_many), every extension of a latest span in a second (the
    unchanged check, most checks, is then done), then the new spans, the failure streaks and the changes
    (_settle). A target's next item starts the next run: its claim depends on the earlier one's.
    """
    conn = session.connection()
    checks = [_with_now(item if isinstance(item, CheckItem) else CheckItem(*item), now) for item in items]
    recorded: list[Recorded] = []
    run: list[CheckItem] = []
    targets: set[int] = set()
    for check in checks:
        if check.target_id in targets:
            recorded += _record(conn, run, rules)
            run, targets = [], set()
        run.append(check)
        targets.add(check.target_id)
    if run:
        recorded += _record(conn, run, rules)
    return recorded


R = TypeVar("R")


@dataclass(frozen=True)
class CheckWrite(Generic[R]):
    """A check's write as a unit of work of a group-committing writer (tracker.pipeline): called alone,
    `write(session)` is record_check; in a batch, run_writes records consecutive check writes together with
    record_checks. `outcome` turns the Recorded into what the writer hands back."""

    check: CheckItem
    outcome: Callable[[Recorded], R]
    rules: Rules = Rules()

    def __call__(self, session: Session) -> R:
        return self.outcome(_record(session.connection(), [self.check], self.rules)[0])


def run_writes(session: Session, writes: Sequence[Callable[[Session], Any]]) -> list[Any]:
    """Run a batch of units of work in the session's transaction, in order, and return what each returns:
    every run of consecutive CheckWrites (of the same rules) as one record_checks, anything else as
    `write(session)`."""
    values: list[Any] = []
    checks: list[CheckWrite[Any]] = []

    def record() -> None:
        recorded = record_checks(session, [write.check for write in checks], rules=checks[0].rules)
        values.extend(write.outcome(r) for write, r in zip(checks, recorded, strict=True))
        checks.clear()

    for write in writes:
        if checks and not (isinstance(write, CheckWrite) and write.rules == checks[0].rules):
            record()
        if isinstance(write, CheckWrite):
            checks.append(write)
        else:
            values.append(write(session))
    if checks:
        record()
    return values


def _with_now(check: CheckItem, now: datetime | None) -> CheckItem:
    if check.now is not None:
        return check
    if now is None:
        raise TypeError(f"record_checks: the check of target {check.target_id} has no time and no `now` given")
    return CheckItem(check.target_id, check.slot, check.observed, now)


def _record(conn: Any, checks: list[CheckItem], rules: Rules) -> list[Recorded]:
    """Checks of distinct targets, on the session's connection: claim, then settle."""
    fingerprints = [None if check.observed.same_page else check.observed.fingerprint() for check in checks]
    if len(checks) == 1:
        claims = [_claim_one(conn, checks[0], fingerprints[0])]
    else:
        claimed = _claim_many(conn, list(zip(checks, fingerprints, strict=True)))
        claims = [claimed.get(check.target_id) for check in checks]
    return _settle(conn, list(zip(checks, fingerprints, claims, strict=True)), rules)


def _claim_one(conn: Any, check: CheckItem, fingerprint: str | None) -> _Claim | None:
    """Claim a check's slot and extend its target's latest span if the check saw what it holds; None if
    the slot was taken (or, for a `same_page` check, the target holds another page)."""
    target_id, slot, observed, now = check
    params = {"p_tid": target_id, "p_slot": slot, "p_new_slot": slot, "p_digest": observed.page_digest}
    if observed.same_page:
        claimed = _CLAIM_SAME_PAGE_DIRECT.first(conn, params)
        extend, extend_params = _EXTEND_LATEST_DIRECT, {"p_tid": target_id, "p_now": now, "p_slot": slot}
    else:
        claimed = _CLAIM_DIRECT.first(conn, params)
        extend, extend_params = _EXTEND_DIRECT, {"p_tid": target_id, "p_fp": fingerprint, "p_now": now,
                                                 "p_slot": slot}
    if claimed is None:
        return None
    # The common case, nothing changed: extend the latest span if its fingerprint is ours. A statement of its
    # own, as in _claim_many: one that also claimed (a CTE) would, on PostgreSQL, read the spans as of before
    # it waited for a concurrent writer of this target, and extend an older span than that writer's.
    extended = extend.first(conn, extend_params)
    return (*claimed, extended[0] if extended is not None else None)


def _claim_many(conn: Any, checks: list[tuple[CheckItem, str | None]]) -> dict[int, _Claim]:
    """_claim_one for checks of distinct targets, in two statements: target id -> its claim.

    The items go in target id order, so that concurrent batches tend to lock their targets' rows in the same
    order."""
    rows = sorted((check.target_id, check.slot, check.now, check.observed.page_digest, fingerprint,
                   check.observed.same_page) for check, fingerprint in checks)
    claimed = {row[3]: row[:3] for row in _CLAIM_MANY.all(conn, {"p_items": rows})}
    if not claimed:
        return {}
    extended = {target_id: observation_id for observation_id, target_id
                in _EXTEND_MANY.all(conn, {"p_items": [row for row in rows if row[0] in claimed]})}
    return {target_id: (*claim, extended.get(target_id)) for target_id, claim in claimed.items()}


def _settle(conn: Any, settling: list[tuple[CheckItem, str | None, _Claim | None]], rules: Rules) -> list[Recorded]:
    """Everything after the claims of checks of distinct targets (each with its fingerprint and its claim's
    outcome, None if the slot was taken), in their order: a new span with its diff against the previous `ok`
    one where the claim did not extend the latest span, the failure streaks and the changes. At most four
    statements, however many checks."""
    differs = {}
    for check, _, claim in settling:
        if claim is not None and claim[3] is None and check.observed.status == "ok" and not check.observed.same_page:
            differ = differ_for(claim[0])
            if differ is not None:
                differs[check.target_id] = differ
    previous = _latest_ok(conn, list(differs)) if differs else {}
    settled: list[Recorded | tuple[int | None, int | None, Sequence[ChangeData]]] = []
    new_spans: list[dict[str, Any]] = []
    streaks: list[dict[str, Any]] = []
    for check, fingerprint, claim in settling:
        target_id, slot, observed, now = check
        if observed.same_page:
            settled.append(_settle_same_page(conn, check, claim))
            continue
        if claim is None:
            settled.append(Recorded(duplicate=True))
            continue
        assert now is not None
        kind, streak_before, failing_since, extended_id = claim
        changes: list[ChangeData] = []
        span = None
        if extended_id is None:
            differ = differs.get(target_id)
            if differ is not None:
                previous_ok = previous.get(target_id)
                changes += differ(Observed.from_row(previous_ok) if previous_ok else None, observed, rules)
            span = len(new_spans)
            new_spans.append({
                "target_id": target_id, "status": observed.status, "reason": observed.reason,
                "fingerprint": fingerprint, "first_seen_at": now, "last_seen_at": now, "first_slot": slot,
                "last_slot": slot, "seen_count": 1, "price": observed.price,
                "regular_price": observed.regular_price, "currency": observed.currency,
                "availability": observed.availability, "promotions": list(observed.promotions) or None,
                "title": observed.title, "sku": observed.sku, "gtin": observed.gtin, "rank": observed.rank,
                "data": observed.data or None})
        streak, health = health_changes(status=observed.status, reason=observed.reason, streak_before=streak_before,
                                        failing_since=failing_since or now, rules=rules)
        changes += health
        new_failing_since = None if streak == 0 else (failing_since or now)
        if streak != streak_before or new_failing_since != failing_since:
            streaks.append({"p_tid": target_id, "p_streak": streak, "p_since": new_failing_since})
        settled.append((extended_id, span, changes))

    span_ids = _INSERT_OBSERVATIONS_MANY.run(conn, new_spans) if new_spans else []
    if streaks:
        conn.execute(_STREAK, streaks)
    recorded: list[Recorded] = []
    change_rows: list[dict[str, Any]] = []
    for (check, _, _), outcome in zip(settling, settled, strict=True):
        if isinstance(outcome, Recorded):
            recorded.append(outcome)
            continue
        extended_id, span, changes = outcome
        row_id = extended_id if span is None else span_ids[span]
        change_rows += [{"target_id": check.target_id, "observation_id": row_id, "kind": change.kind,
                         "detected_at": check.now, "data": change.data} for change in changes]
        recorded.append(Recorded(duplicate=False, observation_id=row_id, new_span=span is not None,
                                 changes=tuple(changes)))
    if change_rows:
        _INSERT_CHANGES_MANY.run(conn, change_rows)
    return recorded


def _latest_ok(conn: Any, target_ids: list[int]) -> dict[int, Any]:
    """The latest `ok` observation of each of these targets that has one: what a new `ok` one is diffed with."""
    statement = _LATEST_OK_MANY.get(conn.dialect.name)
    if statement is None:
        statement = _LATEST_OK_MANY[conn.dialect.name] = _latest_ok_statement(conn.dialect.name)
    return {row.target_id: row for row in conn.execute(statement, {"p_items": [(t,) for t in target_ids]})}


def _settle_same_page(conn: Any, check: CheckItem, claim: _Claim | None) -> Recorded:
    """The page is the one behind the latest observation (same digest): the claim extended that observation.

    The latest observation of a target with a page digest is the `ok` one that page gave (the claim of
    every other check overwrites the digest in the same transaction), so nothing else can change: no
    diff, and the failure streak is already 0."""
    target_id, slot = check.target_id, check.slot
    if claim is None:
        current = conn.execute(_SLOT_AND_DIGEST, {"p_tid": target_id}).first()
        if current is not None and current.last_slot is not None and current.last_slot >= slot:
            return Recorded(duplicate=True)
        raise PageChanged(f"target {target_id}: page digest changed since the check started")
    if claim[3] is None:
        raise PageChanged(f"target {target_id}: no observation to extend")
    return Recorded(duplicate=False, observation_id=claim[3], new_span=False)
