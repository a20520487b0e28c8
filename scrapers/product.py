"""Zero-configuration product-page extraction: price, regular price, stock, SKU and promotions of the main
product on a page, from structured data reconciled with what the page visibly shows.

Entry point: `extract_product(html, url, selectors=None) -> Product`. Pure, never raises.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

from selectolax.lexbor import LexborHTMLParser

from .availability import availability_from_text, normalize_availability
from .prices import country_for, currency_for_country, decimal_hint_for, parse_machine_amount, parse_price
from .promotions import find_coupon, find_sale_end, is_badge_text, is_free_shipping, normalize_badge
from .structured import Record, jsonld_records, meta_records, microdata_records, state_records
from .types import Availability, Product, Selectors

__all__ = ["extract_product", "decimal_hint_for", "parse_document"]

log = logging.getLogger(__name__)

MAX_BYTES = 3_000_000


# --------------------------------------------------------------------------------------------------
# document

def _decode(html: str | bytes) -> str:
    if isinstance(html, str):
        return html
    head = html[:4096]
    m = re.search(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", head, re.I)
    enc = m.group(1).decode("ascii", "ignore") if m else "utf-8"
    try:
        return html.decode(enc, errors="replace")
    except LookupError:
        return html.decode("utf-8", errors="replace")


@dataclass
class Doc:
    """One parsed page plus what every rule needs to know about it."""

    html: str
    url: str
    tree: Any
    lang: str | None
    country: str | None
    decimal_hint: str | None
    h1: str | None = None
    title: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def price(self, value: Any, currency_hint: str | None = None) -> tuple[Decimal | None, str | None]:
        """Parse a structured or visible price value in this page's locale."""
        if value is None or isinstance(value, bool):
            return None, None
        cur = None
        if currency_hint:
            from .prices import currency_from_symbol
            cur = currency_from_symbol(currency_hint, self.country)
        if isinstance(value, int):
            return Decimal(value), cur
        if isinstance(value, float):
            return Decimal(repr(value)), cur
        if isinstance(value, Decimal):
            return value, cur
        s = str(value).strip()
        if not s:
            return None, None
        d = parse_machine_amount(s)
        if d is not None:
            return d, cur
        amount, c = parse_price(s, decimal_hint=self.decimal_hint, currency_hint=currency_hint, country=self.country)
        return amount, c or cur


def parse_document(html: str | bytes, url: str) -> Doc:
    text = _decode(html)
    if len(text) > MAX_BYTES:
        text = text[:MAX_BYTES]
    tree = LexborHTMLParser(text)
    root = tree.css_first("html")
    lang = None
    if root is not None:
        lang = root.attributes.get("lang") or root.attributes.get("xml:lang")
    if not lang:
        m = tree.css_first('meta[http-equiv="content-language"]')
        if m is not None:
            lang = m.attributes.get("content")
    country = country_for(url, lang)
    doc = Doc(html=text, url=url, tree=tree, lang=lang, country=country, decimal_hint=decimal_hint_for(url, lang))
    h1 = tree.css_first("h1")
    if h1 is not None:
        doc.h1 = _ws(h1.text(deep=True)) or None
    t = tree.css_first("title")
    if t is not None:
        doc.title = _ws(t.text(deep=True)) or None
    return doc


def _ws(s: str | None) -> str:
    return " ".join(s.split()) if s else ""


# --------------------------------------------------------------------------------------------------
# main product among structured records

def _norm_words(s: str | None) -> set[str]:
    return set(re.findall(r"\w{2,}", s.lower())) if s else set()


def _name_match(a: str | None, b: str | None) -> float:
    wa, wb = _norm_words(a), _norm_words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / min(len(wa), len(wb))


def _url_key(u: str | None) -> str:
    if not u:
        return ""
    try:
        p = urlsplit(u)
    except ValueError:
        return ""
    return unquote(p.path).rstrip("/").lower()


def _record_score(rec: Record, doc: Doc, index: int) -> float:
    s = 0.0
    if rec.offers and any(o.get("price") is not None or o.get("low") is not None for o in rec.offers):
        s += 3
    if rec.type in ("product", "productgroup", "productmodel", "individualproduct", "car", "vehicle", "book"):
        s += 1
    ref = doc.h1 or doc.meta.get("og:title") or doc.title
    s += 2 * _name_match(rec.name, ref)
    if rec.url and _url_key(rec.url) and _url_key(rec.url) == _url_key(doc.url):
        s += 1
    if rec.sku and len(rec.sku) >= 4 and rec.sku.lower() in doc.url.lower():
        s += 1
    s -= 0.5 * min(rec.depth, 4)
    s += {"jsonld": 0.6, "microdata": 0.5, "rdfa": 0.4, "meta": 0.2, "state": 0.0}.get(rec.source, 0)
    s -= 0.05 * index
    return s


def _choose_offer(rec: Record, doc: Doc) -> dict | None:
    offers = [o for o in rec.offers if o.get("price") is not None or o.get("low") is not None]
    if not offers:
        return rec.offers[0] if rec.offers else None
    page = _url_key(doc.url)
    query = urlsplit(doc.url).query if doc.url else ""
    for o in offers:
        if o.get("sku") and query and str(o["sku"]) in query:
            return o
    for o in offers:
        if o.get("url") and _url_key(o["url"]) == page and query and query in (o["url"] or ""):
            return o
    return offers[0]


# --------------------------------------------------------------------------------------------------
# visible prices

_PRICE_SEL = (
    "h1, [class*=price], [class*=Price], [class*=PRICE], [id*=price], [id*=Price], [itemprop=price], "
    "[data-price], [class*=cena], [class*=preis], [class*=prix], [class*=precio], [class*=preco], [class*=prezzo], "
    "[class*=amount], del, s, strike"
)
_BAD_CONTEXT = re.compile(
    r"related|recommend|similar|carousel|slider|swiper|upsell|up-sell|cross-?sell|also|recent|viewed|footer|"
    r"header|navbar|menu|mini-?cart|basket|bundle|accessor|review|sponsor|compare-list|suggest|other-?products|"
    r"product-?list|product-?grid|listing|tile|teaser|widget|banner|promo-?bar|shipping|delivery|installment|"
    r"financ|cuota|parcel|monthly|klarna|afterpay|tooltip|modal",
    re.I,
)
_STRIKE_CLASS = re.compile(
    r"old|was|regular|before|original|list-?price|strike|crossed|rrp|uvp|msrp|compare|prev|former|initial|"
    r"retail|reference|barred|line-?through|nonsale|non-sale|full-?price|standard|antes|alt|vorher|streich|"
    r"ancien|barre|dashed|precio-?anterior|de-?price|price-?from|price--from",
    re.I,
)
_CURRENT_CLASS = re.compile(
    r"sale|special|final|current|now|actual|promo|offer|discount|reduced|selling|our|deal|new|main|big|"
    r"large|primary|highlight|product-?price|price-?value|value|amount",
    re.I,
)
_TEXT_PENALTY = re.compile(
    r"shipping|delivery|envío|envio|frete|versand|livraison|spedizione|dostawa|доставка|month|/mo\b|mes\b|"
    r"monat|mois|mese|x de|\d+\s?x\s|cuotas|parcela|installment|save|ahorra|économ|risparmi|spare|"
    r"%|points|punkte|puntos|reviews?|bewertung|avis|opiniones|valoraciones|per\s|/\s?(?:kg|l|m|ml|g|100)",
    re.I,
)
_HAS_DIGIT = re.compile(r"\d")
_CURRENCY_MARK = re.compile(
    r"[$€£¥₹₽₴₺₪₩₫฿₱₦₨]|\b(?:[A-Z]{3}|zł|kč|lei|kn|ft|kr|rs\.?|r\$|лв|руб|грн|б\.р\.|ر\.س|원)\b|원|ر\.س|zł|Kč",
    re.I,
)


@dataclass
class Candidate:
    amount: Decimal
    currency: str | None
    text: str
    score: float
    strike: bool
    order: int


def _node_classes(node) -> str:
    a = node.attributes
    return " ".join(filter(None, (a.get("class"), a.get("id"), a.get("itemprop"), a.get("data-testid"),
                                  a.get("data-test"), a.get("data-qa"), a.get("data-automation"))))


def _context(node, levels: int = 12) -> tuple[bool, bool]:
    """(inside an unrelated block, inside a strike-through), looking up `levels` ancestors."""
    bad = strike = False
    p = node.parent
    i = 0
    while p is not None and i < levels and p.tag not in ("body", "html"):
        if p.tag in ("del", "s", "strike"):
            strike = True
        cls = _node_classes(p)
        if cls:
            if i < 3 and _STRIKE_CLASS.search(cls):
                strike = True
            if _BAD_CONTEXT.search(cls):
                bad = True
        if p.tag in ("footer", "nav", "header", "aside"):
            bad = True
        p = p.parent
        i += 1
    return bad, strike


def visible_prices(doc: Doc) -> list[Candidate]:
    nodes = doc.tree.css(_PRICE_SEL)
    h1_order = None
    cands: list[Candidate] = []
    seen_text: dict[int, str] = {}
    for order, node in enumerate(nodes):
        if node.tag == "h1":
            if h1_order is None:
                h1_order = order
            continue
        if node.tag in ("script", "style", "meta", "link", "input", "option", "select", "noscript", "template", "img"):
            continue
        text = node.text(deep=True)
        if not text or len(text) > 200:
            continue
        text = _ws(text)
        if not text or len(text) > 60 or not _HAS_DIGIT.search(text):
            continue
        amount, currency = parse_price(text, decimal_hint=doc.decimal_hint, country=doc.country)
        if amount is None or amount <= 0:
            continue
        cls = _node_classes(node)
        score = 0.0
        if "price" in cls.lower() or node.attributes.get("itemprop") == "price":
            score += 2
        if _CURRENCY_MARK.search(text):
            score += 1.5
        else:
            score -= 1
        if _CURRENT_CLASS.search(cls):
            score += 0.5
        if _TEXT_PENALTY.search(text):
            score -= 3
        strike = node.tag in ("del", "s", "strike") or bool(_STRIKE_CLASS.search(cls))
        bad, strike_ctx = _context(node)
        strike = strike or strike_ctx
        if bad:
            score -= 4
        cands.append(Candidate(amount, currency, text, score, strike, order))
    if h1_order is not None:
        for c in cands:
            d = c.order - h1_order
            if 0 < d <= 25:
                c.score += 3 - d * 0.08
            elif -10 <= d < 0:
                c.score += 1.5
            else:
                c.score -= min(abs(d), 400) * 0.005
    return cands


# --------------------------------------------------------------------------------------------------
# identifiers

_SKU_LABEL = re.compile(
    r"(?:\bSKU|\bArt(?:ikel)?\.?[\s-]?(?:Nr|nummer|no)\.?|\bArtikelnummer|\bItem\s?(?:#|no\.?|number|code)|"
    r"\bProduct\s?(?:code|id|no\.?|number|#)|\bRef(?:erence|erencia|\.|erência)?|\bC[óo]d(?:igo|\.)?(?:\s+(?:do\s+)?produto)?|"
    r"\bCodice|\bKod(?:\s+produktu)?|\bKód|\bKood|\bКод(?:\s+товара)?|\bАртикул|\bModel(?:\s?(?:no|number|#))?|"
    r"\bSku|\bEAN|\bPart\s?(?:no|number|#))\s*[:#.]?\s*([A-Za-z0-9][A-Za-z0-9._/-]{2,30})",
)


def _sku_from_url(url: str) -> str | None:
    try:
        p = urlsplit(url)
    except ValueError:
        return None
    for key in ("sku", "childSku", "productId", "product_id", "pid", "itemId", "id"):
        m = re.search(r"(?:^|&)" + key + r"=([A-Za-z0-9_-]{4,30})", p.query)
        if m:
            return m.group(1)
    path = unquote(p.path)
    m = re.search(r"/(?:dp|gp/product|itm|item|prod|p|product|products|produkt|produto|producto)/(?:[^/]*?[-_])?([A-Z0-9]{6,14})(?:[/?]|$)", path, re.I)
    if m and any(ch.isdigit() for ch in m.group(1)):
        return m.group(1)
    m = re.search(r"[-_/](?:p|x|iid|pd|sku)?-?(\d{5,14})(?:\.html?|\.php|/)?$", path)
    if m:
        return m.group(1)
    return None


# --------------------------------------------------------------------------------------------------
# main

def extract_product(html: str | bytes, url: str, selectors: Selectors | None = None) -> Product:
    """The main product of a page; configured `selectors` override automatic values field by field."""
    try:
        doc = parse_document(html, url)
        return _extract(doc, selectors)
    except Exception:  # noqa: BLE001 - a bad page must never break the fetch loop
        log.warning("product extraction failed for %s", url, exc_info=True)
        return Product()


def _extract(doc: Doc, selectors: Selectors | None) -> Product:
    tree = doc.tree
    records: list[Record] = []
    records.extend(jsonld_records(tree))
    if "itemprop" in doc.html or "typeof" in doc.html:
        records.extend(microdata_records(tree))
    meta_rec, meta = meta_records(tree)
    doc.meta = meta
    if meta_rec is not None:
        records.append(meta_rec)

    main: Record | None = None
    if records:
        scored = sorted(((_record_score(r, doc, i), i, r) for i, r in enumerate(records)), key=lambda x: (-x[0], x[1]))
        main = scored[0][2]

    f: dict[str, Any] = {}
    price = regular = None
    currency = None
    avail: Availability | None = None
    if main is not None:
        offer = _choose_offer(main, doc)
        if main.variants and (offer is None or offer.get("price") is None):
            for v in main.variants:
                vo = _choose_offer(v, doc)
                if vo and vo.get("price") is not None:
                    offer = vo
                    break
        if offer:
            price, currency = doc.price(offer.get("price"), offer.get("currency"))
            if price is None:
                price, currency = doc.price(offer.get("low"), offer.get("currency"))
            regular, _ = doc.price(offer.get("regular"), offer.get("currency"))
        avails = [normalize_availability(o.get("availability")) for o in main.offers]
        for v in main.variants:
            avails.extend(normalize_availability(o.get("availability")) for o in v.offers)
        avails = [a for a in avails if a]
        if avails:
            avail = next((a for a in avails if a.buyable), avails[0])
        f.update(name=main.name, sku=main.sku, gtin=main.gtin, mpn=main.mpn, brand=main.brand, image=main.image)
        try:
            f["rating"] = Decimal(str(main.rating)) if main.rating not in (None, "") else None
        except Exception:
            f["rating"] = None
        try:
            f["review_count"] = int(str(main.review_count).replace(",", "")) if main.review_count not in (None, "") else None
        except ValueError:
            f["review_count"] = None
        # fill gaps from the other records describing the same product
        for r in records:
            if r is main:
                continue
            if _name_match(r.name, main.name) >= 0.6 or r.source == "meta":
                for k in ("sku", "gtin", "mpn", "brand", "image", "name"):
                    if not f.get(k) and getattr(r, k):
                        f[k] = getattr(r, k)

    cands = visible_prices(doc)
    best = max((c for c in cands if not c.strike), key=lambda c: c.score, default=None)
    strikes = [c for c in cands if c.strike and c.score > 0]
    if price is None:
        if best is not None and best.score >= 3:
            price, currency = best.amount, best.currency or currency
    else:
        seen = {c.amount for c in cands if not c.strike and c.score > 0}
        if best is not None and best.score >= 4 and price not in seen and best.amount < price:
            if any(c.amount == price for c in strikes):
                regular, price = price, best.amount
    if regular is None and price is not None:
        near = [c for c in strikes if c.amount > price]
        if near:
            regular = max(near, key=lambda c: c.score).amount
    if regular is not None and price is not None and regular <= price:
        regular = None
    if currency is None:
        currency = currency_for_country(doc.country) if price is not None else None

    # sku fallbacks
    if not f.get("sku"):
        f["sku"] = _sku_from_url(doc.url)

    # availability from visible text near the buy box
    if avail is None:
        avail = _visible_availability(doc)

    promotions, coupon, ends, shipping = _promotions(doc)
    if not f.get("name"):
        f["name"] = doc.h1 or meta.get("og:title")

    product = Product(
        name=f.get("name"), price=price, regular_price=regular, currency=currency, availability=avail,
        sku=f.get("sku"), gtin=f.get("gtin"), mpn=f.get("mpn"), brand=f.get("brand"), promotions=promotions,
        coupon=coupon, promotion_ends=ends, shipping=shipping, rating=f.get("rating"),
        review_count=f.get("review_count"), image=f.get("image"),
    )
    if selectors is not None and selectors.any():
        product = _apply_selectors(product, doc, selectors)
    return product


_AVAIL_SEL = (
    "[class*=stock], [class*=Stock], [id*=stock], [class*=availability], [class*=Availability], [id*=availability], "
    "[class*=avail], [itemprop=availability], [class*=sold-out], [class*=soldout], [class*=out-of-stock], "
    "[class*=unavailable], [class*=inventory], [class*=disponib], [class*=verfueg], [class*=lager], "
    "[class*=agotado], [class*=esgotado], [class*=nalich]"
)


def _visible_availability(doc: Doc) -> Availability | None:
    for node in doc.tree.css(_AVAIL_SEL):
        if node.tag in ("option", "select", "script", "style", "li"):
            continue
        text = node.text(deep=True)
        if not text or len(text) > 200:
            continue
        bad, _ = _context(node, 8)
        if bad:
            continue
        a = availability_from_text(text)
        if a is not None:
            return a
    return None


_BADGE_SEL = (
    "[class*=badge], [class*=Badge], [class*=discount], [class*=Discount], [class*=promo], [class*=Promo], "
    "[class*=label], [class*=flag], [class*=sticker], [class*=tag], [class*=saving], [class*=sale], "
    "[class*=coupon], [class*=voucher], [class*=shipping], [class*=delivery]"
)


def _promotions(doc: Doc) -> tuple[tuple[str, ...], str | None, str | None, Decimal | None]:
    badges: list[str] = []
    coupon = ends = None
    shipping = None
    for node in doc.tree.css(_BADGE_SEL):
        if node.tag in ("script", "style", "body", "html", "meta", "link"):
            continue
        text = node.text(deep=True)
        if not text or len(text) > 300:
            continue
        t = normalize_badge(text)
        if not t:
            continue
        bad, _ = _context(node, 8)
        cls = _node_classes(node).lower()
        if is_badge_text(t) and not bad and t not in badges and len(badges) < 8:
            badges.append(t)
        if "coupon" in cls or "voucher" in cls or "promo" in cls:
            coupon = coupon or find_coupon(t)
        if ends is None and ("promo" in cls or "sale" in cls or "countdown" in cls or "deal" in cls):
            ends = find_sale_end(t)
        if shipping is None and is_free_shipping(t) and not bad:
            shipping = Decimal(0)
    return tuple(badges), coupon, ends, shipping


# --------------------------------------------------------------------------------------------------
# configured selectors

def _select_texts(doc: Doc, css: str) -> list[str]:
    try:
        nodes = doc.tree.css(css)
    except Exception:  # invalid selector
        return []
    out = []
    for n in nodes:
        a = n.attributes
        t = a.get("content") if n.tag == "meta" else None
        t = t or _ws(n.text(deep=True)) or a.get("content") or a.get("value")
        if t:
            out.append(t)
    return out


def _apply_selectors(product: Product, doc: Doc, sel: Selectors) -> Product:
    from dataclasses import replace
    changes: dict[str, Any] = {}
    if sel.price:
        texts = _select_texts(doc, sel.price)
        amount = cur = None
        if texts:
            amount, cur = parse_price(texts[0], decimal_hint=doc.decimal_hint, country=doc.country)
        changes["price"] = amount
        if cur:
            changes["currency"] = cur
        elif amount is None:
            changes["currency"] = None
    if sel.regular_price:
        texts = _select_texts(doc, sel.regular_price)
        amount = None
        if texts:
            amount, _ = parse_price(texts[0], decimal_hint=doc.decimal_hint, country=doc.country)
        changes["regular_price"] = amount
    if sel.promotion:
        changes["promotions"] = tuple(dict.fromkeys(normalize_badge(t) for t in _select_texts(doc, sel.promotion)))
    if sel.availability:
        texts = _select_texts(doc, sel.availability)
        a = None
        if texts:
            a = normalize_availability(texts[0]) or availability_from_text(" ".join(texts))
            if a is None:
                a = Availability.IN_STOCK  # the element is there and does not say "out of stock"
        changes["availability"] = a
    if sel.name:
        texts = _select_texts(doc, sel.name)
        changes["name"] = texts[0] if texts else None
    if sel.sku:
        texts = _select_texts(doc, sel.sku)
        sku = None
        if texts:
            m = re.search(r"[:#]\s*([A-Za-z0-9][\w./-]*)\s*$", texts[0])
            sku = m.group(1) if m else texts[0].strip()
        changes["sku"] = sku
    return replace(product, **changes)
