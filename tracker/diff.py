"""The diff engine: pure functions from (previous, current, rules) to typed changes.

Only `ok` observations feed price and stock diffs; the others feed health changes (a target failing,
blocked or unextractable N runs in a row, and its recovery). Nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from scrapers.types import Availability

BUYABLE = {a.value for a in Availability if a.buyable}


@dataclass(frozen=True)
class Rules:
    """Thresholds from the config's `thresholds:` section."""

    price_change_pct: Decimal = Decimal("0")
    health_after: int = 3
    rating_drop: Decimal = Decimal("0.2")       # report a rating that fell by at least this much
    review_jump_pct: Decimal = Decimal("25")    # report review counts growing faster than this % ...
    review_jump_min: int = 10                   # ... and by at least this many reviews between two checks


@dataclass(frozen=True)
class ProductState:
    """What a product diff compares: the `ok` observation of a product page."""

    price: Decimal | None
    regular_price: Decimal | None = None
    currency: str | None = None
    availability: str | None = None
    promotions: frozenset[str] = frozenset()
    name: str | None = None
    rating: Decimal | None = None
    review_count: int | None = None


@dataclass(frozen=True)
class ChangeData:
    """One change: `kind` names it (price_down, promotion_started, ...); `data` holds JSON-able details."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def pct_change(old: Decimal, new: Decimal) -> Decimal | None:
    if old == 0:
        return None
    return ((new - old) / old * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def in_stock(availability: str | None) -> bool:
    """A missing availability counts as in stock (as shops and the benchmark both assume)."""
    return availability is None or availability in BUYABLE


def diff_product(prev: ProductState | None, cur: ProductState, rules: Rules = Rules()) -> list[ChangeData]:
    """Changes between two `ok` observations of one product page. No previous state: no change."""
    if prev is None:
        return []
    changes: list[ChangeData] = []
    if prev.price is not None and cur.price is not None and cur.price != prev.price:
        if prev.currency and cur.currency and prev.currency != cur.currency:
            changes.append(ChangeData("currency_changed", {
                "old": _s(prev.price), "new": _s(cur.price),
                "old_currency": prev.currency, "new_currency": cur.currency}))
        else:
            pct = pct_change(prev.price, cur.price)
            if pct is None or abs(pct) >= rules.price_change_pct:
                changes.append(ChangeData("price_down" if cur.price < prev.price else "price_up", {
                    "old": _s(prev.price), "new": _s(cur.price), "delta": _s(cur.price - prev.price),
                    "pct": _s(pct), "currency": cur.currency or prev.currency}))
    if prev.regular_price != cur.regular_price and not (prev.regular_price is None and cur.regular_price is None):
        changes.append(ChangeData("regular_price_changed", {
            "old": _s(prev.regular_price), "new": _s(cur.regular_price),
            "currency": cur.currency or prev.currency}))
    started = sorted(cur.promotions - prev.promotions)
    ended = sorted(prev.promotions - cur.promotions)
    if started and ended:
        changes.append(ChangeData("promotion_changed", {"old": ended, "new": started}))
    elif started:
        changes.append(ChangeData("promotion_started", {"promotions": started}))
    elif ended:
        changes.append(ChangeData("promotion_ended", {"promotions": ended}))
    if prev.rating is not None and cur.rating is not None and prev.rating - cur.rating >= rules.rating_drop:
        changes.append(ChangeData("rating_dropped", {"old": _s(prev.rating), "new": _s(cur.rating),
                                                     "delta": _s(cur.rating - prev.rating)}))
    if prev.review_count is not None and cur.review_count is not None:
        gained = cur.review_count - prev.review_count
        # A burst of reviews often means a promotion or a stock-out under way at that shop.
        if gained >= rules.review_jump_min and (
                prev.review_count == 0 or Decimal(gained) * 100 / prev.review_count >= rules.review_jump_pct):
            changes.append(ChangeData("review_surge", {
                "old": prev.review_count, "new": cur.review_count, "delta": gained,
                "pct": _s(pct_change(Decimal(prev.review_count), Decimal(cur.review_count)))}))
    if in_stock(prev.availability) and not in_stock(cur.availability):
        changes.append(ChangeData("out_of_stock", {"old": prev.availability, "new": cur.availability}))
    elif not in_stock(prev.availability) and in_stock(cur.availability):
        changes.append(ChangeData("back_in_stock", {"old": prev.availability, "new": cur.availability}))
    return changes


def health_changes(*, status: str, reason: str | None, streak_before: int, failing_since: datetime | None,
                   rules: Rules = Rules()) -> tuple[int, list[ChangeData]]:
    """The new failure streak and the health changes it causes.

    A target that is not `ok` for `health_after` runs in a row is reported once (when the streak reaches
    the threshold, not on every run after); its recovery is reported once too. `failing_since` is written
    into a change only (most checks report none: no time formatted for them).
    """
    if status == "ok":
        if streak_before >= rules.health_after:
            return 0, [ChangeData("health_recovered", {"runs": streak_before, "since": _iso(failing_since)})]
        return 0, []
    streak = streak_before + 1
    if streak == rules.health_after:
        return streak, [ChangeData(f"health_{status}", {"runs": streak, "reason": reason,
                                                          "since": _iso(failing_since)})]
    return streak, []


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
