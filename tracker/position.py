"""Price position against the own shop: the same product across shops, who is cheapest, the gap in %.

Products are tied together by the config's `match:` key, else by GTIN, else by SKU (as the shops print
them); two targets sharing any of these keys are the same product, transitively. A group counts when it
holds a product of the own shop (`own: true`) and at least one rival's, with a current price in the same
currency. Out-of-stock rival offers are shown but never "cheapest": nobody can buy them.

Pure reading: `latest_ok`, `latest_offers` and `matched_offers` query (narrow columns, one index seek per
target for its newest `ok` span), everything else works on plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Integer, Row, Select, any_, bindparam, select, true
from sqlalchemy.orm import Session

from tracker.diff import in_stock
from tracker.matching import normalize_code, normalize_gtin
from tracker.models import Observation, Rival, Target


@dataclass(frozen=True)
class Offer:
    """One shop's current price of one product."""

    target_id: int
    rival: str
    own: bool
    name: str
    url: str | None
    price: Decimal | None
    currency: str | None
    availability: str | None = None
    keys: tuple[str, ...] = ()
    group: str | None = None

    @property
    def buyable(self) -> bool:
        return self.price is not None and in_stock(self.availability)


@dataclass(frozen=True)
class PositionRow:
    """A product matched between the own shop and rivals."""

    key: str
    name: str
    own: Offer
    rivals: tuple[Offer, ...]
    cheapest_rival: Offer | None      # the cheapest buyable rival offer in the own currency
    gap_pct: Decimal | None           # (own - cheapest rival) / cheapest rival, in %: > 0 = you are dearer
    own_cheapest: bool                # the own price is <= every buyable rival price


@dataclass(frozen=True)
class Undercut:
    """A rival's price move that took it below the own price."""

    rival: str
    target_id: int
    name: str
    own_price: Decimal
    old: Decimal
    new: Decimal
    currency: str | None


@dataclass
class Position:
    rows: list[PositionRow] = field(default_factory=list)
    undercuts: list[Undercut] = field(default_factory=list)
    # rival target id -> the own shop's offer of the same product
    own_of: dict[int, Offer] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def cheapest(self) -> int:
        return sum(1 for r in self.rows if r.own_cheapest)


# Columns of the newest `ok` observation that the report and the position read (never the whole row).
LATEST_COLUMNS = (Observation.target_id, Observation.id, Observation.price, Observation.regular_price,
                  Observation.currency, Observation.availability, Observation.promotions, Observation.title,
                  Observation.sku, Observation.gtin)
CHUNK = 5000  # target ids per IN (...) list


def _among(session: Session, ids: list[int]) -> Any:
    """`Target.id IN ids`; on PostgreSQL `= ANY(array)`, one parameter: an IN list of thousands of parameters
    cost ~25 ms to render and parse for each query (2,500 changed products)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY  # (here: a report on SQLite never loads the dialect)

        return Target.id == any_(bindparam("target_ids", ids, type_=ARRAY(Integer)))
    return Target.id.in_(ids)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def newest_ok_id() -> Any:
    """The id of the newest `ok` span of the target in the enclosing query (`Target.id`): one backward seek
    on ix_observations_target_id_id per target, whatever the length of its history."""
    return (select(Observation.id).where(Observation.target_id == Target.id, Observation.status == "ok")
            .order_by(Observation.id.desc()).limit(1).correlate(Target).scalar_subquery())


def with_newest_ok(session: Session, target_columns: Iterable[Any], columns: Iterable[Any], *,
                   outer: bool = False) -> Select[Any]:
    """SELECT `target_columns`, `columns` (of Observation) FROM targets joined to each target's newest `ok`
    span, found by one index seek per target: a LATERAL subquery on PostgreSQL (a join on a correlated
    subquery gets hash-joined to a scan of all observations there), a join on `newest_ok_id()` on SQLite
    (which has no LATERAL and runs that join as a seek). `outer` keeps targets without an `ok` span."""
    target_columns, columns = list(target_columns), list(columns)
    if session.get_bind().dialect.name == "postgresql":
        newest = (select(*columns).where(Observation.target_id == Target.id, Observation.status == "ok")
                  .order_by(Observation.id.desc()).limit(1).lateral("newest_ok"))
        return (select(*target_columns, *(newest.c[c.key] for c in columns)).select_from(Target)
                .join(newest, true(), isouter=outer))
    return (select(*target_columns, *columns).select_from(Target)
            .join(Observation, Observation.id == newest_ok_id(), isouter=outer))


def latest_ok(session: Session, target_ids: Iterable[int] | None = None) -> dict[int, Row[Any]]:
    """The newest `ok` observation of each target (all targets when `target_ids` is None), as rows of
    LATEST_COLUMNS (`.price`, `.title`, ...); targets without one are left out."""
    base = with_newest_ok(session, (), LATEST_COLUMNS)
    if target_ids is None:
        return {row.target_id: row for row in session.execute(base)}
    out: dict[int, Row[Any]] = {}
    for chunk in _chunks(sorted(set(target_ids))):
        out.update((row.target_id, row) for row in session.execute(base.where(_among(session, chunk))))
    return out


def _keys(match_key: str | None, gtin: str | None, sku: str | None) -> tuple[str, ...]:
    keys = []
    if match_key:
        keys.append("match:" + match_key.strip().casefold())
    gtin = normalize_gtin(gtin)
    if gtin:
        keys.append("gtin:" + gtin)
    sku = normalize_code(sku)
    if sku and len(sku) >= 4:  # "12" is a shop's row number, not a product identifier
        keys.append("sku:" + sku)
    return tuple(keys)


def match_keys(target: Any, obs: Any | None) -> tuple[str, ...]:
    """The keys that tie this product to the same product elsewhere: match key, GTIN, SKU."""
    return _keys(target.match_key, obs.gtin if obs is not None else None, obs.sku if obs is not None else None)


_PRODUCTS = (Target.kind == "product", Target.active.is_(True))


class _KeyMaker:
    """`_keys` remembering the keys of each distinct (match key, GTIN, SKU): shops often print the same."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str | None, str | None, str | None], tuple[str, ...]] = {}

    def __call__(self, match_key: str | None, gtin: str | None, sku: str | None) -> tuple[str, ...]:
        keys = self.seen.get((match_key, gtin, sku))
        if keys is None:
            keys = self.seen[(match_key, gtin, sku)] = _keys(match_key, gtin, sku)
        return keys


def _offers(session: Session, target_ids: list[int] | None, keys: _KeyMaker | None = None) -> list[Offer]:
    """Offers of the active product targets `target_ids` (all when None), in target id order."""
    keys = keys or _KeyMaker()
    stmt = (with_newest_ok(session, (Target.id, Target.name, Target.url, Target.key, Target.match_key,
                                     Target.group, Rival.name, Rival.own),
                           (Observation.price, Observation.currency, Observation.availability, Observation.title,
                            Observation.sku, Observation.gtin), outer=True)
            .join(Rival, Rival.id == Target.rival_id).where(*_PRODUCTS))
    rows = []
    if target_ids is None:
        rows = session.execute(stmt).all()
    else:
        for chunk in _chunks(target_ids):
            rows += session.execute(stmt.where(_among(session, chunk))).all()
    rows.sort(key=lambda r: r[0])
    return [Offer(target_id=tid, rival=rival, own=bool(own), name=name or title or url or key, url=url,
                  price=price, currency=currency, availability=availability, keys=keys(match_key, gtin, sku),
                  group=group)
            for (tid, name, url, key, match_key, group, rival, own, price, currency, availability, title, sku,
                 gtin) in rows]


def latest_offers(session: Session) -> list[Offer]:
    """Every active product target with its newest `ok` observation, as offers."""
    return _offers(session, None)


def matched_offers(session: Session) -> list[Offer]:
    """The offers `compute` can place: those of the products matched (transitively) to an own-shop product.
    Equivalent to `latest_offers` for `compute`, read in two narrow steps: the keys of every active product
    (match key, newest GTIN and SKU), then the whole offers of the groups that hold an own-shop product."""
    own_exists = session.scalar(select(Target.id).join(Rival, Rival.id == Target.rival_id)
                                .where(*_PRODUCTS, Rival.own.is_(True)).limit(1))
    if own_exists is None:
        return []
    rows = session.execute(
        with_newest_ok(session, (Target.id, Rival.own, Target.match_key), (Observation.gtin, Observation.sku),
                       outer=True)
        .join(Rival, Rival.id == Target.rival_id).where(*_PRODUCTS)).all()
    keys_of = _KeySets()
    key_maker = _KeyMaker()
    keyed = []
    for tid, own, match_key, gtin, sku in rows:
        keys = key_maker(match_key, gtin, sku)
        if keys:
            keyed.append((tid, bool(own), keys))
            keys_of.join(keys)
    own_roots = {keys_of.find(keys[0]) for _, own, keys in keyed if own}
    wanted = sorted(tid for tid, _, keys in keyed if keys_of.find(keys[0]) in own_roots)
    return _offers(session, wanted, key_maker) if wanted else []


class _KeySets:
    """Union-find over product keys: keys seen together on one offer belong to one product."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, k: str) -> str:
        parent = self.parent
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def join(self, keys: tuple[str, ...]) -> None:
        for other in keys[1:]:
            self.parent[self.find(other)] = self.find(keys[0])


def _groups(offers: list[Offer]) -> list[list[Offer]]:
    """Offers sharing a key, transitively."""
    keys_of = _KeySets()
    for offer in offers:
        keys_of.join(offer.keys)
    groups: dict[str, list[Offer]] = {}
    for offer in offers:
        if offer.keys:
            groups.setdefault(keys_of.find(offer.keys[0]), []).append(offer)
    return list(groups.values())


def pct_gap(own: Decimal, other: Decimal) -> Decimal | None:
    if other == 0:
        return None
    return ((own - other) / other * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def compute(offers: list[Offer], changes: Iterable[tuple[int, str, dict[str, Any]]] = ()) -> Position:
    """Position of the own shop from current offers; `changes` ((target id, kind, data), today's) give the
    undercuts: a rival price move from at or above the own price to below it."""
    position = Position()
    for group in _groups(offers):
        owns = [o for o in group if o.own and o.price is not None]
        if not owns:
            continue
        own = min(owns, key=lambda o: o.price)  # type: ignore[arg-type,return-value]
        rivals = tuple(o for o in group if not o.own)
        for rival in rivals:
            position.own_of[rival.target_id] = own
        comparable = [o for o in rivals if o.buyable and (o.currency == own.currency or not o.currency
                                                           or not own.currency)]
        if not rivals:
            continue
        cheapest = min(comparable, key=lambda o: o.price) if comparable else None  # type: ignore[arg-type,return-value]
        gap = pct_gap(own.price, cheapest.price) if cheapest else None  # type: ignore[arg-type]
        position.rows.append(PositionRow(
            key=own.keys[0] if own.keys else str(own.target_id), name=own.name, own=own,
            rivals=tuple(sorted(rivals, key=lambda o: (o.price is None, o.price or 0, o.rival))),
            cheapest_rival=cheapest, gap_pct=gap,
            own_cheapest=cheapest is None or own.price <= cheapest.price))  # type: ignore[operator]
    by_id = {o.target_id: o for o in offers}
    for target_id, kind, data in changes:
        undercut = undercut_of(by_id.get(target_id), position.own_of.get(target_id), kind, data)
        if undercut is not None:
            position.undercuts.append(undercut)
    position.rows.sort(key=lambda r: r.name.casefold())
    return position


def undercut_of(offer: Offer | None, own: Offer | None, kind: str, data: dict[str, Any]) -> Undercut | None:
    """The undercut a rival's price change is, if it is one: old >= own price > new, same currency."""
    if offer is None or own is None or offer.own or own.price is None or kind not in ("price_down", "price_up"):
        return None
    try:
        old, new = Decimal(data["old"]), Decimal(data["new"])
    except (KeyError, TypeError, ArithmeticError):
        return None
    currency = data.get("currency")
    if currency and own.currency and currency != own.currency:
        return None
    if old >= own.price > new:
        return Undercut(rival=offer.rival, target_id=offer.target_id, name=own.name, own_price=own.price,
                        old=old, new=new, currency=currency or own.currency)
    return None


def position_of(session: Session, changes: Iterable[tuple[int, str, dict[str, Any]]] = ()) -> Position:
    """`compute` over the current offers; only the groups holding an own-shop product are read."""
    return compute(matched_offers(session), changes)
