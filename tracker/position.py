"""Price position against the own shop: the same product across shops, who is cheapest, the gap in %.

Products are tied together by the config's `match:` key, else by GTIN, else by SKU (as the shops print
them); two targets sharing any of these keys are the same product, transitively. A group counts when it
holds a product of the own shop (`own: true`) and at least one rival's, with a current price in the same
currency. Out-of-stock rival offers are shown but never "cheapest": nobody can buy them.

Pure reading: `latest_offers` queries, everything else works on plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select
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


def latest_ok(session: Session, target_ids: Iterable[int] | None = None) -> dict[int, Observation]:
    """The newest `ok` observation of each target (all product targets when `target_ids` is None)."""
    newest = select(func.max(Observation.id)).where(Observation.status == "ok").group_by(Observation.target_id)
    if target_ids is not None:
        ids = list(target_ids)
        if not ids:
            return {}
        newest = newest.where(Observation.target_id.in_(ids))
    rows = session.scalars(select(Observation).where(Observation.id.in_(newest.scalar_subquery())))
    return {obs.target_id: obs for obs in rows}


def match_keys(target: Target, obs: Observation | None) -> tuple[str, ...]:
    """The keys that tie this product to the same product elsewhere: match key, GTIN, SKU."""
    keys = []
    if target.match_key:
        keys.append("match:" + target.match_key.strip().casefold())
    if obs is not None:
        gtin = normalize_gtin(obs.gtin)
        if gtin:
            keys.append("gtin:" + gtin)
        sku = normalize_code(obs.sku)
        if sku and len(sku) >= 4:  # "12" is a shop's row number, not a product identifier
            keys.append("sku:" + sku)
    return tuple(keys)


def latest_offers(session: Session) -> list[Offer]:
    """Every active product target with its newest `ok` observation, as offers."""
    rows = session.execute(
        select(Target, Rival).join(Rival, Rival.id == Target.rival_id)
        .where(Target.kind == "product", Target.active.is_(True)).order_by(Target.id)).all()
    latest = latest_ok(session, [t.id for t, _ in rows])
    offers = []
    for target, rival in rows:
        obs = latest.get(target.id)
        offers.append(Offer(
            target_id=target.id, rival=rival.name, own=bool(rival.own),
            name=target.name or (obs.title if obs else None) or target.url or target.key, url=target.url,
            price=obs.price if obs else None, currency=obs.currency if obs else None,
            availability=obs.availability if obs else None, keys=match_keys(target, obs), group=target.group))
    return offers


def _groups(offers: list[Offer]) -> list[list[Offer]]:
    """Offers sharing a key, transitively (union-find over keys)."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for offer in offers:
        for other in offer.keys[1:]:
            parent[find(other)] = find(offer.keys[0])
    groups: dict[str, list[Offer]] = {}
    for offer in offers:
        if offer.keys:
            groups.setdefault(find(offer.keys[0]), []).append(offer)
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
    return compute(latest_offers(session), changes)
