"""Typed values that scrapers return: a page goes in, one of these comes out.

`scrapers/` knows nothing of the database, the scheduler or the config file. Every extractor is a function
of (HTML, URL, optional spec) that returns one of these frozen dataclasses, so it can be tested on a saved
file. Money is always `Decimal` with an ISO 4217 currency code beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Availability(StrEnum):
    """schema.org ItemAvailability values, the ones shops actually use."""

    IN_STOCK = "InStock"
    OUT_OF_STOCK = "OutOfStock"
    PRE_ORDER = "PreOrder"
    BACK_ORDER = "BackOrder"
    LIMITED = "LimitedAvailability"
    DISCONTINUED = "Discontinued"
    SOLD_OUT = "SoldOut"
    IN_STORE_ONLY = "InStoreOnly"
    ONLINE_ONLY = "OnlineOnly"

    @property
    def buyable(self) -> bool:
        return self in _BUYABLE


_BUYABLE = frozenset({Availability.IN_STOCK, Availability.LIMITED, Availability.ONLINE_ONLY,
                      Availability.PRE_ORDER, Availability.BACK_ORDER})


@dataclass(frozen=True)
class Selectors:
    """CSS selectors a user configures for one page; each one overrides automatic extraction."""

    price: str | None = None
    regular_price: str | None = None
    promotion: str | None = None
    availability: str | None = None
    name: str | None = None
    sku: str | None = None
    wait_for: str | None = None  # browser only: wait for this selector before reading the page

    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "wait_for")


@dataclass(frozen=True)
class Product:
    """What one product page says about its main product. Any field may be missing (None / empty)."""

    name: str | None = None
    price: Decimal | None = None              # what the buyer pays now
    regular_price: Decimal | None = None      # list / strike-through price, when higher than `price`
    currency: str | None = None               # ISO 4217, e.g. "EUR"
    availability: Availability | None = None
    sku: str | None = None
    gtin: str | None = None
    mpn: str | None = None
    brand: str | None = None
    promotions: tuple[str, ...] = ()          # badge texts: "-20%", "2x1", "Free shipping"
    coupon: str | None = None                 # a coupon code shown on the page
    promotion_ends: str | None = None         # sale end date/time as shown (ISO 8601 when known)
    shipping: Decimal | None = None           # shipping cost; Decimal(0) = free shipping
    rating: Decimal | None = None             # average rating, on the page's own scale (usually 0..5)
    review_count: int | None = None
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict: Decimals as strings, enums as their value."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Decimal):
                v = format(v, "f")
            elif isinstance(v, Availability):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


@dataclass(frozen=True)
class ListingSelectors:
    """CSS selectors for a listing page; with none set, product cards are found automatically."""

    item: str | None = None    # one product card
    link: str | None = None    # inside a card: the product link (default: first <a href>)
    name: str | None = None
    price: str | None = None
    regular_price: str | None = None
    badge: str | None = None
    next: str | None = None    # the "next page" link or button


@dataclass(frozen=True)
class ListingItem:
    """One product card on a category / offers / search page."""

    url: str
    name: str | None = None
    price: Decimal | None = None
    regular_price: Decimal | None = None
    currency: str | None = None
    badge: str | None = None


@dataclass(frozen=True)
class ListingPage:
    """The product cards found on one listing page, and where the next page is (if any)."""

    items: tuple[ListingItem, ...] = ()
    next_url: str | None = None


@dataclass(frozen=True)
class SerpResult:
    """One organic search result: 1-based position across pages, resolved target URL."""

    position: int
    url: str
    title: str
    snippet: str = ""


@dataclass(frozen=True)
class SerpPage:
    """One parsed search-results page."""

    results: tuple[SerpResult, ...] = ()
    features: frozenset[str] = field(default_factory=frozenset)  # ads, shopping, local_pack, ...
    next_url: str | None = None
    no_results: bool = False


@dataclass(frozen=True)
class SeoSnapshot:
    """On-page SEO fields of one URL."""

    status_code: int | None = None
    final_url: str | None = None
    title: str | None = None
    meta_description: str | None = None
    h1: tuple[str, ...] = ()
    canonical: str | None = None
    robots: str | None = None           # meta robots and X-Robots-Tag, merged, lower-case
    hreflang: tuple[tuple[str, str], ...] = ()  # (lang, href), sorted
    structured_data_types: tuple[str, ...] = ()  # sorted schema.org @types
    word_count: int = 0


@dataclass(frozen=True)
class Block:
    """Why a page is a bot wall / CAPTCHA / consent page instead of content."""

    kind: str     # "captcha" | "challenge" | "consent" | "rate_limit" | "access_denied"
    reason: str   # human-readable, e.g. "Google 'unusual traffic' CAPTCHA"
