"""Property tests for price parsing (scrapers.prices.parse_price): it never crashes, whatever the text,
and it reads back any amount formatted by Babel (CLDR) in many locales, currency included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from babel import Locale
from babel.numbers import format_currency, get_currency_precision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapers.prices import parse_amount, parse_price

# locale -> the currency its shops price in
LOCALES = {
    "de_DE": "EUR", "fr_FR": "EUR", "es_ES": "EUR", "pt_BR": "BRL", "it_IT": "EUR", "en_US": "USD",
    "en_IN": "INR", "de_CH": "CHF", "ja_JP": "JPY", "pl_PL": "PLN", "nl_NL": "EUR", "en_GB": "GBP",
    "sv_SE": "SEK", "da_DK": "DKK", "cs_CZ": "CZK", "fr_CH": "CHF", "de_AT": "EUR", "pt_PT": "EUR",
    "es_MX": "MXN", "en_CA": "CAD", "fr_CA": "CAD", "nb_NO": "NOK", "hu_HU": "HUF", "tr_TR": "TRY",
}
ROUND_TRIP_EXAMPLES = 250
FUZZ_EXAMPLES = 3000


def amounts(currency: str) -> st.SearchStrategy[Decimal]:
    places = get_currency_precision(currency)
    return st.decimals(min_value=Decimal("0.01") if places else Decimal(1), max_value=Decimal("9999999"),
                       places=places, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("locale", list(LOCALES))
def test_babel_formatted_prices_round_trip(locale):
    currency = LOCALES[locale]
    decimal_sign = Locale.parse(locale).number_symbols["latn"]["decimal"]

    @settings(max_examples=ROUND_TRIP_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(amounts(currency))
    def round_trip(value: Decimal) -> None:
        text = format_currency(value, currency, locale=locale)
        amount, cur = parse_price(text, decimal_hint=decimal_sign, currency_hint=currency)
        assert (amount, cur) == (value, currency), text

    round_trip()


@pytest.mark.parametrize("locale", ["de_DE", "fr_FR", "en_US", "en_IN", "de_CH",
                                    "pl_PL", "pt_BR"])
def test_babel_formatted_prices_round_trip_without_hints_when_unambiguous(locale):
    """Without hints, an amount with cents reads back whatever the locale's separators."""
    currency = LOCALES[locale]

    @settings(max_examples=ROUND_TRIP_EXAMPLES, deadline=None)
    @given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999"), places=2)
           .filter(lambda d: d % 1 != 0))
    def round_trip(value: Decimal) -> None:
        text = format_currency(value, currency, locale=locale)
        assert parse_price(text)[0] == value, text

    round_trip()


PRICEISH = st.text(alphabet=st.sampled_from(list("0123456789.,' -–—\u00a0\u202f\u2009€$£¥₹zł CHFkrR$EURUSD()+")),
                   max_size=40)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(text=st.one_of(st.text(max_size=200), PRICEISH),
       decimal_hint=st.sampled_from([None, ",", ".", "", "x"]),
       currency_hint=st.one_of(st.none(), st.sampled_from(["EUR", "$", "zł", "kr", "¥", "XXX", "", "garbage"]),
                               st.text(max_size=5)),
       country=st.one_of(st.none(), st.sampled_from(["DE", "US", "CH", "BY", "JP", "zz", ""])))
def test_parse_price_never_crashes_and_returns_a_finite_decimal(text, decimal_hint, currency_hint, country):
    amount, currency = parse_price(text, decimal_hint=decimal_hint, currency_hint=currency_hint, country=country)
    assert amount is None or (isinstance(amount, Decimal) and amount.is_finite() and amount >= 0)
    assert currency is None or (isinstance(currency, str) and len(currency) == 3 and currency.isupper())
    assert parse_amount(text, decimal_hint) is None or parse_amount(text, decimal_hint).is_finite()


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(min_value=0, max_value=10**12),
                 st.floats(allow_nan=False, allow_infinity=False), st.decimals(allow_nan=False, allow_infinity=False)))
def test_parse_price_accepts_non_text_values_from_structured_data(value):
    try:
        amount, _ = parse_price(value)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"parse_price({value!r}) raised {type(exc).__name__}: {exc}")
    assert amount is None or amount.is_finite()


@pytest.mark.parametrize("value", [Decimal("Infinity"), Decimal("NaN"), float("inf"), float("nan")])
def test_non_finite_numbers_from_structured_data_are_not_prices(value):
    assert parse_price(value)[0] is None  # type: ignore[arg-type]
