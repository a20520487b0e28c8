"""The diff engine, as a table of (previous, current) -> changes."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tracker.diff import ProductState, Rules, diff_product, health_changes


def kinds(prev, cur, rules=Rules()):
    return [c.kind for c in diff_product(prev, cur, rules)]


P = ProductState


@pytest.mark.parametrize("prev, cur, expected", [
    (None, P(D("10")), []),
    (P(D("10"), currency="EUR"), P(D("10"), currency="EUR"), []),
    (P(D("100"), currency="EUR"), P(D("88"), currency="EUR"), ["price_down"]),
    (P(D("100"), currency="EUR"), P(D("101"), currency="EUR"), ["price_up"]),
    (P(D("100"), currency="EUR"), P(D("100"), currency="USD"), []),
    (P(D("100"), currency="EUR"), P(D("90"), currency="USD"), ["currency_changed"]),
    (P(D("100")), P(D("80"), regular_price=D("100"), promotions=frozenset({"-20%"})),
     ["price_down", "regular_price_changed", "promotion_started"]),
    (P(D("80"), promotions=frozenset({"-20%"})), P(D("80")), ["promotion_ended"]),
    (P(D("80"), promotions=frozenset({"-20%"})), P(D("80"), promotions=frozenset({"2x1"})), ["promotion_changed"]),
    (P(D("80"), availability="InStock"), P(D("80"), availability="OutOfStock"), ["out_of_stock"]),
    (P(D("80"), availability="SoldOut"), P(D("80")), ["back_in_stock"]),
    (P(D("80"), availability="InStock"), P(D("80"), availability="LimitedAvailability"), []),
    (P(D("80")), P(None, availability="OutOfStock"), ["out_of_stock"]),
])
def test_product_changes(prev, cur, expected):
    assert kinds(prev, cur) == expected


def test_price_down_carries_delta_and_percentage_as_decimal_strings():
    (change,) = diff_product(P(D("129.90"), currency="EUR"), P(D("114.90"), currency="EUR"))
    assert change.data == {"old": "129.90", "new": "114.90", "delta": "-15.00", "pct": "-11.5", "currency": "EUR"}


def test_moves_below_the_threshold_are_not_reported():
    rules = Rules(price_change_pct=D("2"))
    assert kinds(P(D("100")), P(D("99")), rules) == []
    assert kinds(P(D("100")), P(D("98")), rules) == ["price_down"]


def test_failing_target_is_reported_once_when_the_streak_reaches_the_threshold():
    rules = Rules(health_after=3)
    streak, reported = 0, []
    for _ in range(6):
        streak, changes = health_changes(status="failed", reason="HTTP 500", streak_before=streak,
                                         failing_since=None, rules=rules)
        reported += changes
    assert [c.kind for c in reported] == ["health_failed"]
    streak, changes = health_changes(status="ok", reason=None, streak_before=streak, failing_since=None,
                                     rules=rules)
    assert streak == 0 and [c.kind for c in changes] == ["health_recovered"]


def test_rating_drop_of_two_tenths_is_reported_and_smaller_wobbles_are_not():
    assert kinds(P(D("10"), rating=D("4.6")), P(D("10"), rating=D("4.4"))) == ["rating_dropped"]
    assert kinds(P(D("10"), rating=D("4.6")), P(D("10"), rating=D("4.5"))) == []
    assert kinds(P(D("10"), rating=D("4.4")), P(D("10"), rating=D("4.9"))) == []


@pytest.mark.parametrize("before, after, reported", [
    (100, 130, True),    # +30 %, +30 reviews
    (100, 115, False),   # +15 %: under the rate
    (20, 28, False),     # +40 % but only 8 reviews
    (0, 12, True),
    (100, 90, False),    # reviews removed: not a surge
])
def test_review_count_jump_beyond_the_configured_rate_is_reported(before, after, reported):
    changes = kinds(P(D("10"), review_count=before), P(D("10"), review_count=after))
    assert changes == (["review_surge"] if reported else [])
