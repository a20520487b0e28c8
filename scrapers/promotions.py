"""Promotion signals: badge texts (-20 %, 2x1, Free shipping), coupon codes, sale end dates, free shipping."""

from __future__ import annotations

import re

from .fast_re import guarded

__all__ = [
    "is_badge_text", "normalize_badge", "find_coupon", "find_sale_end", "is_free_shipping", "DISCOUNT_RE",
]

DISCOUNT_RE = re.compile(
    r"(?:^|(?<=[\s(]))[-−–]\s?\d{1,2}(?:[.,]\d)?\s?%|\d{1,2}\s?%\s?(?:off|rabatt|de descuento|dto|desconto|"
    r"sconto|de réduction|korting|zniżki|rabat|скидка|off!)|(?:save|spare|ahorra|économisez|risparmi|economize)\s+\d",
    re.I,
)
MULTIBUY_RE = re.compile(
    r"(?<![\w.,])(?:\d\s?[x×]\s?\d|\d\s?(?:for|por|pour|für|per|za|за)\s?\d|\d\+\d(?:\s?gratis|\s?free)?)(?![\w.,])",
    re.I,
)
_FREE_SHIPPING = re.compile(
    r"free (?:standard )?(?:shipping|delivery)|(?:shipping|delivery)(?: is)? free|env[ií]o gr[aá]tis|env[ií]o gratuito|"
    r"frete gr[aá]tis|livraison (?:offerte|gratuite)|kostenlose[rn]? (?:versand|lieferung)|versandkostenfrei|"
    r"gratis versand|spedizione gratuita|consegna gratuita|gratis verzending|darmowa dostawa|doprava zdarma|"
    r"бесплатная доставка|безкоштовна доставка|ücretsiz kargo|무료배송|送料無料|包邮|免運|fri frakt|fri fragt|"
    r"ilmainen toimitus|livrare gratuit[aă]|besplatna dostava|ingyenes szállítás|משלוח חינם|شحن مجاني",
    re.I,
)
_BADGE_WORDS = re.compile(
    r"^(?:sale|on sale|deal|hot deal|offer|special offer|promo|promoção|promoción|oferta|offerta|soldes|promotion|"
    r"angebot|aktion|reduziert|clearance|outlet|black friday|cyber monday|liquidación|rebajas|saldi|sconto|"
    r"descuento|desconto|rabatt|skidka|скидка|акция|распродажа|bestseller|new|nuevo|neu|nouveau|novo|nuovo|"
    r"last units|últimas unidades|ultime unità|dernières pièces|letzte stücke|limited edition)!?$",
    re.I,
)
_COUPON = re.compile(
    r"(?:coupon|promo|discount|voucher|gutschein|rabatt|cup[oó]n|c[oó]digo|code|codice|kod|kód|cupom|промокод)"
    r"(?:\s*code)?\s*[:：]?\s*[\"'“«]?([A-Z0-9][A-Z0-9_-]{3,19})[\"'”»]?(?![\w-])",
    re.I,
)
_SALE_END = re.compile(
    r"(?:ends?|ending|offer ends|sale ends|valid until|valid till|until|hasta(?: el)?|termina|válido hasta|"
    r"até|fino al|jusqu'au|bis(?: zum)?|gültig bis|do|до)\s*[:]?\s*"
    r"(\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}\s+\w{3,10}\.?(?:\s+\d{4})?)",
    re.I,
)


# the same tests, faster (`fast_re`: same answers)
_DISCOUNT_SEARCH = guarded(DISCOUNT_RE).search
_MULTIBUY_SEARCH = guarded(MULTIBUY_RE).search
_BADGE_WORDS_MATCH = guarded(_BADGE_WORDS).match
_FREE_SHIPPING_SEARCH = guarded(_FREE_SHIPPING).search
_COUPON_FINDITER = guarded(_COUPON).finditer
_SALE_END_SEARCH = guarded(_SALE_END).search


def is_free_shipping(text: str | None) -> bool:
    return bool(text and _FREE_SHIPPING_SEARCH(text))


def normalize_badge(text: str) -> str:
    return " ".join(text.split()).strip(" |·•")


def is_badge_text(text: str | None) -> bool:
    """Short text that reads like a promotion badge: -20%, 20% off, 2x1, 3 for 2, Sale, Free shipping."""
    if not text:
        return False
    t = normalize_badge(text)
    if not t or len(t) > 40:
        return False
    return bool(_DISCOUNT_SEARCH(t) or _MULTIBUY_SEARCH(t) or _BADGE_WORDS_MATCH(t) or _FREE_SHIPPING_SEARCH(t))


def find_coupon(text: str | None) -> str | None:
    """A coupon code written on the page ("Use code SAVE20", "Cupón: VERANO")."""
    if not text:
        return None
    for m in _COUPON_FINDITER(text):
        code = m.group(1)
        # a code is shouted: mostly upper-case / digits, not a plain word
        if code.upper() == code and any(c.isalpha() for c in code) and code.lower() not in ("code", "promo"):
            return code
    return None


def find_sale_end(text: str | None) -> str | None:
    if not text:
        return None
    m = _SALE_END_SEARCH(text)
    return m.group(1) if m else None
