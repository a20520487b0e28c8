"""Listing pages (category, search results, offers): product cards in, `ListingPage` out.

`extract_listing(html, url, selectors)` is pure and fast (selectolax/lexbor, no BeautifulSoup):

1. With `ListingSelectors.item` set, the cards are exactly what that selector finds; the other selectors
   (link, name, price, regular_price, badge, next) override the automatic reading inside each card.
2. Otherwise structured data first: a JSON-LD / microdata `ItemList` (ListItem.url / ListItem.item) or
   several `Product` nodes with a URL. Items missing a name or price are completed from the DOM card that
   links to the same URL.
3. Otherwise the repeated sibling blocks: children of one container (or of sibling rows of a grid) with
   the same tag and classes, of which at least two each hold a product link and a price. Header, nav and
   footer links hold no price and a "recommended" block of one card is not repeated, so both are ignored.

Item URLs are absolute, normalised (lower-case scheme and host, default port and fragment dropped) and
deduplicated in page order; only http(s) URLs are kept.

Pagination (`next_page_urls`): a `rel=next` link, a "next" link or button (Next, Siguiente, Suivant,
Weiter, Avanti, Próximo, ›, », ...), or the link to page N+1 of a `?page=N` / `/page/N` pattern when the
page links to it. `crawl_listing` follows them up to a page limit (infinite scroll is the browser
fetcher's business).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from scrapers.prices import decimal_hint_for, parse_price
from scrapers.types import ListingItem, ListingPage, ListingSelectors

__all__ = ["extract_listing", "next_page_urls", "crawl_listing", "normalize_url"]

# --------------------------------------------------------------------------------------------- URLs

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(href: str | None, base: str) -> str | None:
    """Absolute http(s) URL without fragment, lower-case scheme/host, no default port; None otherwise."""
    if not href:
        return None
    href = href.strip()
    if not href or href.startswith("#"):
        return None
    try:
        parts = urlsplit(urljoin(base, href))
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if parts.username or parts.password:
        return None
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def _base_url(tree: LexborHTMLParser, url: str) -> str:
    base = tree.css_first("base[href]")
    if base is not None:
        joined = normalize_url(base.attributes.get("href"), url)
        if joined:
            return joined
    return url


# --------------------------------------------------------------------------------------------- prices

_CURRENCY = (r"(?:[$€£¥₹₽₩₺₴₪₫฿₱₦]|R\$|US\$|C\$|A\$|zł|zl|kr\.?|Kč|Ft|lei|лв|руб|CHF|Fr\.|"
             r"(?:USD|EUR|GBP|JPY|CHF|SEK|NOK|DKK|PLN|CZK|HUF|RON|BRL|MXN|ARS|CLP|COP|PEN|CAD|AUD|NZD|INR|"
             r"TRY|ZAR|CNY|RUB|UAH|ILS|AED|SAR|SGD|HKD|KRW|THB|PHP|IDR|MYR|VND)\b)")
_AMOUNT = r"\d[\d.,'\u00a0\u202f\u2009 ]*(?:[.,]\s?[-–—]{1,2})?"
_PRICE_RE = re.compile(rf"{_CURRENCY}\s?-?{_AMOUNT}|{_AMOUNT}\s?{_CURRENCY}", re.I)
_PRICEISH_CLASS = re.compile(r"price|precio|prix|preis|prezzo|preco|cena|amount|cost", re.I)
_REGULAR_CLASS = re.compile(r"old|was|regular|compare|original|list|strike|before|antes|rrp|msrp|uvp|"
                            r"crossed|former|previous|normal", re.I)
_SALE_CLASS = re.compile(r"sale|special|current|now|final|promo|offer|reduced|discount", re.I)
_BADGE_CLASS = re.compile(r"badge|label|flag|sticker|ribbon|tag|promo|discount|pill|chip", re.I)
_NAME_CLASS = re.compile(r"name|title|heading|nombre|titre|titel", re.I)
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg"}
_CHROME_TAGS = {"header", "nav", "footer"}


@dataclass
class _Ctx:
    url: str
    base: str
    decimal_hint: str | None


def _price(text: str | None, ctx: _Ctx) -> tuple[Decimal | None, str | None]:
    if not text:
        return None, None
    try:
        amount, currency = parse_price(text, decimal_hint=ctx.decimal_hint)
    except Exception:  # a rival page must never crash extraction
        return None, None
    if amount is not None and amount < 0:
        return None, None
    return amount, currency


def _machine_amount(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value).strip().replace(",", "."))
    except InvalidOperation:
        return None
    return d if d.is_finite() and d >= 0 else None


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = re.sub(r"\s+", " ", text).strip()
    return text or None


def _text(node: LexborNode | None) -> str:
    if node is None:
        return ""
    return re.sub(r"\s+", " ", node.text(deep=True, separator=" ")).strip()


def _classes(node: LexborNode) -> str:
    attrs = node.attributes
    return " ".join(v for v in (attrs.get("class"), attrs.get("id"), attrs.get("itemprop"),
                                attrs.get("data-testid")) if v)


def _walk(node: LexborNode) -> Iterable[LexborNode]:
    """Descendant elements in document order, skipping scripts and styles."""
    stack = [node]
    while stack:
        cur = stack.pop()
        yield cur
        kids = []
        child = cur.child
        while child is not None:
            if child.tag and not child.tag.startswith("-") and child.tag not in _SKIP_TAGS:
                kids.append(child)
            child = child.next
        stack.extend(reversed(kids))


def _own_text(node: LexborNode) -> str:
    parts = []
    child = node.child
    while child is not None:
        if child.tag == "-text":
            parts.append(child.text_content or "")
        child = child.next
    return " ".join(parts)


def _price_nodes(card: LexborNode) -> list[tuple[LexborNode, str]]:
    """Elements of a card that show a price, innermost first, with their text."""
    out: list[tuple[LexborNode, str]] = []
    for node in _walk(card):
        if node is card:
            continue
        cls = _classes(node)
        content = node.attributes.get("content")
        if content and "price" in (node.attributes.get("itemprop") or "").lower():
            out.append((node, content))
            continue
        txt = _own_text(node).strip()
        if txt and (_PRICE_RE.search(txt) or (_PRICEISH_CLASS.search(cls) and re.search(r"\d", txt))):
            out.append((node, txt))
    if not out:
        # prices split over several elements (<span>€</span><span>19</span><sup>99</sup>)
        for node in _walk(card):
            if node is card:
                continue
            if _PRICEISH_CLASS.search(_classes(node)):
                txt = _text(node)
                if txt and _PRICE_RE.search(txt) and len(txt) < 40:
                    out.append((node, txt))
                    break
    return out


def _is_regular(node: LexborNode, card: LexborNode) -> bool:
    cur: LexborNode | None = node
    while cur is not None and cur is not card and cur.mem_id != card.mem_id:
        if cur.tag in ("del", "s", "strike") or _REGULAR_CLASS.search(_classes(cur)):
            return True
        style = cur.attributes.get("style") or ""
        if "line-through" in style:
            return True
        cur = cur.parent
    return False


def _card_prices(card: LexborNode, ctx: _Ctx, selectors: ListingSelectors | None
                 ) -> tuple[Decimal | None, Decimal | None, str | None]:
    price = regular = None
    currency = None
    if selectors and selectors.price:
        node = card.css_first(selectors.price)
        price, currency = _price(_text(node) or (node.attributes.get("content") if node else None), ctx)
    if selectors and selectors.regular_price:
        node = card.css_first(selectors.regular_price)
        regular, cur2 = _price(_text(node), ctx)
        currency = currency or cur2
    if price is None and not (selectors and selectors.price):
        now: list[Decimal] = []
        was: list[Decimal] = []
        for node, txt in _price_nodes(card):
            amount, cur = _price(txt, ctx)
            if amount is None:
                continue
            currency = currency or cur
            (was if _is_regular(node, card) else now).append(amount)
        if now:
            price = now[0]
            if regular is None:
                higher = [a for a in was + now[1:] if a > price]
                if was and higher:
                    regular = max(higher)
                elif len(set(now)) > 1 and not was:
                    # two plain prices: the lower is what you pay, the higher the list price
                    price, regular = min(now), max(now)
        elif was:
            price = was[0]
    if regular is not None and price is not None and regular <= price:
        regular = None
    return price, regular, currency


# --------------------------------------------------------------------------------------------- cards

def _is_product_link(href: str | None) -> bool:
    if not href:
        return False
    h = href.strip().lower()
    return not (h.startswith(("#", "javascript:", "mailto:", "tel:", "data:")) or h == "/")


def _card_link(card: LexborNode, ctx: _Ctx, selectors: ListingSelectors | None) -> LexborNode | None:
    if selectors and selectors.link:
        node = card.css_first(selectors.link)
        if node is not None:
            return node
    if card.tag == "a" and _is_product_link(card.attributes.get("href")):
        return card
    best = None
    for a in card.css("a[href]"):
        if not _is_product_link(a.attributes.get("href")):
            continue
        if best is None:
            best = a
        # prefer the link around the image or the title over "add to cart"-style links
        if a.css_first("img") is not None or a.css_first("h1, h2, h3, h4, h5, h6") is not None:
            return a
    return best


def _card_name(card: LexborNode, link: LexborNode | None, selectors: ListingSelectors | None) -> str | None:
    if selectors and selectors.name:
        node = card.css_first(selectors.name)
        if node is not None:
            return _clean(_text(node) or node.attributes.get("content"))
    for sel in ("[itemprop=name]", "h1, h2, h3, h4, h5, h6"):
        node = card.css_first(sel)
        if node is not None:
            t = _clean(_text(node) or node.attributes.get("content"))
            if t and not _PRICE_RE.fullmatch(t):
                return t
    for node in _walk(card):
        if node is not card and _NAME_CLASS.search(_classes(node)) and not _PRICEISH_CLASS.search(_classes(node)):
            t = _clean(_text(node))
            if t and not _PRICE_RE.search(t) and len(t) < 300:
                return t
    if link is not None:
        t = _clean(link.attributes.get("title") or link.attributes.get("aria-label"))
        if t:
            return t
        t = _clean(_text(link))
        if t and not _PRICE_RE.search(t) and len(t) < 300:
            return t
    img = card.css_first("img[alt]")
    if img is not None:
        return _clean(img.attributes.get("alt"))
    return None


def _card_badge(card: LexborNode, selectors: ListingSelectors | None) -> str | None:
    if selectors and selectors.badge:
        node = card.css_first(selectors.badge)
        return _clean(_text(node)) if node is not None else None
    for node in _walk(card):
        if node is card:
            continue
        cls = _classes(node)
        if cls and _BADGE_CLASS.search(cls) and not _PRICEISH_CLASS.search(cls):
            t = _clean(_text(node))
            if t and len(t) <= 40 and not _PRICE_RE.fullmatch(t):
                return t
    return None


def _item_from_card(card: LexborNode, ctx: _Ctx, selectors: ListingSelectors | None) -> ListingItem | None:
    link = _card_link(card, ctx, selectors)
    if link is None:
        return None
    url = normalize_url(link.attributes.get("href") or link.attributes.get("data-href"), ctx.base)
    if not url:
        return None
    price, regular, currency = _card_prices(card, ctx, selectors)
    return ListingItem(url=url, name=_card_name(card, link, selectors), price=price, regular_price=regular,
                       currency=currency, badge=_card_badge(card, selectors))


def _signature(node: LexborNode) -> str:
    """Tag and first stable class: siblings compare equal despite per-item classes ("product-123",
    "is-active", "tile--last")."""
    cls = node.attributes.get("class") or ""
    for c in cls.split():
        if not re.search(r"\d", c) and c not in ("active", "is-active", "first", "last", "odd", "even",
                                                 "selected", "col", "row") and "--" not in c:
            return f"{node.tag}.{c}"
    return node.tag


def _in_chrome(node: LexborNode) -> bool:
    cur = node.parent
    while cur is not None and cur.tag not in ("body", "html"):
        if cur.tag in _CHROME_TAGS:
            return True
        role = (cur.attributes.get("role") or "").lower()
        if role in ("navigation", "banner", "contentinfo"):
            return True
        cur = cur.parent
    return False


def _qualifies(node: LexborNode, cache: dict[int, bool]) -> bool:
    key = node.mem_id
    if key not in cache:
        has_link = node.tag == "a" and _is_product_link(node.attributes.get("href")) or any(
            _is_product_link(a.attributes.get("href")) for a in node.css("a[href]"))
        ok = False
        if has_link:
            text = _text(node)
            ok = bool(_PRICE_RE.search(text)) or any(
                _PRICEISH_CLASS.search(_classes(n)) and re.search(r"\d", _text(n))
                for n in node.css("[class*=price], [itemprop=price]"))
        cache[key] = ok
    return cache[key]


def _distinct_links(node: LexborNode) -> int:
    urls = set()
    for a in ([node] if node.tag == "a" else []) + list(node.css("a[href]")):
        href = a.attributes.get("href")
        if _is_product_link(href):
            urls.add((href or "").split("#", 1)[0])
    return len(urls)


def _dom_cards(tree: LexborHTMLParser) -> list[LexborNode]:
    """The largest set of repeated sibling blocks that each hold a product link and a price."""
    body = tree.body
    if body is None:
        return []
    groups: dict[tuple[int, str, str], list[LexborNode]] = {}
    order: dict[tuple[int, str, str], int] = {}
    cache: dict[int, bool] = {}
    for parent in _walk(body):
        if parent.tag in _CHROME_TAGS:
            continue
        kids: dict[str, list[LexborNode]] = {}
        child = parent.child
        while child is not None:
            if child.tag and not child.tag.startswith("-") and child.tag not in _SKIP_TAGS:
                kids.setdefault(_signature(child), []).append(child)
            child = child.next
        grand = parent.parent.mem_id if parent.parent is not None else 0
        for sig, members in kids.items():
            key = (grand, _signature(parent), sig)
            groups.setdefault(key, []).extend(members)
            order.setdefault(key, len(order))
    best: list[LexborNode] = []
    best_score: tuple[float, ...] = (0, 0, 0)
    for key, members in groups.items():
        if len(members) < 2:
            continue
        good = [m for m in members if _qualifies(m, cache)]
        if len(good) < 2 or len(good) * 2 < len(members):
            continue
        if _in_chrome(good[0]):
            continue
        # more cards wins; on a tie the block whose members hold one product each (not rows of cards)
        links = sum(_distinct_links(m) for m in good) / len(good)
        score = (len(good), -links, order[key])
        if score > best_score:
            best, best_score = good, score
    return best


# --------------------------------------------------------------------------------------------- structured data

def _load_json(text: str) -> Any:
    text = text.strip().strip(";")
    if text.startswith("<!--"):
        text = text[4:]
    if text.endswith("-->"):
        text = text[:-3]
    try:
        return json.loads(text)
    except ValueError:
        try:
            return json.loads(re.sub(r",\s*([}\]])", r"\1", text), strict=False)
        except ValueError:
            return None


def _types(node: dict) -> set[str]:
    t = node.get("@type")
    if isinstance(t, str):
        t = [t]
    if not isinstance(t, list):
        return set()
    return {str(x).rsplit("/", 1)[-1].lower() for x in t}


def _first(v: Any) -> Any:
    while isinstance(v, list):
        v = v[0] if v else None
    return v


def _offer_prices(offers: Any) -> tuple[Decimal | None, Decimal | None, str | None]:
    offers = offers if isinstance(offers, list) else [offers]
    for o in offers:
        if not isinstance(o, dict):
            continue
        currency = o.get("priceCurrency")
        price = _machine_amount(_first(o.get("price")))
        if price is None:
            price = _machine_amount(o.get("lowPrice"))
        regular = None
        spec = o.get("priceSpecification")
        for s in (spec if isinstance(spec, list) else [spec]):
            if isinstance(s, dict):
                pt = str(s.get("priceType") or "").lower()
                amount = _machine_amount(s.get("price"))
                if amount is None:
                    continue
                if "listprice" in pt or "strikethrough" in pt or "msrp" in pt:
                    regular = amount
                elif price is None:
                    price = amount
                currency = currency or s.get("priceCurrency")
        if price is not None:
            if regular is not None and regular <= price:
                regular = None
            return price, regular, (str(currency).upper() if currency else None)
    return None, None, None


def _structured_item(node: Any, ctx: _Ctx) -> ListingItem | None:
    if isinstance(node, str):
        url = normalize_url(node, ctx.base)
        return ListingItem(url=url) if url else None
    if not isinstance(node, dict):
        return None
    types = _types(node)
    inner = node.get("item")
    if "listitem" in types and inner is not None:
        item = _structured_item(inner, ctx)
        if item is None:
            url = normalize_url(_first(node.get("url")), ctx.base)
            return ListingItem(url=url, name=_clean(_first(node.get("name")))) if url else None
        if item.name is None and node.get("name"):
            item = ListingItem(url=item.url, name=_clean(str(_first(node.get("name")))), price=item.price,
                               regular_price=item.regular_price, currency=item.currency, badge=item.badge)
        return item
    raw_url = _first(node.get("url")) or (node.get("@id") if isinstance(node.get("@id"), str) else None)
    if isinstance(raw_url, dict):
        raw_url = raw_url.get("@id") or raw_url.get("url")
    url = normalize_url(raw_url if isinstance(raw_url, str) else None, ctx.base)
    if not url:
        return None
    name = _first(node.get("name"))
    price, regular, currency = _offer_prices(node.get("offers"))
    return ListingItem(url=url, name=_clean(str(name)) if name else None, price=price, regular_price=regular,
                       currency=currency)


def _walk_json(obj: Any, depth: int = 0) -> Iterable[dict]:
    if depth > 12:
        return
    if isinstance(obj, list):
        for x in obj:
            yield from _walk_json(x, depth + 1)
    elif isinstance(obj, dict):
        yield obj
        for k, v in obj.items():
            if k in ("itemListElement", "offers", "review", "aggregateRating", "brand", "isVariantOf"):
                continue
            if isinstance(v, (list, dict)):
                yield from _walk_json(v, depth + 1)


def _jsonld_items(tree: LexborHTMLParser, ctx: _Ctx) -> list[ListingItem]:
    lists: list[list[ListingItem]] = []
    products: list[ListingItem] = []
    for script in tree.css('script[type*="ld+json"]'):
        data = _load_json(script.text(deep=True) or "")
        if data is None:
            continue
        for node in _walk_json(data):
            types = _types(node)
            elements = node.get("itemListElement")
            if elements is not None and ("itemlist" in types or "offercatalog" in types or not types):
                elements = elements if isinstance(elements, list) else [elements]
                if elements and all(isinstance(e, dict) and "position" in e for e in elements):
                    elements = sorted(elements, key=lambda e: _machine_amount(e.get("position")) or 0)
                items = [i for i in (_structured_item(e, ctx) for e in elements) if i]
                if items:
                    lists.append(items)
            elif types & {"product", "productgroup", "individualproduct", "productmodel"}:
                item = _structured_item(node, ctx)
                if item and item.url != normalize_url(ctx.url, ctx.url):
                    products.append(item)
    if lists:
        lists.sort(key=len, reverse=True)
        return lists[0]
    return products if len(products) >= 2 else []


def _microdata_items(tree: LexborHTMLParser, ctx: _Ctx) -> list[ListingItem]:
    out: list[ListingItem] = []
    for scope in tree.css('[itemscope][itemtype*="schema.org/Product"], [itemscope][itemtype*="ListItem"]'):
        link = scope.css_first('[itemprop=url]')
        href = None
        if link is not None:
            href = link.attributes.get("href") or link.attributes.get("content")
        if not href:
            continue
        url = normalize_url(href, ctx.base)
        if not url:
            continue
        name_node = scope.css_first("[itemprop=name]")
        name = _clean((name_node.attributes.get("content") or _text(name_node)) if name_node else None)
        price = regular = currency = None
        pnode = scope.css_first("[itemprop=price]")
        if pnode is not None:
            price = _machine_amount(pnode.attributes.get("content"))
            if price is None:
                price, currency = _price(_text(pnode), ctx)
        cnode = scope.css_first("[itemprop=priceCurrency]")
        if cnode is not None:
            currency = _clean(cnode.attributes.get("content") or _text(cnode)) or currency
        out.append(ListingItem(url=url, name=name, price=price, regular_price=regular, currency=currency))
    return out if len(out) >= 2 else []


# --------------------------------------------------------------------------------------------- pagination

_NEXT_WORDS = {
    "next", "next page", "next »", "next ›", "next >", "siguiente", "página siguiente", "pagina siguiente",
    "sig.", "suivant", "suivante", "page suivante", "weiter", "nächste", "nächste seite", "naechste",
    "vor", "avanti", "successivo", "successiva", "pagina successiva", "próximo", "proximo", "próxima",
    "proxima", "seguinte", "volgende", "następna", "nastepna", "další", "következő", "nästa", "neste",
    "næste", "seuraava", "›", "»", ">", "→", ">>", "›› ", "→ next", "load more", "more results",
    "ver más", "mostrar más", "mehr anzeigen", "voir plus", "mostra altri",
}
_NEXT_CLASS = re.compile(r"(?:^|[\s_-])next(?:$|[\s_-])|pagination-next|pager-next|page-next|siguiente|suivant",
                         re.I)
_PAGE_PARAMS = ("page", "p", "pg", "pagina", "seite", "paged", "pagenumber", "page_number", "currentpage")
_PATH_PAGE = re.compile(r"/(page|pagina|seite|p)/(\d+)/?$", re.I)
_ONCLICK_URL = re.compile(r"""(?:location(?:\.href)?\s*=|window\.open\()\s*['"]([^'"]+)['"]""")


def _node_url(node: LexborNode, base: str) -> str | None:
    attrs = node.attributes
    for key in ("href", "data-href", "data-url", "data-link", "formaction", "data-next-url"):
        v = attrs.get(key)
        if v and _is_product_link(v):
            u = normalize_url(v, base)
            if u:
                return u
    onclick = attrs.get("onclick") or ""
    m = _ONCLICK_URL.search(onclick)
    if m:
        return normalize_url(m.group(1), base)
    if node.tag == "button":
        form = node.parent
        while form is not None and form.tag != "form":
            form = form.parent
        if form is not None and (form.attributes.get("method") or "get").lower() == "get":
            action = normalize_url(form.attributes.get("action") or base, base)
            name, value = node.attributes.get("name"), node.attributes.get("value")
            if action and name and value:
                parts = urlsplit(action)
                q = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
                q.append((name, value))
                return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), ""))
    return None


def _current_page(url: str) -> tuple[str | None, int]:
    parts = urlsplit(url)
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in _PAGE_PARAMS and v.isdigit():
            return k, int(v)
    m = _PATH_PAGE.search(parts.path)
    if m:
        return "/" + m.group(1), int(m.group(2))
    return None, 1


def _page_of(candidate: str, current: str) -> tuple[str | None, int] | None:
    """(param, page number) when `candidate` is another page of the same listing as `current`."""
    c, u = urlsplit(candidate), urlsplit(current)
    if c.netloc != u.netloc:
        return None
    m = _PATH_PAGE.search(c.path)
    if m:
        base_c = c.path[:m.start()].rstrip("/")
        base_u = (u.path[:_PATH_PAGE.search(u.path).start()] if _PATH_PAGE.search(u.path) else u.path).rstrip("/")
        if base_c == base_u:
            return "/" + m.group(1), int(m.group(2))
        return None
    if c.path.rstrip("/") != u.path.rstrip("/"):
        return None
    cq = parse_qsl(c.query, keep_blank_values=True)
    uq = {k: v for k, v in parse_qsl(u.query, keep_blank_values=True) if k.lower() not in _PAGE_PARAMS}
    page = None
    for k, v in cq:
        if k.lower() in _PAGE_PARAMS and v.isdigit():
            page = (k, int(v))
        elif uq.get(k) != v:
            return None  # another filter / sort: a different listing
    return page


def next_page_urls(html: str | bytes | LexborHTMLParser, url: str,
                   selectors: ListingSelectors | None = None) -> list[str]:
    """Candidate URLs of the next page, best first: configured selector, rel=next, a "next" link or
    button, then the `?page=N+1` link. Never the current URL."""
    tree = html if isinstance(html, LexborHTMLParser) else LexborHTMLParser(_decode(html))
    base = _base_url(tree, url)
    here = normalize_url(url, url) or url
    out: list[str] = []

    def add(u: str | None) -> None:
        if u and u != here and u not in out:
            out.append(u)

    if selectors and selectors.next:
        for node in tree.css(selectors.next):
            add(_node_url(node, base))
    for node in tree.css("link[rel], a[rel]"):
        rels = (node.attributes.get("rel") or "").lower().split()
        if "next" in rels:
            add(_node_url(node, base))
    for node in tree.css("a, button, [role=button], [role=link]"):
        if _in_chrome(node) and node.tag != "a":
            continue
        attrs = node.attributes
        label = _clean(_text(node)) or ""
        labels = {label.lower(), (attrs.get("aria-label") or "").strip().lower(),
                  (attrs.get("title") or "").strip().lower()}
        if labels & _NEXT_WORDS or any(lbl.startswith(("next ", "siguiente", "suivant", "weiter", "nächste"))
                                        for lbl in labels if lbl) or _NEXT_CLASS.search(attrs.get("class") or ""):
            if attrs.get("disabled") is not None or "disabled" in (attrs.get("class") or "").lower() \
                    or attrs.get("aria-disabled") == "true":
                continue
            add(_node_url(node, base))
    param, page = _current_page(here)
    for a in tree.css("a[href]"):
        u = normalize_url(a.attributes.get("href"), base)
        if not u:
            continue
        pg = _page_of(u, here)
        if pg and pg[1] == page + 1 and (param is None or pg[0] == param or pg[0].lower() == param.lower()):
            add(u)
    return out


# --------------------------------------------------------------------------------------------- main entry

def _decode(html: str | bytes) -> str:
    if isinstance(html, str):
        return html
    m = re.search(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", html[:4096], re.I)
    enc = m.group(1).decode("ascii", "replace") if m else "utf-8"
    try:
        return html.decode(enc, errors="replace")
    except LookupError:
        return html.decode("utf-8", errors="replace")


def _dedupe(items: Iterable[ListingItem]) -> tuple[ListingItem, ...]:
    seen: dict[str, int] = {}
    out: list[ListingItem] = []
    for it in items:
        if it.url in seen:
            prev = out[seen[it.url]]
            # a second card for the same product can fill gaps (image link first, then title + price)
            if (prev.price is None and it.price is not None) or (prev.name is None and it.name):
                out[seen[it.url]] = _merge(prev, it)
            continue
        seen[it.url] = len(out)
        out.append(it)
    return tuple(out)


def _merge(primary: ListingItem, extra: ListingItem | None) -> ListingItem:
    if extra is None:
        return primary
    return ListingItem(
        url=primary.url, name=primary.name or extra.name,
        price=primary.price if primary.price is not None else extra.price,
        regular_price=primary.regular_price if primary.regular_price is not None else extra.regular_price,
        currency=primary.currency or extra.currency, badge=primary.badge or extra.badge)


def extract_listing(html: str | bytes, url: str, selectors: ListingSelectors | None = None) -> ListingPage:
    """The product cards of one listing page and the URL of the next page (see the module docstring)."""
    tree = LexborHTMLParser(_decode(html))
    html_node = tree.css_first("html")
    lang = html_node.attributes.get("lang") if html_node is not None else None
    ctx = _Ctx(url=url, base=_base_url(tree, url), decimal_hint=decimal_hint_for(url, lang))

    if selectors and selectors.item:
        cards = tree.css(selectors.item)
        items = [i for i in (_item_from_card(c, ctx, selectors) for c in cards) if i]
    else:
        structured = _jsonld_items(tree, ctx) or _microdata_items(tree, ctx)
        dom = [i for i in (_item_from_card(c, ctx, selectors) for c in _dom_cards(tree)) if i]
        if structured:
            by_url = {}
            for d in dom:
                by_url.setdefault(d.url, d)
            items = [_merge(s, by_url.get(s.url)) for s in structured]
        else:
            items = dom
    nexts = next_page_urls(tree, url, selectors)
    return ListingPage(items=_dedupe(items), next_url=nexts[0] if nexts else None)


async def crawl_listing(url: str, fetch: Callable[[str], Awaitable[Any]], *,
                        selectors: ListingSelectors | None = None, max_pages: int = 5,
                        same_host: bool = True) -> list[tuple[str, ListingPage]]:
    """Follow a listing's pagination: `[(page_url, ListingPage), ...]`, at most `max_pages` pages.

    `fetch(url)` returns the page's HTML (str / bytes) or an object with `.text` (and optionally
    `.final_url`), e.g. `scrapers.fetch.HttpFetcher.fetch`. Stops at the page limit, on a page without a
    next link, on a loop, or (with `same_host`) when the next link leaves the listing's host. A page that
    adds no new item ends the crawl too (shops that ignore ?page=N past the end repeat the last page).
    """
    out: list[tuple[str, ListingPage]] = []
    seen_pages: set[str] = set()
    seen_items: set[str] = set()
    host = urlsplit(url).hostname
    current: str | None = url
    while current and len(out) < max(1, max_pages):
        key = normalize_url(current, current) or current
        if key in seen_pages:
            break
        seen_pages.add(key)
        got = await fetch(current)
        if isinstance(got, (str, bytes)):
            html, final = got, current
        else:
            html, final = got.text, getattr(got, "final_url", None) or current
        page = extract_listing(html, final, selectors)
        out.append((final, page))
        new = {i.url for i in page.items} - seen_items
        if out[:-1] and not new:
            break
        seen_items |= new
        nxt = page.next_url
        if nxt and same_host and urlsplit(nxt).hostname != host:
            break
        current = nxt
    return out
