"""Zero-configuration product-page extraction: price, regular price, stock, SKU and promotions of the main
product on a page, from structured data reconciled with what the page visibly shows.

Entry point: `extract_product(html, url, selectors=None) -> Product`. Pure, never raises.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from selectolax.lexbor import LexborHTMLParser

from .availability import BACK_IN_STOCK_ALERT_RE, availability_from_text, normalize_availability, states_out_of_stock
from .fast_re import ends_with as _ends_with, guarded
from .prices import (_iso_codes, country_for, currency_for_country, currency_from_symbol, decimal_hint_for,
                     parse_machine_amount, parse_price)
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
    h1_ancestors: set[int] = field(default_factory=set)
    h1_node: Any = None
    h1_nodes: list = field(default_factory=list)  # every <h1> of the page
    pos: dict[int, int] = field(default_factory=dict)  # element -> document position (set by _raw_candidates)
    first_after_h1: int | None = None  # position of the first price-like element after the heading
    ctx_cache: dict[int, tuple[bool, bool]] = field(default_factory=dict)
    word_tests: dict[tuple, Any] = field(default_factory=dict)  # see `_words_around`, `_struck_by_words`
    disabled_buy: bool = False  # a disabled add-to-cart button for the main product (set by _buy_button)
    _raw_text: str | None = None
    _text: str | None = None
    _raw: tuple | None = None  # `_raw_candidates` of this page, computed once
    body_tags: set[int] | None = None  # tag ids of the elements of <body> (set by `_scan`)
    _class_id_text: str | None = None

    def class_id_text(self) -> str:
        """The class and id values of the page's elements, one per line (read once, before any rule
        changes the tree): what the `[class*=word]` / `[id*=word]` selectors of a `_Query` can match."""
        if self._class_id_text is None:
            values = set()  # (elements repeat their classes: each distinct value once)
            for n in self.tree.css("[class], [id]"):
                a = n.attributes
                c, i = a.get("class"), a.get("id")
                if c is None and i is None:
                    # valueless, or matched under another spelling of the name: all its values, to be safe
                    values.update(v for v in a.values() if v)
                else:
                    if c:
                        values.add(c)
                    if i:
                        values.add(i)
            self._class_id_text = "\n".join(values)
        return self._class_id_text

    def raw_visible_text(self) -> str:
        """Text of the page body without scripts and styles, its white space as the page has it (computed
        once; strips those nodes from the tree)."""
        if self._raw_text is None:
            body = self.tree.body
            if body is None:
                self._raw_text = ""
            else:
                # (no query when the body walk saw none of these elements)
                if self.body_tags is None or not self.body_tags.isdisjoint(_STRIPPED_TAGS):
                    for n in body.css("script, style, noscript, template, svg"):
                        n.decompose()
                self._raw = None  # read from the tree before: some of its nodes are gone
                self._raw_text = body.text(separator=" ")
        return self._raw_text

    def visible_text(self) -> str:
        """`raw_visible_text` with white space collapsed (computed once, when a rule needs it: on a big page
        the collapsing costs more than the rest of the extraction)."""
        if self._text is None:
            self._text = _ws(self.raw_visible_text())
        return self._text

    def shows_text(self, s: str) -> bool:
        """`s in self.visible_text()`, without collapsing the page's white space when `s` has none (a string
        without white space is inside one run of non-space characters, which the collapsing keeps as is)."""
        if s and s.split() == [s]:
            return s in self.raw_visible_text()
        return s in self.visible_text()

    def price(self, value: Any, currency_hint: str | None = None) -> tuple[Decimal | None, str | None]:
        """Parse a structured or visible price value in this page's locale."""
        if value is None or isinstance(value, bool):
            return None, None
        cur = None
        if currency_hint:
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


_NAVISH = re.compile(r"nav|menu|sidebar|category|breadcrumb|modal|popup|dialog", re.I)


def parse_document(html: str | bytes, url: str) -> Doc:
    text = _decode(html)
    if len(text) > MAX_BYTES:
        text = text[:MAX_BYTES]
    tree = LexborHTMLParser(text)
    root = tree.root  # the <html> element: what tree.css_first("html") finds first
    if root is not None and root.tag != "html":
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
    # the first <title>, the headings and the first og:title meta, in one query (each query costs lexbor
    # a pass over the page)
    t = og = None
    for n in tree.css('title, h1, meta[property="og:title"]'):
        tag = n.tag
        if tag == "h1":
            doc.h1_nodes.append(n)
        elif tag == "title":
            t = t or n
        else:
            og = og or n
    if t is not None:
        doc.title = _ws(t.text(deep=True)) or None
    h1_nodes = doc.h1_nodes[:10]
    h1_texts = [_ws(h.text(deep=True)) for h in h1_nodes]
    h1s = [h for h in h1_texts if h]
    if h1s:
        ref = doc.title
        if og is not None and og.attributes.get("content"):
            ref = og.attributes["content"]
        doc.h1 = max(h1s, key=lambda h: (_name_match(h, ref) >= 0.5, -h1s.index(h))) if ref else h1s[0]
        if not ref or _name_match(doc.h1, ref) < 0.5:
            # no heading matches the title: the first one outside navigation / side bars
            def navish(h) -> bool:
                p, i = h, 0
                while p is not None and i < 6:
                    if p.tag in ("nav", "aside", "header") or _NAVISH.search(_node_classes(p)):
                        return True
                    p, i = p.parent, i + 1
                return False
            main_h1 = [t for h, t in zip(h1_nodes, h1_texts) if t and not navish(h)]
            if main_h1:
                doc.h1 = main_h1[0]
        for h, t in zip(h1_nodes, h1_texts):
            if t == doc.h1:
                doc.h1_node = h
                p = h.parent
                while p is not None:
                    doc.h1_ancestors.add(p.mem_id)
                    p = p.parent
                break
    return doc


def _ws(s: str | None) -> str:
    return " ".join(s.split()) if s else ""


# --------------------------------------------------------------------------------------------------
# main product among structured records

_WORD = re.compile(r"\w{2,}")


def _norm_words(s: str | None) -> set[str]:
    return set(_WORD.findall(s.lower())) if s else set()


@lru_cache(maxsize=4096)
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

def _tag_ids() -> tuple[int, int]:
    text = LexborHTMLParser("<p>x<!---->").css_first("p").child
    assert text.tag == "-text" and text.next.tag == "-comment"
    return text.tag_id, text.next.tag_id


_TEXT_NODE, _COMMENT_NODE = _tag_ids()  # lexbor's tag ids of text and comment nodes


def _element_tag_ids(*names: str) -> dict[str, int]:
    root = LexborHTMLParser("".join(f"<{t}></{t}>" for t in names)).root
    ids = {n.tag: n.tag_id for n in root.traverse() if n.tag in names}
    assert len(ids) == len(names)
    return ids


# elements the parser never leaves in <head> (it closes the head at their start tag)
_BODY_ONLY_TAGS = _element_tag_ids("del", "s", "strike", "button", "input")
# what `Doc.raw_visible_text` strips from the body
_STRIPPED_TAGS = frozenset(_element_tag_ids("script", "style", "noscript", "template", "svg").values())


_WORD_SELECTOR = re.compile(r"\[(?:class|id)\*=([\w-]+)\]")
_TAG_OF_SELECTOR = re.compile(r"[a-z][a-z0-9]*(?![\w-])")


class _Query:
    """A list of CSS selectors, run on a page without those of its selectors that cannot match there:
    a `[class*=word]` / `[id*=word]` whose word no class or id of the page holds (`Doc.class_id_text`),
    a `del` / `button` / `input[type=submit]`... whose tag no element of the body has (`Doc.body_tags`,
    once known; the parser never leaves those elements in the head).

    lexbor tries every selector of a list on every element, so each one costs about a pass over the page,
    and a page uses few of a list's words. The answer is the whole list's: a selector that matches no
    element adds nothing to it, and the elements the others match keep their document order and their
    number (an element is listed once per selector of the list it matches)."""

    def __init__(self, css: str):
        self.css = css
        # (selector, word of a `[class*=word]` / `[id*=word]`, tag id of a body-only tag it requires)
        self.parts: list[tuple[str, str | None, int | None]] = []
        for sel in css.split(","):
            sel = sel.strip()
            m = _WORD_SELECTOR.fullmatch(sel)
            t = _TAG_OF_SELECTOR.match(sel)
            tag = _BODY_ONLY_TAGS.get(t.group(0)) if t else None
            self.parts.append((sel, m.group(1) if m else None, tag))

    def run(self, doc: Doc) -> list:
        """`doc.tree.css(self.css)`."""
        values, tags = doc.class_id_text(), doc.body_tags
        kept = [sel for sel, word, tag in self.parts
                if (word is None or word in values) and (tag is None or tags is None or tag in tags)]
        return doc.tree.css(", ".join(kept)) if kept else []


_PRICE_SEL = (
    "[class*=price], [class*=Price], [class*=PRICE], [id*=price], [id*=Price], [itemprop=price], "
    "[data-price], [class*=cena], [class*=preis], [class*=Preis], [class*=prix], [class*=precio], [class*=preco], "
    "[class*=prezzo], [class*=amount], [class*=Amount], del, s, strike"
)
_PRICE_QUERY = _Query(_PRICE_SEL)
_BAD_CONTEXT = re.compile(
    r"related|recommend|similar|carousel|slider|swiper|upsell|up-sell|cross-?sell|also|recent|viewed|footer|"
    r"navbar|mini-?cart|basket|bundle|accessor|review|sponsor|compare-list|suggest|other-?products|"
    r"product-?list|product-?grid|teaser|promo-?bar|shipping|delivery|installment|"
    r"financ|cuota|parcel|monthly|klarna|afterpay|more-?from|you-?may|bought|frequently|recomend|"
    r"complementary|cross|alternative",
    re.I,
)
# class words that mark a regular / list / strike-through price (matched on word starts, camelCase split)
_STRIKE_CLASS = re.compile(
    r"(?:(?<![a-z])|(?<=price))(?:old|was|regular|before|original|list|strike|crossed|rrp|uvp|msrp|compare|prev|former|"
    r"initial|retail|reference|barred|line-?through|nonsale|non-sale|full|standard|antes|vorher|streich|"
    r"ancien|barre|dashed|anterior|crossout|cross-out|lineprice|oldprice|price-?from|pvp|srp|base-?price|"
    r"high-?price|without-?discount|no-?discount|statt|unvat|tachado)",
    re.I,
)
_CURRENT_CLASS = re.compile(
    r"(?:(?<![a-z])|(?<=price))(?:sale|special|final|current|now|actual|promo|offer|discount|reduced|selling|our|deal|new|"
    r"main|big|large|primary|highlight|product-?price|price-?value|value|amount|buy|best|club|member)",
    re.I,
)
_TEXT_PENALTY = re.compile(
    r"shipping|delivery|envío|envio|frete|versand|livraison|spedizione|dostawa|доставка|month|/mo\b|mes\b|"
    r"monat|mois|mese|x de|\d+\s?x\s|cuotas|parcela|installment|save|ahorra|économ|risparmi|spare|"
    r"%|points|punkte|puntos|reviews?|bewertung|avis|opiniones|valoraciones|per\s|/\s?(?:kg|l|m|ml|g|100)\b|"
    r"\bdesde\b|\bfrom\b|\bab\b|\bà partir|\bmin\.|\bmax\.|\bstart(?:ing)?\b|\bopening bid|\bestimate",
    re.I,
)
_STRIKE_TEXT = re.compile(
    r"^(?:was|before|antes|vorher|statt|uvp|rrp|list price|regular price|precio anterior|prix barré|"
    r"de|era|prima|originally|valor anterior|preço antigo|原價|原价|定価|정가)\b[:\s]",
    re.I,
)
_STRIKE_BEFORE = re.compile(
    r"(?:\bwas|before|antes|vorher|statt|uvp|rrp|list price|list|regular price|regular|reg\.|precio anterior|"
    r"prix barré|prix initial|originally|original price|valor anterior|de|era|prima|typical price|msrp|"
    r"preço antigo|alter preis|streichpreis|pvp|原價|原价|定価|정가)\s?[:]?\s?$",
    re.I,
)
_HAS_DIGIT = re.compile(r"\d")
_NUMBERS = re.compile(r"\d[\d.,'\u00a0 ]*\d|\d")
_CURRENCY_MARK = re.compile(
    r"[$€£¥₹₽₴₺₪₩₫฿₱₦₨]|\b(?:[A-Z]{3}|zł|kč|lei|kn|ft|kr|rs\.?|r\$|лв|руб|грн|б\.р\.|ر\.س|원)\b|원|ر\.س|zł|Kč|円|元",
    re.I,
)
_RANGE = re.compile(r"\d\s*(?:[-–—~]|to|bis|à|a|до)\s*\D{0,5}\d")
_CAMEL = re.compile(r"([a-z])([A-Z])")


@dataclass
class Candidate:
    amount: Decimal
    currency: str | None
    text: str
    score: float
    strike: bool
    order: int
    bad: bool = False
    multi: bool = False  # a block holding several amounts: says only that they are on the page


def _node_classes(node) -> str:
    return _classes_of(node.attributes)


_CLASS_ATTRS = ("class", "id", "itemprop", "data-testid", "data-test", "data-qa", "data-automation")


def _classes_of(a: dict) -> str:
    """`_node_classes` from the element's attributes."""
    if not a:
        return ""
    if len(a) == 1:  # most often a class alone: that class
        c = a.get("class")
        if c is not None or "class" in a:
            return c or ""
    return " ".join(filter(None, map(a.get, _CLASS_ATTRS)))


def _split_camel(cls: str) -> str:
    return _CAMEL.sub(r"\1-\2", cls)


_SC_CACHE: dict[str, int] = {}


def _strike_or_current(cls: str) -> int:
    """+1 if the class words mark a current price, -1 a regular / old one, 0 neither."""
    if not cls:
        return 0
    hit = _SC_CACHE.get(cls)
    if hit is None:
        if len(_SC_CACHE) > 20000:
            _SC_CACHE.clear()
        hit = _SC_CACHE[cls] = _strike_or_current_uncached(cls)
    return hit


def _strike_or_current_uncached(cls: str) -> int:
    c = _split_camel(cls)
    strike = _STRIKE_CLASS.search(c)
    current = _CURRENT_CLASS.search(c)
    if strike and not current:
        return -1
    if current and not strike:
        return 1
    if strike and current:
        # "old-price-value" vs "price-special": the more specific word wins
        return -1 if re.search(r"(?<![a-z])(?:old|was|strike|crossed|regular|list|before|rrp|uvp|msrp|compare|original)",
                               c, re.I) else 1
    return 0


# screen-reader-only text (sr-only, visually-hidden, offscreen) is not hidden: it is the price as spoken,
# usually the cleanest copy of a price drawn with split / raised digits
_HIDDEN_CLASS = re.compile(r"(?<![a-z])(?:hidden|d-none|is-hidden|invisible|hide)(?![a-z])", re.I)


_CLASS_FLAGS: dict[tuple, tuple[bool, bool]] = {}


def _own_flags(p, main: set[int] | None) -> tuple[bool, bool]:
    tag = p.tag
    if tag in ("body", "html"):
        return False, False
    a = p.attributes
    bad = hidden = False
    cls = _classes_of(a)
    if cls:
        c = a.get("class")
        key = (cls, c)
        words = _CLASS_FLAGS.get(key)
        if words is None:
            if len(_CLASS_FLAGS) > 20000:
                _CLASS_FLAGS.clear()
            words = _CLASS_FLAGS[key] = (bool(_BAD_CONTEXT.search(cls)), bool(c and _HIDDEN_CLASS.search(c)))
        if words[0] and not (main and p.mem_id in main):
            bad = True
        if words[1]:
            hidden = True
    st = a.get("style")
    if st and "none" in st and "display:none" in st.replace(" ", "").lower():
        hidden = True
    if "hidden" in a:
        hidden = True
    if tag in ("footer", "nav", "aside"):
        bad = True
    return bad, hidden


def _ancestor_flags(node, main: set[int] | None, cache: dict[int, tuple[bool, bool]]) -> tuple[bool, bool]:
    """(bad, hidden) for `node` and all its ancestors, memoised per node."""
    chain = []
    p = node
    result = (False, False)
    while p is not None:
        hit = cache.get(p.mem_id)
        if hit is not None:
            result = hit
            break
        chain.append(p)
        if p.tag in ("body", "html"):
            break
        p = p.parent
    for n in reversed(chain):
        b, h = _own_flags(n, main)
        result = (result[0] or b, result[1] or h)
        cache[n.mem_id] = result
    return result


def _strike_context(node) -> bool:
    """Inside a strike-through (up to three ancestors: <del>, line-through, data-*strike*, class words)."""
    p = node.parent
    i = 0
    while p is not None and i < 3:
        tag = p.tag
        if tag in ("body", "html"):
            break
        if tag in ("del", "s", "strike"):
            return True
        a = p.attributes
        st = a.get("style")
        if st and "line-through" in st:
            return True
        for k in a:
            if "strike" in k and k.startswith("data-") and a[k] not in ("false", "0"):
                return True  # data-strike="true", data-a-strike="true"
        cls = _classes_of(a)
        if cls:
            sc = _strike_or_current(cls)
            if sc:
                return sc < 0
        p = p.parent
        i += 1
    return False


def _placement(doc: Doc, node) -> tuple[bool, bool]:
    """(inside an unrelated block, hidden).

    Ancestors of the product title never count as unrelated blocks: a carousel or 'related' wrapper that
    also holds the title is the product's own."""
    if node.parent is None:
        return False, False
    return _ancestor_flags(node.parent, doc.h1_ancestors, doc.ctx_cache)


# currency marks strict enough to find prices in any text node (ISO codes only in upper case)
_STRICT_CURRENCY = re.compile(
    r"[$€£¥₹₽₴₺₪₩₫฿₱₦₨₸₾₡₲₭৳円元원]|(?<![A-Za-z])(?:[A-Z]{3}|[Ee]uros?|zł|Zł|Kč|kč|lei|Lei|LEI|kn|Kn|Ft|kr|Kr|kr\.|Rs\.?|"
    r"TL|RM|Rp|лв|руб|грн|б\.р\.|Br|din|ден)(?![A-Za-z])|ر\.س|د\.إ|ر\.ق|د\.ك|ج\.م|ש\"ח"
)
# words right before / after an amount that make it something else than the product's price
_BEFORE_PENALTY = re.compile(
    r"(?:\d\s?[x×]\s?(?:de\s)?|\b(?:payments?|instal+ments?|cuotas?|parcelas?|rate|raten|mensualit[ée]s?|"
    r"vezes|meses)\s(?:of|de|à|à partir de|von|da|di)?\s?|\b(?:over|above|orders?|spend|über|ab|dès|desde|"
    r"más de|mas de|acima de|oltre|from|à partir de|a partir de|od|от|min(?:imum)?\.?|save|you save|"
    r"ahorra|ahorras|sie sparen|économisez|risparmi|economize|economia de|spare|saving|savings)\s?[:]?\s?)$",
    re.I,
)
_AFTER_PENALTY = re.compile(
    r"^\s?(?:/\s?|per\s|pro\s|par\s|por\s|je\s|le\s)\s?(?:\d+\s?)?(?:kg|g|gr|l|ml|cl|m|m²|m2|m³|lb|oz|"
    r"unit|stk|st|pc|pcs|piece|tk|ud|un|uds|mo|month|mes|monat|mois|mese|mês|week|wk)\b|"
    r"^\s?(?:a month|per month|al mes|pro monat|par mois|al mese|por mês|mensual|monthly|x\s?\d+|"
    r"or more|und mehr|et plus|o más|ou mais|free shipping|versandkostenfrei)",
    re.I,
)
_SHIPPING_WORDS = re.compile(
    r"shipping|delivery|envío|envio|frete|versand|livraison|spedizione|dostawa|доставка|verzending|consegna",
    re.I,
)
_SR_ONLY = re.compile(r"(?<![a-z])(?:sr-only|visually-?hidden|offscreen|screen-?reader|a11y|assistive)", re.I)

# Fast forms of the tests that run on every candidate, each giving exactly the answer of the pattern's own
# search (tests/scrapers/test_product_fast_paths.py):
# - a pattern anchored at the end ($) is matched once, backwards (`fast_re.ends_with`);
# - alternations are preceded by a look-ahead of the characters they can start with (`fast_re.guarded`);
# - a pattern whose every match holds a letter, "%" or "/" is not searched for in text without any
#   ("$89.19").
_SHIPPING_WORDS_SEARCH = guarded(_SHIPPING_WORDS).search
_STRIKE_BEFORE_END = _ends_with(_STRIKE_BEFORE)
_BEFORE_PENALTY_END = _ends_with(_BEFORE_PENALTY)
# every match of _TEXT_PENALTY holds a letter, "%" or "/"
_TEXT_PENALTY_HINT = re.compile(r"[^\W\d_]|[%/]")
_TEXT_PENALTY_SEARCH = guarded(_TEXT_PENALTY).search


def _text_penalty(text: str) -> bool:
    return _TEXT_PENALTY_HINT.search(text) is not None and _TEXT_PENALTY_SEARCH(text) is not None


_SR_CACHE: dict[str, bool] = {}


def _sr_only(cls: str) -> bool:
    """Screen-reader-only class words (cached per class string)."""
    hit = _SR_CACHE.get(cls)
    if hit is None:
        if len(_SR_CACHE) > 20000:
            _SR_CACHE.clear()
        hit = _SR_CACHE[cls] = _SR_ONLY.search(_split_camel(cls)) is not None
    return hit
_RAISED_CENTS_SEL = "sup, [class*=fraction], [class*=Fraction], [class*=cents], [class*=Cents], [class*=decimal]"


# the one-character marks of _STRICT_CURRENCY: no other mark it matches holds one, so each is matched
_CURRENCY_SYMBOLS = frozenset("$€£¥₹₽₴₺₪₩₫฿₱₦₨₸₾₡₲₭৳円元원")


def _has_currency(text: str) -> bool:
    """A currency symbol, a local currency word or a real ISO 4217 code ("EAN", "SKU" are not)."""
    if not _CURRENCY_SYMBOLS.isdisjoint(text):
        return True
    for m in _STRICT_CURRENCY.finditer(text):
        g = m.group(0)
        if len(g) != 3 or not g.isupper() or g in _iso_codes():
            return True
    return False


def _scan(doc: Doc) -> tuple[dict[int, int], list]:
    """One walk over the body: document position (count of non-blank text nodes before it) of every
    element, and the short text nodes (up to 60 characters) that may hold a price, with their position;
    the tags of its elements go to `doc.body_tags`."""
    pos: dict[int, int] = {}
    short = []
    body = doc.tree.body
    if body is None:
        return pos, short
    tags: set[int] = set()
    i = 0
    # text nodes of ASCII white space only are blank: skipped by the walk itself. (The node kinds are told
    # by `tag_id`, the number `tag` reads its "-text" / "-comment" name from, without making that name.)
    for n in body.traverse(include_text=True, skip_empty=True):
        kind = n.tag_id
        if kind == _TEXT_NODE:
            t = n.text_content
            if t and not t.isspace():
                i += 1
                if len(t) <= 60:
                    short.append((n, i, t))
        elif kind != _COMMENT_NODE:
            pos[n.mem_id] = i
            tags.add(kind)
    if body.tag == "body":
        doc.body_tags = tags
    return pos, short


_MARKED: dict[str, bool] = {}


def _currency_marked(t: str) -> bool:
    """A short text node that holds a currency mark: a price whose element's class names say nothing.
    (Cached per text: shops repeat their menus, buttons and labels on every page.)"""
    hit = _MARKED.get(t)
    if hit is None:
        if len(_MARKED) > 20000:
            _MARKED.clear()
        hit = _MARKED[t] = bool((len(t) <= 8 or _HAS_DIGIT.search(t)) and _STRICT_CURRENCY.search(t)
                                and _has_currency(t))
    return hit


_TWO_DIGITS = re.compile(r"\d\d")


def _price_text(node, text: str, doc: Doc) -> str:
    """`text` of a price element, with cents drawn in their own trailing element (<sup>, a 'fraction' /
    'cents' span...) read as decimals: "173<sup>34</sup> Lei" -> "173.34 Lei", "$229<span>99</span>" -> "$229.99"."""
    child = node.child
    if child is None or (child.tag_id == _TEXT_NODE and child.next is None) or not _TWO_DIGITS.search(text):
        return text  # (one text node inside: no element to hold cents)
    cents = None
    for n in node.traverse(include_text=False):
        if n is node or n.mem_id == node.mem_id:
            continue
        t = n.text(deep=True)
        if t and len(t) <= 3:
            t = t.strip()
            if len(t) == 2 and t.isdigit():
                cents = t
    if cents is None:
        return text
    mark = "," if doc.decimal_hint == "," else "."
    return re.sub(r"(\d)" + cents + r"(?!\d)", r"\g<1>" + mark + cents, text, count=1)


def _surroundings(node, text: str) -> tuple[str, str]:
    """Short text just before / after the price inside its nearest wrapper that holds more than the price."""
    p = node.parent
    for _ in range(2):
        if p is None or p.tag in ("body", "html"):
            return "", ""
        t = p.text(deep=True)
        if not t or len(t) > 400:
            return "", ""
        t = _ws(t)
        if t != text:
            i = t.find(text)
            if i < 0:
                return "", ""
            return t[max(0, i - 40):i], t[i + len(text):i + len(text) + 30]
        p = p.parent
    return "", ""


def _in_option(node) -> bool:
    """Inside a (non-buy) button, label or option-like widget."""
    p, i = node.parent, 0
    while p is not None and i < 5:
        tag = p.tag
        if tag in ("button", "label", "option", "select"):
            return True
        if tag in ("body", "html"):
            return False
        role = p.attributes.get("role")
        if role in ("button", "radio", "option", "tab", "menuitemradio"):
            return True
        p, i = p.parent, i + 1
    return False


def _visible_price_nodes(doc: Doc) -> tuple[list, dict[int, int]]:
    pos, short = _scan(doc)
    nodes = _PRICE_QUERY.run(doc)
    seen = {n.mem_id for n in nodes}
    seen.update(h.mem_id for h in doc.h1_nodes)  # a heading is not read as a price element either
    extra = []
    h1_pos = pos.get(doc.h1_node.mem_id) if doc.h1_node is not None else None
    if h1_pos is not None:
        # prices found only by their currency mark: those around the product title (its buy box)
        lo, hi = h1_pos - NEAR_BEFORE - 5, h1_pos + 2 * NEAR_AFTER
        marked = []
        for n, i, t in short:
            if i > hi:
                break  # (positions grow along `short`)
            if i >= lo:
                hit = _MARKED.get(t)  # (`_currency_marked`'s cache, read here: most texts are in it)
                if hit is None:
                    hit = _currency_marked(t)
                if hit:
                    marked.append((n, t))
    else:
        marked = []
        for n, _, t in short:
            if _currency_marked(t):
                marked.append((n, t))
                if len(marked) == 40:
                    break
    for t, txt in marked:
        el = t.parent
        if el is not None and el.mem_id in seen and _HAS_DIGIT.search(txt):
            continue  # the walk below would stop at the parent (or nowhere): a node already in `nodes`
        for _ in range(3):
            if el is None or el.tag in ("body", "html", "script", "style", "noscript", "template", "title"):
                el = None
                break
            txt = el.text(deep=True) or ""
            if len(txt) > 80:
                el = None
                break
            if _HAS_DIGIT.search(txt):
                break
            el = el.parent
        else:
            el = None
        if el is not None and el.mem_id not in seen:
            seen.add(el.mem_id)
            extra.append(el)
    return list(nodes) + extra, pos


_SKIP_TAGS = frozenset(("script", "style", "meta", "link", "input", "option", "select", "noscript", "template",
                        "img", "body", "html", "form", "button", "a", "li", "ul", "table", "tr", "tbody", "title",
                        "head"))


@dataclass
class _Raw:
    """A price-like element before scoring: its text read as an amount, and where it is."""

    node: Any
    tag: str
    text: str
    amount: Decimal
    currency: str | None
    order: int
    index: int = 0  # rank in document order among all raw candidates
    around: tuple[str, str] | None = None  # `_surroundings` of the element (read once, by `_around`)
    attrs: dict | None = None  # the element's attributes (read once, by `_attrs`)


def _raw_candidates(doc: Doc) -> tuple[list[_Raw], tuple[int, int] | None]:
    """Every short element whose text reads as a positive amount, in document order; and the heading's
    (start, end) position when there is one. (Computed once per page: `confirming_prices` and
    `visible_prices` both start from it.)"""
    if doc._raw is None:
        doc._raw = _raw_candidates_of(doc)
    return doc._raw


def _raw_candidates_of(doc: Doc) -> tuple[list[_Raw], tuple[int, int] | None]:
    nodes, pos = _visible_price_nodes(doc)
    h1_pos = pos.get(doc.h1_node.mem_id) if doc.h1_node is not None else None
    anchor = None
    if h1_pos is not None and doc.h1_node is not None:
        anchor = (h1_pos, h1_pos + max(1, len((doc.h1_node.text(deep=True) or "").split()) // 8))
    raw: list[_Raw] = []
    hint, country = doc.decimal_hint, doc.country
    for node in nodes:
        tag = node.tag
        if tag == "h1":
            continue
        if tag in _SKIP_TAGS:
            if tag not in ("a", "li") or len(node.text(deep=True) or "") > 40:
                continue
        text = node.text(deep=True)
        if not text or len(text) > 200:
            continue
        text = _ws(text)
        if not text or len(text) > 60 or not _HAS_DIGIT.search(text):
            continue
        shown = _price_text(node, text, doc) if len(text) <= 30 else text
        amount, currency = parse_price(shown, decimal_hint=hint, country=country)
        if amount is None or amount <= 0:
            continue
        raw.append(_Raw(node, tag, text, amount, currency, pos.get(node.mem_id, 10 ** 6)))
    raw.sort(key=lambda r: r.order)
    for i, r in enumerate(raw):
        r.index = i
    doc.pos = pos
    doc.first_after_h1 = None
    if anchor is not None:
        doc.first_after_h1 = next((r.order for r in raw if r.order >= anchor[1]), None)
    return raw, anchor


# class words of a block that moves pictures or cards sideways: the product's own gallery as often as a
# strip of other products, unlike "related", "recommend", "also bought"
_GALLERY_WORDS = frozenset(("carousel", "slider", "swiper"))
_NOT_A_PRICE_NUMBER = re.compile(r"\d[\d.,'\u00a0 ]*\d\s?%|\d\s?%")


def _titles_own_gallery_price(doc: Doc, node) -> bool:
    """A price inside a carousel / slider block that is the product's, not a strip of other products: the
    block is the first thing priced after the heading, holds this price alone (with at most its struck regular
    price), and no ancestor has a word for other products ("related", "also bought") or is a footer / nav.
    A strip of other products shows several prices, and comes after the product's own price."""
    first = doc.first_after_h1
    if first is None:
        return False
    block = None
    p = node.parent
    while p is not None and p.tag not in ("body", "html"):
        if p.tag in ("footer", "nav", "aside"):
            return False
        if doc.h1_ancestors and p.mem_id in doc.h1_ancestors:
            break  # the heading's own containers are never unrelated blocks
        cls = _node_classes(p)
        if cls:
            words = {m.group(0).lower() for m in _BAD_CONTEXT.finditer(cls)}
            if words:
                if not words <= _GALLERY_WORDS:
                    return False
                block = p
        p = p.parent
    if block is None:
        return False
    start = doc.pos.get(block.mem_id)
    if start is None or start > first:
        return False  # another price comes between the heading and this block
    text = block.text(deep=True)
    if not text or len(text) > 400:
        return False
    text = _NOT_A_PRICE_NUMBER.sub(" ", text)  # "-50%" badges
    return len({n.strip(" .,'") for n in _NUMBERS.findall(text)}) <= 2


def _attrs(r: _Raw) -> dict:
    """The attributes of a raw candidate's element."""
    if r.attrs is None:
        r.attrs = r.node.attributes
    return r.attrs


def _around(r: _Raw) -> tuple[str, str]:
    """`_surroundings` of a raw candidate."""
    if r.around is None:
        r.around = _surroundings(r.node, r.text)
    return r.around


# The prices of one box (a price element and the span inside it) share the words around them: the tests of
# those words are made once per page and words (`Doc.word_tests`).

def _struck_by_words(doc: Doc, before: str) -> bool:
    """The words right before a price say it is the regular one ("was", "UVP", "antes")."""
    key = ("strike", before)
    hit = doc.word_tests.get(key)
    if hit is None:
        hit = doc.word_tests[key] = _STRIKE_BEFORE_END(before)
    return hit


def _words_around(doc: Doc, before: str, after: str) -> int:
    """Score for the words around a price: -3 when they make it something else than the product's price
    ("4 x 24,99 €", "2,49 € / kg", "Free shipping over 50 €", "You save $5"), -2 after a shipping word."""
    key = (before, after)
    hit = doc.word_tests.get(key)
    if hit is None:
        hit = 0
        if before or after:
            if _BEFORE_PENALTY_END(before) or _AFTER_PENALTY.search(after):
                hit = -3
            elif _SHIPPING_WORDS_SEARCH(before[-25:]):
                hit = -2
        doc.word_tests[key] = hit
    return hit


def _strike_of(doc: Doc, r: _Raw, sc: int, before: str) -> bool:
    """Whether a raw candidate is a struck-through / regular price (own tag, class, text, style, the words
    before it, else its close ancestors)."""
    strike = (r.tag in ("del", "s", "strike") or sc < 0 or bool(_STRIKE_TEXT.search(r.text))
              or "line-through" in (_attrs(r).get("style") or "")
              or bool(before and _struck_by_words(doc, before)))
    if not strike and sc == 0:
        strike = _strike_context(r.node)
    return strike


def _is_struck(doc: Doc, r: _Raw) -> bool:
    sc = _strike_or_current(_classes_of(_attrs(r)))
    before, _ = _around(r)
    return _strike_of(doc, r, sc, before)


def _candidate(doc: Doc, r: _Raw, anchor: tuple[int, int] | None) -> Candidate:
    """Score one raw candidate by how much it looks like the main price."""
    node, text = r.node, r.text
    attrs = _attrs(r)
    cls = _classes_of(attrs)
    score = 0.0
    low = cls.lower()
    if "price" in low or attrs.get("itemprop") == "price":
        score += 2
    elif any(w in low for w in ("preis", "prix", "precio", "preco", "prezzo", "cena", "amount")):
        score += 1.5
    if _has_currency(text):
        score += 1.5
    else:
        score -= 1
    sc = _strike_or_current(cls)
    if sc > 0:
        score += 0.5
    if _text_penalty(text):
        score -= 3
    nums = {n.strip(" .,'") for n in _NUMBERS.findall(text)}
    multi = False
    if len(nums) > 1:
        if len(nums) == 2 and _RANGE.search(text):
            score -= 0.5  # "502,20 – 558,00": a price range shows its low end
        else:
            score -= 5  # a block holding several prices is not itself a price
            multi = True
    before, after = _around(r)
    words = _words_around(doc, before, after)
    if words:
        score += words
    strike = _strike_of(doc, r, sc, before)
    bad = hidden = False
    if node.parent is not None:
        bad, hidden = _ancestor_flags(node.parent, doc.h1_ancestors, doc.ctx_cache)
    if bad and anchor is not None and doc.first_after_h1 is not None \
            and 0 <= r.order - doc.first_after_h1 <= 8 and _titles_own_gallery_price(doc, node):
        bad = False  # the product's own gallery / price slider right under its title
    if bad:
        score -= 4
    if hidden:
        score -= 2
    if _in_option(node):
        score -= 1.5  # delivery option, size / variant choice, "add 2 more" button
    if _sr_only(cls):
        score += 0.5  # the price as a screen reader speaks it: whole, clean text
    c = Candidate(r.amount, r.currency, text, score, strike, r.order, bad, multi)
    if anchor is not None:
        h1_pos, h1_end = anchor
        d = c.order - h1_end if c.order >= h1_end else c.order - h1_pos
        if 0 <= d <= NEAR_AFTER:
            c.score += 3 - d * (3 / NEAR_AFTER) * 0.6
        elif -NEAR_BEFORE <= d < 0:
            c.score += 2 + d * 0.1
        else:
            c.score -= min(abs(d), FAR_CAP) * FAR_RATE
    else:
        # no heading to anchor on: the first price-like elements of the page are the likeliest
        c.score += max(0.0, 2 - 0.1 * r.index)
    return c


def visible_prices(doc: Doc) -> list[Candidate]:
    """Every short element that looks like a price, scored by how much it looks like the main price."""
    raw, anchor = _raw_candidates(doc)
    return [_candidate(doc, r, anchor) for r in raw]


def confirming_prices(doc: Doc, price: Decimal) -> list[Candidate] | None:
    """Fast path when the markup gives `price`: only the visible candidates that can change what
    `_reconcile_price` decides about it, scored exactly as `visible_prices` scores them; None when the
    page needs the full rules (a struck-through copy of the markup price, or the price not shown).

    With no markup alternatives, a markup price that is shown (not struck) stays the price unless a
    struck copy of it competes with a lower price (-> None here), and the regular price can only come
    from a struck candidate above it. So: copies of the amount (and of amount x 100, raised cents),
    and struck candidates above it; lower and unstruck higher amounts cannot matter."""
    raw, anchor = _raw_candidates(doc)
    hundred = price * 100
    out: list[Candidate] = []
    for r in raw:
        amount = r.amount
        if amount == price or amount == hundred:
            c = _candidate(doc, r, anchor)
            if c.strike and amount == price:
                return None
            out.append(c)
        elif amount > price and _is_struck(doc, r):
            out.append(_candidate(doc, r, anchor))
    shown: set[Decimal] = set()
    for c in out:
        if not c.strike and c.score > 0 and not c.multi:
            shown.add(c.amount)
            if c.amount == c.amount.to_integral_value():
                shown.add(c.amount / 100)
    return out if price in shown else None


NEAR_AFTER, NEAR_BEFORE, FAR_CAP, FAR_RATE = 60, 20, 1000, 0.002


def _amount_forms(amount: Decimal) -> list[str]:
    """Ways a page may print `amount`: 1299.5 -> 1299.50, 1,299.50, 1.299,50, 1 299,50, 1299,50 ..."""
    q = amount.quantize(Decimal("0.01"))
    whole, frac = f"{q:f}".split(".")
    groups = f"{int(whole):,}"
    forms = []
    for g in (whole, groups, groups.replace(",", "."), groups.replace(",", " "), groups.replace(",", "\u00a0"),
              groups.replace(",", "'")):
        if frac != "00":
            forms.append(g + "." + frac)
            forms.append(g + "," + frac)
            forms.append(g + " " + frac)
        else:
            forms.extend([g + ".00", g + ",00", g + ",-", g])
    return list(dict.fromkeys(forms))


def amount_in_text(amount: Decimal, text: str) -> bool:
    for f in _amount_forms(amount):
        for m in re.finditer(re.escape(f), text):
            before = text[m.start() - 1] if m.start() else " "
            after = text[m.end()] if m.end() < len(text) else " "
            if not (before.isdigit() or before in ".,") and not (after.isdigit() or (after in ".," and
                                                                                       text[m.end() + 1:m.end() + 2].isdigit())):
                return True
    return False


# --------------------------------------------------------------------------------------------------
# identifiers

_SKU_LABEL = re.compile(
    r"(?=[SAIPRCKКАVTNE商상מק\u0631Ü]|sku|ref|art|cod|kod)(?:(?<![\w-])(?:SKU|Sku|sku)|Art(?:ikel)?\.?[\s-]?(?:Nr|nummer|no)\.?|Artikelnummer|Artikelnr\.?|"
    r"Item\s?(?:#|no\.?|number|code)|Product\s?(?:code|ID|no\.?|number|#)|Product Code|Stock\s?code|Style\s?(?:#|no\.?)|"
    r"R[ée]f(?:[ée]rence|erencia|erência)?\.?|C[óo]d(?:igo|\.)?(?:\s+(?:do\s+|del\s+)?(?:produto|producto|artículo|art\.))?|"
    r"Cod(?:\.|ice)?\s?(?:produs|articolo|prodotto)?|Codice|Kod(?:\s+(?:produktu|towaru))?|Kód(?:\s+produktu)?|Kood|"
    r"Код(?:\s+товара)?|Артикул|Varenummer|Varenr\.?|Artikelnr|Tuotenumero|Cikkszám|Katalógové číslo|"
    r"Numer katalogowy|Nr\s?(?:art|kat)\.?|Katalogové číslo|Produktové číslo|Produktnummer|Item ID|"
    r"商品編號|商品番号|商品编号|상품번호|מק\"ט|מקט|קוד מוצר|رقم المنتج|Ürün kodu|Stok kodu)"
    r"\s*[:#.\-–]?\s*(?:#\s*)?([A-Za-z0-9][A-Za-z0-9._/-]{2,30})",
)
_SKU_LABEL_FINDITER = guarded(_SKU_LABEL).finditer  # (`fast_re`: same matches)


def _clean_sku(value: str | None, name: str | None) -> str | None:
    """A usable SKU from a markup value: one token, has a digit or is code-like, not part of the name."""
    if not value:
        return None
    v = value.strip()
    if not v:
        return None
    if " " in v:
        tok = v.split()[0]
        if len(tok) >= 4 and any(c.isdigit() for c in tok):
            v = tok
        else:
            return None
    if len(v) > 40:
        return None
    if name and len(v) >= 4 and v.lower() in name.lower() and not v.isdigit():
        return None  # an MPN / model code written in the title
    return v


def _labelled_sku(text: str, name: str | None) -> str | None:
    for m in _SKU_LABEL_FINDITER(text):
        v = m.group(1).rstrip(".-/")
        if not any(c.isdigit() for c in v) or len(v) < 3:
            continue
        if name and v.lower() in name.lower():
            continue
        return v
    return None


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

    if not any(o.get("price") is not None or o.get("low") is not None for r in records for o in r.offers):
        # no price in the markup: embedded application state (__NEXT_DATA__, __INITIAL_STATE__...), used
        # only when its price is also visible on the page (checked in _reconcile_price via `alts`)
        ref = doc.h1 or meta.get("og:title") or doc.title
        state = [r for r in state_records(tree) if _name_match(r.name, ref) >= 0.6]
        if state:
            best_state = max(state, key=lambda r: _name_match(r.name, ref))
            best_state.source = "state"
            records.append(best_state)

    main: Record | None = None
    if records:
        scored = sorted(((_record_score(r, doc, i), i, r) for i, r in enumerate(records)), key=lambda x: (-x[0], x[1]))
        main = scored[0][2]
    same = [r for r in records if r is not main and main is not None
            and (r.source == "meta" or _name_match(r.name, main.name) >= 0.6)]

    f: dict[str, Any] = {}
    price = regular = None
    currency = None
    s_avail: Availability | None = None
    alt_prices: list[tuple[Decimal, str | None]] = []
    if main is not None:
        price, regular, currency = _record_price(main, doc)
        for r in same:
            p, _, c = _record_price(r, doc)
            if p is not None and p != price:
                alt_prices.append((p, c))
            if regular is None and price is not None:
                _, rg, _ = _record_price(r, doc)
                if rg is not None and rg > price:
                    regular = rg
        s_avail = _record_availability(main)
        if s_avail is None:
            for r in same:
                s_avail = _record_availability(r)
                if s_avail is not None:
                    break
        f.update(name=main.name, gtin=main.gtin, mpn=main.mpn, brand=main.brand, image=main.image)
        f["rating"] = _decimal_or_none(main.rating)
        try:
            f["review_count"] = int(str(main.review_count).replace(",", "")) if main.review_count not in (None, "") else None
        except ValueError:
            f["review_count"] = None
        for r in same:
            for k in ("gtin", "mpn", "brand", "image", "name"):
                if not f.get(k) and getattr(r, k):
                    f[k] = getattr(r, k)
    name = f.get("name") or doc.h1 or meta.get("og:title")

    # what the page shows
    cands = None
    if main is not None and main.source != "state" and price is not None and not alt_prices:
        cands = confirming_prices(doc, price)
    if cands is None:
        cands = visible_prices(doc)
    need_visible_stock = s_avail is None or not s_avail.buyable
    avail_v = _visible_availability(doc) if need_visible_stock else None
    buy = _buy_button(doc) if need_visible_stock else None
    promotions, coupon, ends, shipping = _promotions(doc)
    doc.raw_visible_text()  # strips scripts and styles from the tree here, as configured selectors expect

    if main is not None and main.source == "state" and price is not None \
            and not amount_in_text(price, doc.visible_text()):
        price = regular = None
    anchored = main is None or not main.name or not doc.h1 or _name_match(main.name, doc.h1) >= 0.5
    price, regular, currency = _reconcile_price(doc, price, regular, currency, alt_prices, cands, anchored)
    if price is not None and currency is None:
        currency = next((c.currency for c in cands if c.amount == price and c.currency), None) \
            or currency_for_country(doc.country)

    # SKU
    struct_sku = _clean_sku(main.sku, name) if main is not None else None
    if main is not None and not struct_sku:
        for o in main.offers:
            struct_sku = _clean_sku(o.get("sku"), name)
            if struct_sku:
                break
    if main is not None and not struct_sku:
        for r in same:
            struct_sku = _clean_sku(r.sku, name)
            if struct_sku:
                break
    mpn = f.get("mpn")
    labelled = None
    if not struct_sku or struct_sku == mpn or not doc.shows_text(struct_sku):
        text = doc.visible_text()
        start = text.find(doc.h1) if doc.h1 else -1
        window = text[max(0, start - 500):start + 30000] if start >= 0 else text[:60000]
        labelled = _labelled_sku(window, name)
    if struct_sku and labelled and labelled != struct_sku:
        sku = labelled
    else:
        sku = struct_sku
    if not sku and mpn and mpn in doc.url and not (name and mpn.lower() in name.lower()):
        sku = mpn
    if not sku:
        sku = _sku_from_url(doc.url) or labelled

    # availability: markup, unless the buy box plainly says otherwise
    avail = s_avail
    if avail is None:
        avail = avail_v
        if avail is None and buy is False:
            avail = Availability.OUT_OF_STOCK  # the buy button says "sold out" and none is enabled
    elif not avail.buyable:
        if buy and avail_v != Availability.OUT_OF_STOCK:
            avail = Availability.IN_STOCK
        elif avail_v is None and buy is None and not doc.disabled_buy \
                and _shown_as_current(price, cands) and not _stock_word_near_title(doc, doc.visible_text()):
            avail = None  # stale markup: the page shows the price and says nothing of the product being gone
    f["name"] = name

    product = Product(
        name=f.get("name"), price=price, regular_price=regular, currency=currency, availability=avail,
        sku=sku, gtin=f.get("gtin"), mpn=f.get("mpn"), brand=f.get("brand"), promotions=promotions,
        coupon=coupon, promotion_ends=ends, shipping=shipping, rating=f.get("rating"),
        review_count=f.get("review_count"), image=f.get("image"),
    )
    if selectors is not None and selectors.any():
        product = _apply_selectors(product, doc, selectors)
    return product


def _shown_as_current(price: Decimal | None, cands: list[Candidate]) -> bool:
    """The page shows `price` as the product's price: a plain (not struck) copy of it that scores as the
    main price does (price element or currency mark, by the title)."""
    if price is None:
        return False
    return any(c.amount == price and not c.strike and not c.multi and not c.bad and c.score >= 5 for c in cands)


_BACK_IN_STOCK_ALERT_SEARCH = guarded(BACK_IN_STOCK_ALERT_RE).search  # (`fast_re`: same answers)


def _stock_word_near_title(doc: Doc, text: str) -> bool:
    """Any word of the product being gone around the title: "out of stock", "sold out", "notify me when
    back in stock", in any language the stock rules know."""
    start = text.find(doc.h1) if doc.h1 else -1
    window = text[max(0, start - 1000):start + 10000] if start >= 0 else text  # no title: the whole page
    return states_out_of_stock(window) or bool(_BACK_IN_STOCK_ALERT_SEARCH(window))


def _decimal_or_none(v: Any) -> Decimal | None:
    if v in (None, "") or isinstance(v, bool):
        return None
    try:
        d = Decimal(str(v).replace(",", ".").strip())
    except Exception:
        return None
    return d if d.is_finite() else None


def _record_price(rec: Record, doc: Doc) -> tuple[Decimal | None, Decimal | None, str | None]:
    offer = _choose_offer(rec, doc)
    if rec.variants and (offer is None or offer.get("price") is None):
        for v in rec.variants:
            vo = _choose_offer(v, doc)
            if vo and vo.get("price") is not None:
                offer = vo
                break
    if not offer:
        return None, None, None
    price, currency = doc.price(offer.get("price"), offer.get("currency"))
    if price is None or price <= 0:
        price, currency = doc.price(offer.get("low"), offer.get("currency"))
    if price is not None and price <= 0:
        price = None
    regular, _ = doc.price(offer.get("regular"), offer.get("currency"))
    return price, regular, currency


def _record_availability(rec: Record) -> Availability | None:
    avails = [normalize_availability(o.get("availability")) for o in rec.offers]
    for v in rec.variants:
        avails.extend(normalize_availability(o.get("availability")) for o in v.offers)
    avails = [a for a in avails if a]
    if not avails:
        return None
    return next((a for a in avails if a.buyable), avails[0])


def _any_amounts(cands: list[Candidate]) -> set[Decimal]:
    """Every amount the candidates show, also read with its last two digits as raised cents."""
    return {c.amount for c in cands} | {(c.amount / 100) for c in cands}


def _reconcile_price(doc: Doc, price, regular, currency, alts, cands: list[Candidate], anchored: bool = True):
    """Markup price vs. what the buyer sees: the visible one wins when they disagree.

    `anchored`: the heading the visible prices are scored around names the markup's product (when it
    names another one, nearness to it says nothing about the markup price)."""
    shown = [c for c in cands if not c.strike and c.score > 0 and not c.multi]
    struck = [c for c in cands if c.strike and c.score > 0 and not c.multi]
    shown_amounts = {c.amount for c in shown}
    # "173<sup>34</sup>" reads as 17334: accept the markup price written with its cents raised
    shown_amounts |= {(c.amount / 100) for c in shown if c.amount == c.amount.to_integral_value()}
    best = max(shown, key=lambda c: c.score, default=None)

    def support(amount) -> float:
        return max((c.score for c in shown if c.amount == amount), default=-99.0)

    if price is not None and alts:
        # two markup sources disagree: keep the one the page shows as its main price (agreement signal)
        mine = support(price)
        a, c = max(alts, key=lambda x: support(x[0]))
        if support(a) >= 3 and support(a) > mine + 2:
            price, currency = a, c or currency
    if price is None:
        for a, c in alts:
            if a in shown_amounts:
                return a, regular, c or currency
        if best is not None and best.score >= 3.2:
            price, currency = best.amount, best.currency or currency
    elif price in shown_amounts and best is not None and best.amount < price and best.score >= 3:
        # the markup price is shown, but its strongest copy is struck through and a lower price leads the
        # buy box: markup carries the regular price, the buyer pays the discounted one
        mine = support(price)
        crossed = max((c.score for c in struck if c.amount == price), default=-99.0)
        if crossed > mine and best.score > mine:
            regular, price = price, best.amount
            currency = best.currency or currency
    elif price not in shown_amounts:
        if any(c.amount == price for c in struck) and best is not None and best.amount < price and best.score >= 3:
            regular, price = price, best.amount
            currency = best.currency or currency
        elif not amount_in_text(price, doc.visible_text()):
            alt = next(((a, c) for a, c in alts if a in shown_amounts), None)
            if alt is not None:
                price, currency = alt[0], alt[1] or currency
            elif best is not None and best.score >= 5:
                if best.amount < price and regular is None:
                    regular = price  # markup gives the regular price, the page a discount
                price, currency = best.amount, best.currency or currency
        elif price not in _any_amounts(cands) and best is not None and best.score >= 6 and anchored:
            # the markup price is in the text but in no price element, while one price stands out by the title
            alt = next(((a, c) for a, c in alts if a in shown_amounts), None)
            price, currency = (alt[0], alt[1] or currency) if alt else (best.amount, best.currency or currency)
    if price is not None:
        if regular is None:
            near = [c for c in struck if c.amount > price and c.score >= 2]
            if near:
                regular = max(near, key=lambda c: c.score).amount
        if regular is not None and regular <= price:
            regular = None
    return price, regular, currency


_AVAIL_SEL = (
    "[class*=stock], [class*=Stock], [id*=stock], [id*=Stock], [class*=availab], [class*=Availab], [id*=availab], "
    "[id*=Availab], [itemprop=availability], [class*=sold-out], [class*=soldout], [class*=SoldOut], "
    "[class*=out-of-stock], [class*=unavailable], [class*=Unavailable], [class*=inventory], [class*=disponib], "
    "[class*=verfueg], [class*=lager], [class*=agotado], [class*=esgotado], [class*=nalich], [class*=status]"
)
_AVAIL_QUERY = _Query(_AVAIL_SEL)
_WEAK_OOS_CONTEXT = re.compile(
    r"image|imagen|bild|photo|foto|picture|colou?r|size|talla|taille|größe|taglia|tamanho|delivery|shipping|"
    r"envío|livraison|lieferung|store|shop|tienda|magasin|filiale|click|collect|pickup|retrait|recogida|"
    r"notify|avísame|benachrichtig|préven|email|e-mail|when|wenn|quand|cuando",
    re.I,
)


def _visible_availability(doc: Doc) -> Availability | None:
    """First stock statement in a stock / availability element of the main product, or None."""
    for node in _AVAIL_QUERY.run(doc):
        if node.tag in ("option", "select", "script", "style", "li", "body", "html", "form", "input", "button"):
            continue
        text = node.text(deep=True)
        if not text or len(text) > 200:
            continue
        text = _ws(text)
        if not text or len(text) > 120:
            continue
        bad, hidden = _placement(doc, node)
        if bad or hidden:
            continue
        a = availability_from_text(text, strict=True)
        if a is None:
            continue
        return a
    return None


_BUY_SEL = (
    "button, input[type=submit], input[type=button], [class*=add-to-cart], [class*=addtocart], [class*=AddToCart], "
    "[class*=add-to-bag], [class*=add-to-basket], [id*=add-to-cart], [id*=addToCart], [id*=add-to-basket], "
    "[class*=buy-now], [class*=buyNow]"
)
_BUY_QUERY = _Query(_BUY_SEL)
_BUY_TEXT = re.compile(
    r"add to (?:your )?(?:cart|bag|basket|trolley)|buy (?:it )?now|add to order|in den (?:warenkorb|einkaufswagen)|"
    r"ajouter au panier|añadir al (?:carrito|carro)|agregar al carrito|aggiungi al carrello|adicionar ao carrinho|"
    r"comprar(?: ahora| agora)?|in winkelwagen|do koszyka|dodaj do koszyka|do košíka|do košíku|vložit do košíku|"
    r"в корзину|купить|kosárba|adaugă în coș|adauga in cos|lisää ostoskoriin|lägg i varukorg|læg i kurv|"
    r"legg i handlekurv|sepete ekle|kaufen|acheter|aggiungi|加入購物車|加入购物车|カートに入れる|購入|장바구니|구매하기|"
    r"הוסף לסל|أضف إلى السلة|أضف للسلة|ostukorvi|į krepšelį|grozā|pievienot grozam|dodaj u košaricu|v košarico",
    re.I,
)
_BUY_TEXT_SEARCH = guarded(_BUY_TEXT).search  # (`fast_re`: same answers)


def _buy_button(doc: Doc) -> bool | None:
    """True: an enabled add-to-cart button for the main product; False: no enabled one, and a button that
    says the product is gone ("Sold out", "Ausverkauft" in place of "Add to cart"); None: none seen, or only
    disabled ones (shops disable "Add to cart" until a size is chosen)."""
    seen_oos = False
    for node in _BUY_QUERY.run(doc):
        a = node.attributes
        text = a.get("value") if node.tag == "input" else node.text(deep=True)
        text = _ws(text or a.get("aria-label") or a.get("title") or "")
        if not text or len(text) > 60:
            continue
        if not _BUY_TEXT_SEARCH(text):
            if len(text) <= 40 and availability_from_text(text, strict=True) == Availability.OUT_OF_STOCK:
                bad, hidden = _placement(doc, node)
                if not bad and not hidden:
                    seen_oos = True
            continue
        bad, hidden = _placement(doc, node)
        if bad or hidden:
            continue
        cls = (a.get("class") or "").lower()
        if "disabled" in a or "disabled" in cls or a.get("aria-disabled") == "true":
            doc.disabled_buy = True
            if availability_from_text(text, strict=True) == Availability.OUT_OF_STOCK:
                seen_oos = True  # "Add to cart – sold out", disabled
            continue
        return True
    return False if seen_oos else None


_BADGE_SEL = (
    "[class*=badge], [class*=Badge], [class*=discount], [class*=Discount], [class*=promo], [class*=Promo], "
    "[class*=label], [class*=flag], [class*=sticker], [class*=tag], [class*=saving], [class*=sale], "
    "[class*=coupon], [class*=voucher], [class*=shipping], [class*=delivery]"
)
_BADGE_QUERY = _Query(_BADGE_SEL)


def _promotions(doc: Doc) -> tuple[tuple[str, ...], str | None, str | None, Decimal | None]:
    badges: list[str] = []
    coupon = ends = None
    shipping = None
    for node in _BADGE_QUERY.run(doc):
        if node.tag in ("script", "style", "body", "html", "meta", "link"):
            continue
        text = node.text(deep=True)
        if not text or len(text) > 300:
            continue
        t = normalize_badge(text)
        if not t:
            continue
        bad, hidden = _placement(doc, node)
        bad = bad or hidden
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
