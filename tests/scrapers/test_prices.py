"""scrapers.prices: amounts as Decimal, ISO currencies, locale-aware separators."""

from __future__ import annotations

from decimal import Decimal

import pytest

from scrapers.prices import country_for, currency_from_symbol, decimal_hint_for, parse_price


@pytest.mark.parametrize(
    ("text", "hint", "country", "amount", "currency"),
    [
        ("1.299,00 €", None, None, "1299.00", "EUR"),
        ("CHF 1'299.–", None, None, "1299", "CHF"),
        ("R$ 1.299,90", None, None, "1299.90", "BRL"),
        ("₹1,29,999", None, None, "129999", "INR"),
        ("$1,299.99", None, None, "1299.99", "USD"),
        ("£5", None, None, "5", "GBP"),
        ("12,50 zł", None, None, "12.50", "PLN"),
        ("1 299 Kč", None, None, "1299", "CZK"),
        ("Lei 173,34", None, None, "173.34", "RON"),
        ("270,00 kn", None, None, "270.00", "HRK"),
        ("30,000원~", None, None, "30000", "KRW"),
        ("ر.س 99.00", None, None, "99.00", "SAR"),
        ("NT$ 99", None, None, "99", "TWD"),
        ("US$ 12", None, None, "12", "USD"),
        ("12.99 EUR", None, None, "12.99", "EUR"),
        ("€ 0,99", None, None, "0.99", "EUR"),
        ("1.299,-", None, None, "1299", None),
        ("Rs 23,450", None, "PK", "23450", "PKR"),
        ("$3.340", ",", "CL", "3340", "CLP"),
        ("kr 1 299,00", None, "SE", "1299.00", "SEK"),
        ("502,20 – 558,00 б.р.", ",", "BY", "502.20", "BYN"),
    ],
)
def test_prices_as_shops_print_them(text, hint, country, amount, currency):
    assert parse_price(text, decimal_hint=hint, country=country) == (Decimal(amount), currency)


def test_german_thousands_separator_is_not_a_decimal_point():
    assert parse_price("34.000", decimal_hint=",") == (Decimal("34000"), None)


def test_dot_decimal_hint_keeps_three_decimals():
    assert parse_price("34.000", decimal_hint=".")[0] == Decimal("34.000")


@pytest.mark.parametrize(("text", "hint", "amount"), [("1,500", ",", "1.500"), ("1,500", ".", "1500")])
def test_comma_with_three_digits_follows_the_hint(text, hint, amount):
    assert parse_price(text, decimal_hint=hint)[0] == Decimal(amount)


def test_two_decimals_need_no_hint_whatever_the_separator():
    assert parse_price("1.299,50", decimal_hint=".")[0] == Decimal("1299.50")
    assert parse_price("1,299.50", decimal_hint=",")[0] == Decimal("1299.50")


def test_amount_is_decimal_never_float():
    amount, _ = parse_price("19.99")
    assert isinstance(amount, Decimal) and amount == Decimal("19.99")


def test_currency_hint_is_used_when_text_has_no_symbol():
    assert parse_price("19.99", currency_hint="EUR") == (Decimal("19.99"), "EUR")


@pytest.mark.parametrize("text", ["", "   ", "Call for price", "—"])
def test_text_without_a_number_gives_nothing(text):
    assert parse_price(text)[0] is None


def test_word_that_is_also_a_currency_code_is_not_a_currency():
    assert parse_price("Buy it ALL now 12")[1] is None


@pytest.mark.parametrize(
    ("symbol", "country", "code"),
    [("$", "CA", "CAD"), ("$", "CL", "CLP"), ("$", None, "USD"), ("kr", "NO", "NOK"), ("kr", "DK", "DKK"),
     ("R$", None, "BRL"), ("zł", None, "PLN"), ("eur", None, "EUR"), ("¥", "CN", "CNY")],
)
def test_symbol_to_iso_code_depends_on_country_where_ambiguous(symbol, country, code):
    assert currency_from_symbol(symbol, country) == code


@pytest.mark.parametrize(
    ("url", "lang", "hint"),
    [
        ("https://www.shop.de/p/1", "de", ","),
        ("https://www.shop.ch/de/p/1", "de-CH", "."),
        ("https://www.puntoticket.example.cl/evento", "es", ","),
        ("https://www.tienda.example.mx/p", "es-MX", "."),
        ("https://www.shop.com/p", "en-US", "."),
        ("https://www.loja.example.com.br/p", "pt-BR", ","),
        ("https://www.shop.pl/p", None, ","),
        ("https://www.shop.com/p", None, None),
    ],
)
def test_decimal_hint_from_language_and_country(url, lang, hint):
    assert decimal_hint_for(url, lang) == hint


def test_country_from_cctld_or_language_territory():
    assert country_for("https://www.example.co.uk/x") == "GB"
    assert country_for("https://www.example.com/x", "en-CA") == "CA"
    assert country_for("https://ar-sa.example.com/x") == "SA"
