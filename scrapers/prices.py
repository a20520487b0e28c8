"""Locale-aware price parsing: text as shown on a page -> (Decimal amount, ISO 4217 currency).

`price_parser.Price.fromstring` does the tokenising; around it this module adds what it leaves open:

* which separator is the decimal point when the text alone cannot tell (``34.000`` is 34 on an English
  page and 34000 on a German or Chilean one): the caller passes ``decimal_hint`` (see `decimal_hint_for`);
* shop notations price-parser does not know: ``1.299,-``, ``1'299.–``, ``12.–``;
* the ISO code behind a symbol (``R$`` -> BRL, ``zł`` -> PLN, ``$`` -> USD / CAD / CLP... by country).

Money is never a float here: amounts are `Decimal` from start to end.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from urllib.parse import urlsplit

from price_parser import Price

__all__ = [
    "parse_price",
    "parse_amount",
    "currency_from_symbol",
    "decimal_hint_for",
    "country_for",
    "currency_for_country",
]

# --------------------------------------------------------------------------------------------------
# Currencies

# symbol (as price-parser or a page shows it) -> ISO code, when the symbol is not ambiguous
_SYMBOLS: dict[str, str] = {
    "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "£": "GBP", "₹": "INR", "r$": "BRL",
    "zł": "PLN", "zl": "PLN", "kč": "CZK", "₽": "RUB", "руб": "RUB", "руб.": "RUB", "р.": "RUB",
    "₴": "UAH", "грн": "UAH", "грн.": "UAH", "₺": "TRY", "tl": "TRY", "₪": "ILS", "ש\"ח": "ILS",
    "₩": "KRW", "원": "KRW", "원~": "KRW", "₫": "VND", "đ": "VND", "฿": "THB", "₱": "PHP", "₦": "NGN",
    "lei": "RON", "ron": "RON", "kn": "HRK", "ft": "HUF", "лв": "BGN", "лв.": "BGN", "₸": "KZT",
    "тңг": "KZT", "₾": "GEL", "ر.س": "SAR", "ر.س.": "SAR", "ر.س.\u200f": "SAR", "ريال": "SAR",
    "د.إ": "AED", "د.إ.\u200f": "AED", "درهم": "AED", "ر.ق": "QAR", "ر.ق.\u200f": "QAR",
    "د.ك": "KWD", "د.ك.\u200f": "KWD", "ج.م": "EGP", "ج.م.\u200f": "EGP", "جنيه": "EGP",
    "chf": "CHF", "fr.": "CHF", "sfr.": "CHF", "rp": "IDR", "rm": "MYR", "s/": "PEN", "s/.": "PEN",
    "nt$": "TWD", "hk$": "HKD", "us$": "USD", "a$": "AUD", "au$": "AUD", "c$": "CAD", "ca$": "CAD",
    "mx$": "MXN", "nz$": "NZD", "s$": "SGD", "cl$": "CLP", "co$": "COP", "ar$": "ARS", "rd$": "DOP",
    "б.р.": "BYN", "бел. руб.": "BYN", "br": "BYN", "дин.": "RSD", "din.": "RSD", "ден": "MKD",
    "₡": "CRC", "₲": "PYG", "₭": "LAK", "৳": "BDT", "₨": "PKR", "円": "JPY", "元": "CNY",
    "cn¥": "CNY", "￥": "JPY", "¥": "JPY", "kr": "SEK", "kr.": "DKK", ",-": "", "bs": "VES",
    "kes": "KES", "ksh": "KES", "r": "ZAR",
}
# symbols whose currency depends on the country of the shop
_DOLLAR_BY_COUNTRY = {
    "US": "USD", "CA": "CAD", "AU": "AUD", "NZ": "NZD", "SG": "SGD", "HK": "HKD", "TW": "TWD",
    "MX": "MXN", "CL": "CLP", "AR": "ARS", "CO": "COP", "UY": "UYU", "BR": "BRL", "EC": "USD",
    "SV": "USD", "PA": "USD", "PR": "USD", "DO": "DOP", "NA": "NAD", "JM": "JMD", "TT": "TTD",
    "FJ": "FJD", "BZ": "BZD", "BS": "BSD", "BB": "BBD", "LR": "LRD", "ZW": "USD", "CU": "CUP",
}
_KRONA_BY_COUNTRY = {"SE": "SEK", "NO": "NOK", "DK": "DKK", "IS": "ISK", "FO": "DKK", "GL": "DKK"}
_YEN_BY_COUNTRY = {"JP": "JPY", "CN": "CNY"}
_RUPEE_BY_COUNTRY = {"IN": "INR", "PK": "PKR", "LK": "LKR", "NP": "NPR", "MU": "MUR", "SC": "SCR"}

# currency of a country (by ccTLD / locale territory), for pages that show no symbol at all
_COUNTRY_CURRENCY = {
    "US": "USD", "GB": "GBP", "UK": "GBP", "IE": "EUR", "DE": "EUR", "AT": "EUR", "FR": "EUR",
    "ES": "EUR", "IT": "EUR", "PT": "EUR", "NL": "EUR", "BE": "EUR", "LU": "EUR", "FI": "EUR",
    "GR": "EUR", "SK": "EUR", "SI": "EUR", "EE": "EUR", "LV": "EUR", "LT": "EUR", "MT": "EUR",
    "CY": "EUR", "HR": "HRK", "CH": "CHF", "LI": "CHF", "PL": "PLN", "CZ": "CZK", "HU": "HUF",
    "RO": "RON", "BG": "BGN", "SE": "SEK", "NO": "NOK", "DK": "DKK", "IS": "ISK", "RU": "RUB",
    "UA": "UAH", "BY": "BYN", "TR": "TRY", "IL": "ILS", "SA": "SAR", "AE": "AED", "QA": "QAR",
    "KW": "KWD", "EG": "EGP", "IN": "INR", "PK": "PKR", "BD": "BDT", "LK": "LKR", "JP": "JPY",
    "CN": "CNY", "KR": "KRW", "TW": "TWD", "HK": "HKD", "SG": "SGD", "MY": "MYR", "ID": "IDR",
    "TH": "THB", "VN": "VND", "PH": "PHP", "AU": "AUD", "NZ": "NZD", "CA": "CAD", "MX": "MXN",
    "BR": "BRL", "AR": "ARS", "CL": "CLP", "CO": "COP", "PE": "PEN", "UY": "UYU", "ZA": "ZAR",
    "NG": "NGN", "KE": "KES", "MA": "MAD", "RS": "RSD", "KZ": "KZT", "GE": "GEL", "MK": "MKD",
}

_ISO_CODES: frozenset[str] = frozenset()


def _iso_codes() -> frozenset[str]:
    global _ISO_CODES
    if not _ISO_CODES:
        try:
            from price_parser._currencies import CURRENCY_CODES  # type: ignore[attr-defined]
            codes = set(CURRENCY_CODES)
        except Exception:  # pragma: no cover - depends on price-parser internals
            codes = set()
        codes |= set(_COUNTRY_CURRENCY.values()) | {"USD", "EUR", "BYN", "VES", "HRK"}
        _ISO_CODES = frozenset(c for c in codes if len(c) == 3 and c.isalpha() and c.isupper())
    return _ISO_CODES


def currency_for_country(country: str | None) -> str | None:
    return _COUNTRY_CURRENCY.get(country.upper()) if country else None


def currency_from_symbol(symbol: str | None, country: str | None = None) -> str | None:
    """ISO 4217 code for a currency symbol or code as shown on a page (``R$`` -> ``BRL``)."""
    if not symbol:
        return None
    s = symbol.strip().strip("~").strip()
    if not s:
        return None
    up = s.upper()
    if len(up) == 3 and up.isalpha() and up in _iso_codes():
        return up
    low = s.lower()
    country = country.upper() if country else None
    if low == "$":
        return _DOLLAR_BY_COUNTRY.get(country or "", "USD")
    if low in ("kr", "kr.", ":-"):
        return _KRONA_BY_COUNTRY.get(country or "", _SYMBOLS[low] if low in _SYMBOLS else "SEK")
    if low in ("¥", "￥"):
        return _YEN_BY_COUNTRY.get(country or "", "JPY")
    if low in ("rs", "rs.", "₨", "rupees"):
        return _RUPEE_BY_COUNTRY.get(country or "", "INR")
    if low in ("r",) and country != "ZA":
        return None
    if low in ("br",) and country not in ("BY", None):
        return None
    code = _SYMBOLS.get(low)
    if code:
        return code
    if low.endswith("$"):
        return _DOLLAR_BY_COUNTRY.get(country or "", "USD")
    return None


# --------------------------------------------------------------------------------------------------
# Locale

# languages whose decimal separator is a comma (babel would say the same; this avoids the lookup)
_COMMA_LANGS = frozenset(
    "de fr es it pt nl pl cs sk ru uk be tr ro hr sl sr bs mk bg el sv da nb nn no fi et lv lt hu "
    "is id vi ca eu gl az kk ka hy sq uz mn af".split()
)
# countries where even an English / Spanish page uses the comma (or the dot) as decimal mark
_COMMA_COUNTRIES = frozenset(
    "DE AT FR ES IT PT NL BE LU PL CZ SK RU UA BY TR RO HR SI RS BA MK BG GR SE DK NO FI EE LV LT HU "
    "IS ID VN BR AR CL CO UY PY BO VE EC CR KZ GE AZ AM AL ZA".split()
)
_DOT_COUNTRIES = frozenset(
    "US GB UK IE AU NZ CA IN PK LK BD JP CN KR TW HK SG MY TH PH IL SA AE QA KW EG MX PE GT DO "
    "PR PA SV HN NI NG KE CH LI".split()
)
_GENERIC_TLDS = frozenset("com net org info biz shop store co io eu app online site top xyz".split())
_SECOND_LEVEL = frozenset("co com org net ac gov edu ne or".split())


_LANG_SEPARATOR = re.compile(r"[-_]")  # "pt-BR", "en_GB"


def country_for(url: str | None, html_lang: str | None = None) -> str | None:
    """Best guess of the shop's country: territory of the page language, else the ccTLD."""
    lang_country = None
    if html_lang:
        parts = _LANG_SEPARATOR.split(html_lang.strip())
        if len(parts) > 1 and len(parts[1]) == 2 and parts[1].isalpha():
            lang_country = parts[1].upper()
    tld_country = _url_country(url) if url else None
    return tld_country or lang_country


@lru_cache(maxsize=1024)
def _url_country(url: str) -> str | None:
    """The country a shop's URL names (ccTLD, a sub-domain or path prefix like en-ca); cached: every
    page asks twice (its country, its decimal separator)."""
    tld_country = None
    if url:
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError:
            host = ""
        labels = host.split(".")
        if labels:
            tld = labels[-1]
            if len(tld) == 2 and tld.isalpha() and tld not in _GENERIC_TLDS:
                tld_country = tld.upper()
            elif tld == "com" and len(labels) >= 2:
                tld_country = None
        if tld_country == "UK":
            tld_country = "GB"
        # sub-domain naming a country: ar-sa.shop.com, en-ca.shop.com, /en-ca/ in the path
        if not tld_country and url:
            m = re.search(r"(?:^|[./])([a-z]{2})[-_]([a-z]{2})(?:[./]|$)", host + "/" + (urlsplit(url).path or "")[:12])
            if m and m.group(1) in _LANGS_SEEN:
                tld_country = m.group(2).upper()
    return tld_country


_LANGS_SEEN = frozenset(
    "en de fr es it pt nl pl cs sk ru uk tr ro hr sl sr bg el sv da no nb fi et lv lt hu ar he ja ko zh "
    "th vi id ms fa hi".split()
)


def decimal_hint_for(url: str | None = None, html_lang: str | None = None) -> str | None:
    """Decimal separator a page most likely uses: ``","``, ``"."`` or None when there is no clue.

    The page language decides first (``de``, ``es``, ``pt``... use a comma, except Swiss German and
    Mexican/Peruvian Spanish), then the country from the language territory or the ccTLD.
    """
    lang = country = None
    if html_lang:
        parts = _LANG_SEPARATOR.split(html_lang.strip().lower())
        lang = parts[0] or None
        if len(parts) > 1 and len(parts[1]) == 2:
            country = parts[1].upper()
    if not country:
        country = country_for(url, None)
    if country in ("CH", "LI"):
        return "."
    if lang:
        if lang in _COMMA_LANGS:
            if country in _DOT_COUNTRIES and lang in ("es", "en"):
                return "."
            return ","
        if lang == "en":
            if country in _COMMA_COUNTRIES and country not in ("ZA",):
                return None  # English page of a comma-country shop: let the text decide
            return "."
        if lang in ("ja", "zh", "ko", "he", "th", "hi", "ms", "ar", "fa"):
            return "."
    if country in _COMMA_COUNTRIES:
        return ","
    if country in _DOT_COUNTRIES:
        return "."
    return None


# --------------------------------------------------------------------------------------------------
# Amounts

_SPACES = re.compile(r"[\s\u00a0\u2009\u202f\u2007\u200b\u200e\u200f]+")
# "1.299,-"  "1'299.–"  "12.—"  -> whole amounts
_DASH_CENTS = re.compile(r"(\d)([.,])\s?[-–—]{1,2}(?!\d)")
_NUMBER = re.compile(r"\d[\d.,' \u00a0\u2009\u202f]*")
_QUOTE_GROUPS = re.compile(r"(?<=\d)['’`´](?=\d{3})")
_SPACE_GROUPS = re.compile(r"(?<=\d) (?=\d{3}(?:\D|$))")  # 1 299,00
_NOT_DIGITS = re.compile(r"[^\d]")
_MACHINE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _normalise(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    text = _DASH_CENTS.sub(r"\1", text)
    # apostrophe / typographic quote as thousands separator (Swiss): 1'299.50, 1’299
    text = _QUOTE_GROUPS.sub("", text)
    return text


def _decide_separator(number: str, decimal_hint: str | None) -> str | None:
    """Which separator is the decimal point in a bare number string, or None for 'no decimals'."""
    digits_only = number.replace(" ", "")
    dots, commas = digits_only.count("."), digits_only.count(",")
    if dots and commas:
        return "." if digits_only.rfind(".") > digits_only.rfind(",") else ","
    sep = "." if dots else "," if commas else None
    if sep is None:
        return None
    if digits_only.count(sep) > 1:
        return None  # 1.299.000 / 1,29,999: group separators only
    tail = digits_only.rsplit(sep, 1)[1]
    if len(tail) != 3:
        return sep  # 12.5, 12,50, 1.2345: decimals
    # exactly three digits after a single separator: the ambiguous case
    if decimal_hint in (".", ","):
        return sep if decimal_hint == sep else None
    head = digits_only.split(sep, 1)[0]
    if head in ("0", ""):
        return sep
    return None  # price-parser's choice too: "34.000" -> 34000


def parse_amount(text: str, decimal_hint: str | None = None) -> Decimal | None:
    """The first amount in `text` as a Decimal (no currency handling)."""
    if not text:
        return None
    text = _normalise(text)
    m = _NUMBER.search(text)
    if not m:
        return None
    number = m.group(0).strip(" .,'")
    # a space is a group separator only between digit groups of three: "1 299,00"
    number = _SPACE_GROUPS.sub("", number)
    number = number.split(" ", 1)[0]
    if not number:
        return None
    sep = _decide_separator(number, decimal_hint)
    if sep is None:
        clean = _NOT_DIGITS.sub("", number)
    else:
        other = "," if sep == "." else "."
        whole, _, frac = number.replace(other, "").rpartition(sep)
        clean = _NOT_DIGITS.sub("", whole) + "." + _NOT_DIGITS.sub("", frac)
    try:
        value = Decimal(clean)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_price(
    text: str,
    *,
    decimal_hint: str | None = None,
    currency_hint: str | None = None,
    country: str | None = None,
) -> tuple[Decimal | None, str | None]:
    """Amount and ISO 4217 currency of a price as shown on a page.

    >>> parse_price("1.299,00 €")
    (Decimal('1299.00'), 'EUR')
    >>> parse_price("34.000", decimal_hint=",")
    (Decimal('34000'), None)

    `decimal_hint` (``","`` or ``"."``) settles the ambiguous ``34.000`` / ``1,500`` case only; text with
    both separators or with one or two decimals speaks for itself. `currency_hint` (a symbol or ISO code,
    e.g. from ``priceCurrency``) is used when the text shows no currency. `country` (ISO 3166 alpha-2)
    disambiguates ``$``, ``kr``, ``¥``.
    """
    if text is None:
        return None, None
    if not isinstance(text, str):
        if isinstance(text, bool):
            return None, None
        if isinstance(text, (int, Decimal, float)):
            value = Decimal(repr(text)) if isinstance(text, float) else Decimal(text)
            if not value.is_finite():  # Infinity / NaN from structured data is not a price
                return None, None
            return value, currency_from_symbol(currency_hint, country)
        text = str(text)
    if currency_hint is None:
        m = _SIMPLE_PRICE.fullmatch(text)
        if m is not None:
            before, whole, group_sep, sep, cents, after = m.groups()
            if not (before and after) and group_sep != sep and (before or text[0] != " ") \
                    and (after or text[-1] != " "):
                # "$1,234.56", "12,34 €", "£0.99": two decimals settle the separator; same result as below
                sym = before or after
                whole = whole.replace("," if sep == "." else ".", "")
                return Decimal(whole + "." + cents), (_simple_symbol_currency(sym, country) if sym else None)
    return _parse_price_text(text, decimal_hint, currency_hint, country)


def _simple_symbol_currency(symbol: str, country: str | None) -> str | None:
    """`currency_from_symbol` for the symbols of `_SIMPLE_PRICE`."""
    if symbol == "$":
        return _DOLLAR_BY_COUNTRY.get(country.upper() if country else "", "USD")
    return _SYMBOLS[symbol]  # € £


# the common shapes of a shown price: one $/€/£ before or after, a number with two decimals
_SIMPLE_PRICE = re.compile(r"([$€£]?) ?(\d{1,3}([,.])\d{3}(?:\3\d{3})*|\d+)([.,])(\d\d) ?([€£]?)")


@lru_cache(maxsize=8192)
def _parse_price_text(text: str, decimal_hint: str | None, currency_hint: str | None,
                      country: str | None) -> tuple[Decimal | None, str | None]:
    norm = _normalise(text)
    if not norm:
        return None, None
    try:
        parsed = Price.fromstring(norm, currency_hint=currency_hint)
    except Exception:  # price-parser on pathological input
        parsed = None
    currency, symbol = _currency_in_text(norm, country) if len(norm) < 80 else (None, None)
    hint_code = currency_hint.strip().upper() if currency_hint and len(currency_hint.strip()) == 3 else None
    if symbol is not None and hint_code in _SHARED_SYMBOLS.get(symbol, ()):
        currency = hint_code  # "$" or "kr" on the page, priceCurrency says which one
    if currency is None and parsed is not None and parsed.currency:
        sym = parsed.currency.strip()
        if not (sym.upper() in _WORDY_CODES and not re.search(
                re.escape(sym) + r"\s?\d|\d\s?" + re.escape(sym), norm)):
            currency = currency_from_symbol(sym, country)
    if currency is None and currency_hint:
        currency = currency_from_symbol(currency_hint, country)
    if currency == "RUB" and country == "BY":
        currency = "BYN"
    amount = None
    if parsed is not None and parsed.amount_text:
        amount = parse_amount(parsed.amount_text, decimal_hint)
    if amount is None:
        amount = parse_amount(norm, decimal_hint)
    return amount, currency


_CODE_IN_TEXT = re.compile(r"(?<![A-Za-z])([A-Z]{3})(?![A-Za-z])")
# ISO codes that are also common words: only trusted right next to a number
_WORDY_CODES = frozenset({"ALL", "TOP", "CUP", "PEN", "GEL", "TRY", "MOP", "BOB", "SOS", "NEW", "AND", "BAM", "MAD"})
# symbols checked before price-parser's own guess (longest first), lower-cased
_TEXT_SYMBOLS = sorted(
    [k for k in _SYMBOLS if len(k) > 1 and k not in (",-", "br", "bs", "rm", "rp", "tl", "ft", "kn", "kr", "kr.")]
    + ["rs.", "rs", "kr", "ft", "kn", "tl", "rm", "rp"],
    key=len, reverse=True,
)
_SYMBOL_RE = re.compile(
    "|".join(
        (r"(?<![^\W\d_])" + re.escape(k) + r"(?![^\W\d_])") if k[-1].isalpha() else re.escape(k)
        for k in _TEXT_SYMBOLS
    )
)


# Symbols several currencies write the same way: a currency hint (priceCurrency) settles which one.
_SHARED_SYMBOLS = {
    "$": frozenset({"USD", "CAD", "MXN", "AUD", "NZD", "HKD", "SGD", "ARS", "CLP", "COP", "TWD", "UYU", "BRL"}),
    "kr": frozenset({"SEK", "NOK", "DKK", "ISK"}), "kr.": frozenset({"SEK", "NOK", "DKK", "ISK"}),
    "¥": frozenset({"JPY", "CNY"}), "￥": frozenset({"JPY", "CNY"}),
}


def _currency_in_text(text: str, country: str | None) -> tuple[str | None, str | None]:
    """The currency a price text names, and the symbol it was read from (None for an ISO code)."""
    for m in _CODE_IN_TEXT.finditer(text):
        code = m.group(1)
        if code in _iso_codes():
            if code in _WORDY_CODES and not re.search(
                    re.escape(code) + r"\s?\d|\d\s?" + re.escape(code), text):
                continue
            return code, None
    m = _SYMBOL_RE.search(text.lower())
    if m:
        return currency_from_symbol(m.group(0), country), m.group(0)
    for sym in ("$", "¥", "￥"):  # one-character symbols are left to price-parser; remember them for hints
        if sym in text:
            return None, sym
    return None, None


@lru_cache(maxsize=4096)
def parse_machine_amount(value: str) -> Decimal | None:
    """A price from structured data (``"1299.00"``, ``"1299"``): dot decimal, no grouping."""
    v = value.strip()
    if _MACHINE.fullmatch(v):
        try:
            d = Decimal(v)
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None
