"""Structured product data on a page: JSON-LD, microdata, RDFa, OpenGraph / product meta, embedded state JSON.

Everything here works on an already parsed selectolax tree (the page is parsed once, in `product.py`) and
returns `Record`s: flat, source-tagged views of one product offer, values still raw (strings / numbers as the
markup has them). Choosing among records and parsing money happens in `product.py`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import orjson

__all__ = ["Record", "jsonld_records", "microdata_records", "meta_records", "state_records", "load_json_lenient"]

PRODUCT_TYPES = frozenset({
    "product", "productgroup", "productmodel", "individualproduct", "someproducts", "vehicle", "car",
    "motorcycle", "book", "dietarysupplement", "drug", "menuitem", "softwareapplication", "videogame",
    "musicalbum", "movie", "creativework", "productcollection", "wearableproduct",
})
# keys whose content is about other products (never the main one)
SKIP_KEYS = frozenset({
    "isrelatedto", "issimilarto", "isaccessoryorsparepartfor", "isconsumablefor", "relatedlink",
    "review", "reviews", "breadcrumb", "itemlistelement", "isvariantof", "mainentityofpage", "seller",
    "potentialaction", "publisher", "author", "manufacturer", "provider", "itemreviewed", "hasmerchantreturnpolicy",
    "shippingdetails", "subjectof", "includesobject", "isbasedon", "model", "workexample",
})


@dataclass
class Record:
    """One product (or one of its offers) as some markup describes it."""

    source: str                                  # "jsonld" | "microdata" | "rdfa" | "meta" | "state"
    type: str = ""                               # schema type, lower-case ("product", "event"...)
    name: str | None = None
    sku: str | None = None
    gtin: str | None = None
    mpn: str | None = None
    brand: str | None = None
    image: str | None = None
    url: str | None = None
    rating: Any = None
    review_count: Any = None
    offers: list[dict[str, Any]] = field(default_factory=list)   # normalised offers, see `_offer`
    variants: list["Record"] = field(default_factory=list)
    depth: int = 0                               # nesting depth where it was found (0 = top level)


# --------------------------------------------------------------------------------------------------
# helpers

def _lower_type(t: Any) -> list[str]:
    if isinstance(t, str):
        return [t.rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()]
    if isinstance(t, list):
        out: list[str] = []
        for x in t:
            out.extend(_lower_type(x))
        return out
    return []


def _first(v: Any) -> Any:
    while isinstance(v, list):
        if not v:
            return None
        v = v[0]
    return v


def _text(v: Any) -> str | None:
    if type(v) is str:  # most values: the same as below
        return v.strip() or None
    v = _first(v)
    if isinstance(v, dict):
        v = v.get("name") or v.get("@id") or v.get("value") or v.get("url")
        v = _first(v)
    if v is None or isinstance(v, (dict, bool)):
        return None
    if isinstance(v, float):
        v = repr(v) if not v.is_integer() else str(int(v))
    s = str(v).strip()
    return s or None


def _get(d: dict, *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] not in (None, "", []):
            return d[k]
    return None


_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_JS_COMMENT = re.compile(r"^\s*//[^\n]*$", re.M)
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def load_json_lenient(text: str) -> Any:
    """orjson first; then the usual JSON-LD sins: CDATA, comments, trailing commas, raw newlines, two
    objects in one script."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    t = text.strip()
    if t.startswith("<!--"):
        t = t[4:]
    if t.endswith("-->"):
        t = t[:-3]
    t = t.replace("<![CDATA[", "").replace("]]>", "").strip().rstrip(";")
    t = _JS_COMMENT.sub("", t)
    t = _TRAILING_COMMA.sub(r"\1", t)
    t = _CTRL.sub(" ", t)
    try:
        return json.loads(t, strict=False)
    except ValueError:
        pass
    # several top-level objects one after another
    dec = json.JSONDecoder(strict=False)
    out, i = [], 0
    while i < len(t):
        while i < len(t) and t[i] in " \t\r\n,;":
            i += 1
        if i >= len(t):
            break
        try:
            obj, j = dec.raw_decode(t, i)
        except ValueError:
            break
        out.append(obj)
        i = j
    return out or None


# --------------------------------------------------------------------------------------------------
# offers

def _offer(o: dict) -> list[dict[str, Any]]:
    """Flatten one schema.org Offer / AggregateOffer into a list of plain offers.

    Each plain offer: price, currency, low, high, availability, regular (list / strike-through price),
    sku, url, valid_until, shipping, aggregate (bool).
    """
    if not isinstance(o, dict):
        return []
    types = _lower_type(o.get("@type"))
    out: list[dict[str, Any]] = []
    price = _get(o, "price", "Price", "priceAmount", "amount")
    currency = _text(_get(o, "priceCurrency", "pricecurrency", "currency"))
    regular = None
    specs = o.get("priceSpecification") or o.get("pricespecification")
    if isinstance(specs, dict):
        specs = [specs]
    if isinstance(specs, list):
        for s in specs:
            if not isinstance(s, dict):
                continue
            ptype = str(s.get("priceType") or "").lower()
            sp = _get(s, "price", "minPrice", "maxPrice")
            if sp is None:
                continue
            if any(k in ptype for k in ("listprice", "strikethrough", "msrp", "srp", "regular", "original")):
                regular = sp
            elif price is None:
                price = sp
            currency = currency or _text(s.get("priceCurrency"))
    if isinstance(price, dict):
        price = _get(price, "value", "price", "amount")
    shipping = None
    sd = o.get("shippingDetails")
    sd = _first(sd)
    if isinstance(sd, dict):
        sr = sd.get("shippingRate")
        sr = _first(sr)
        if isinstance(sr, dict):
            shipping = _get(sr, "value", "price")
    avail = _text(_get(o, "availability", "Availability", "itemAvailability"))
    base = {
        "price": _first(price),
        "currency": currency,
        "low": _first(_get(o, "lowPrice", "lowprice")),
        "high": _first(_get(o, "highPrice", "highprice")),
        "availability": avail,
        "regular": _first(regular),
        "sku": _text(_get(o, "sku", "productID")),
        "gtin": _text(_get(o, "gtin13", "gtin", "gtin12", "gtin14", "gtin8")),
        "url": _text(o.get("url")),
        "valid_until": _text(o.get("priceValidUntil")),
        "shipping": shipping,
        "aggregate": "aggregateoffer" in types,
        "item": o.get("itemOffered") if isinstance(o.get("itemOffered"), dict) else None,
    }
    inner = o.get("offers")
    if inner is not None:
        subs: list[dict[str, Any]] = []
        for x in (inner if isinstance(inner, list) else [inner]):
            subs.extend(_offer(x))
        for s in subs:
            s.setdefault("currency", currency)
            if not s.get("currency"):
                s["currency"] = currency
        if base["price"] is not None or base["low"] is not None:
            out.append(base)
        out.extend(subs)
        if not out:
            out.append(base)
        return out
    out.append(base)
    return out


def _offers_of(node: dict) -> list[dict[str, Any]]:
    offers = node.get("offers") or node.get("Offers")
    if offers is None:
        return []
    out: list[dict[str, Any]] = []
    for o in (offers if isinstance(offers, list) else [offers]):
        out.extend(_offer(o))
    return out


def _record_from_node(node: dict, source: str, depth: int) -> Record:
    brand = node.get("brand")
    if isinstance(brand, list):
        brand = brand[0] if brand else None
    rating = node.get("aggregateRating")
    rating = _first(rating)
    rv = rc = None
    if isinstance(rating, dict):
        rv = _first(rating.get("ratingValue"))
        rc = _first(_get(rating, "reviewCount", "ratingCount"))
    types = _lower_type(node.get("@type"))
    rec = Record(
        source=source,
        type=types[0] if types else "",
        name=_text(node.get("name")),
        sku=_text(_get(node, "sku", "productID", "productId")),
        gtin=_text(_get(node, "gtin13", "gtin", "gtin12", "gtin14", "gtin8", "isbn")),
        mpn=_text(node.get("mpn")),
        brand=_text(brand),
        image=_text(node.get("image")),
        url=_text(node.get("url")) or _text(node.get("@id")),
        rating=rv,
        review_count=rc,
        offers=_offers_of(node),
        depth=depth,
    )
    variants = node.get("hasVariant")
    if variants:
        for v in (variants if isinstance(variants, list) else [variants]):
            if isinstance(v, dict):
                rec.variants.append(_record_from_node(v, source, depth + 1))
    return rec


def _walk_jsonld(obj: Any, depth: int, out: list[Record], source: str) -> None:
    if isinstance(obj, list):
        for x in obj:
            _walk_jsonld(x, depth, out, source)
        return
    if not isinstance(obj, dict):
        return
    if "@graph" in obj:
        _walk_jsonld(obj["@graph"], depth, out, source)
    types = _lower_type(obj.get("@type"))
    is_product = any(t in PRODUCT_TYPES for t in types)
    has_offers = "offers" in obj or "Offers" in obj
    if is_product or (has_offers and "offer" not in "".join(types)):
        out.append(_record_from_node(obj, source, depth))
        return  # nested products inside a product are related ones
    if types and types[0] in ("offer", "aggregateoffer") and depth == 0:
        item = obj.get("itemOffered")
        rec = _record_from_node(item, source, depth) if isinstance(item, dict) else Record(source=source, type="offer")
        rec.offers = _offer(obj)
        out.append(rec)
        return
    for k, v in obj.items():
        if isinstance(v, (dict, list)) and k.lower() not in SKIP_KEYS and not k.startswith("@graph"):
            _walk_jsonld(v, depth + 1, out, source)


def jsonld_records(tree) -> list[Record]:
    out: list[Record] = []
    for node in tree.css('script[type*="ld+json"]'):
        text = node.text(deep=True)
        if not text or not text.strip():
            continue
        data = load_json_lenient(text)
        if data is not None:
            _walk_jsonld(data, 0, out, "jsonld")
    return out


# --------------------------------------------------------------------------------------------------
# microdata (and RDFa-lite `property`/`typeof`), read straight from the selectolax tree

_URL_TAGS = {"a": "href", "link": "href", "area": "href", "img": "src", "audio": "src", "video": "src",
             "source": "src", "iframe": "src", "embed": "src", "object": "data"}


def _prop_value(node) -> Any:
    attrs = node.attributes
    if "content" in attrs and attrs["content"] is not None:
        return attrs["content"]
    tag = node.tag
    if tag == "meta":
        return attrs.get("content")
    if tag in _URL_TAGS:
        v = attrs.get(_URL_TAGS[tag])
        if v:
            return v
    if tag == "time" and attrs.get("datetime"):
        return attrs["datetime"]
    if tag in ("data", "meter") and attrs.get("value"):
        return attrs["value"]
    if tag in ("input", "select") and attrs.get("value"):
        return attrs["value"]
    return _clean_ws(node.text(deep=True))


def _clean_ws(s: str | None) -> str:
    return " ".join(s.split()) if s else ""


def _microdata_items(tree, scope_attr: str, prop_attr: str, type_attr: str) -> list[dict]:
    """Item dicts ({"@type": ..., prop: value|[values]|item}) for every top-level scope on the page."""
    nodes = tree.css(f"[{scope_attr}],[{prop_attr}]")
    if not nodes:
        return []
    items: dict[int, dict] = {}
    top: list[dict] = []
    scope_ids: set[int] = set()
    for n in nodes:
        if scope_attr in n.attributes:
            scope_ids.add(n.mem_id)
    for n in nodes:
        attrs = n.attributes
        is_scope = scope_attr in attrs
        item = None
        if is_scope:
            item = {"@type": attrs.get(type_attr) or "", "_node": n}
            items[n.mem_id] = item
        prop = attrs.get(prop_attr)
        owner = None
        p = n.parent
        while p is not None:
            if p.mem_id in scope_ids:
                owner = items.get(p.mem_id)
                break
            p = p.parent
        if prop:
            value = item if item is not None else _prop_value(n)
            if owner is not None:
                for name in prop.split():
                    name = name.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
                    if name in owner:
                        prev = owner[name]
                        if isinstance(prev, list) and not (isinstance(prev, dict)):
                            prev.append(value)
                        else:
                            owner[name] = [prev, value]
                    else:
                        owner[name] = value
            elif item is not None:
                top.append(item)
        elif item is not None and owner is None:
            top.append(item)
        elif item is not None and owner is not None:
            top.append(item)  # an itemscope without itemprop nested in another: treat as its own item
    return top


def _md_first(v: Any) -> Any:
    while isinstance(v, list):
        # prefer a non-empty value
        vals = [x for x in v if x not in (None, "")]
        if not vals:
            return None
        v = vals[0]
    return v


def _md_to_jsonld(item: dict) -> dict:
    """Microdata item dict -> JSON-LD-like dict, so the same record builder reads both."""
    out: dict[str, Any] = {}
    for k, v in item.items():
        if k == "_node":
            continue
        if isinstance(v, list):
            out[k] = [(_md_to_jsonld(x) if isinstance(x, dict) else x) for x in v]
        elif isinstance(v, dict):
            out[k] = _md_to_jsonld(v)
        else:
            out[k] = v
    if "offers" in out:
        offers = out["offers"]
        offers = offers if isinstance(offers, list) else [offers]
        fixed = []
        for o in offers:
            if isinstance(o, dict):
                fixed.append(o)
            elif isinstance(o, str):  # itemprop="offers" without its own itemscope: the props sit on the product
                pass
        out["offers"] = fixed
    # price props directly on the product (no offers scope)
    if not out.get("offers") and any(k in out for k in ("price", "lowPrice", "availability")):
        out["offers"] = [{k: out[k] for k in ("price", "priceCurrency", "lowPrice", "highPrice", "availability")
                          if k in out}]
    return out


def microdata_records(tree) -> list[Record]:
    out: list[Record] = []
    for scope, prop, typ, source in (("itemscope", "itemprop", "itemtype", "microdata"),
                                     ("typeof", "property", "typeof", "rdfa")):
        if source == "rdfa":
            # RDFa: only schema.org-ish properties, not OpenGraph meta (handled in `meta_records`)
            if not tree.css_first("[typeof]"):
                continue
        for item in _microdata_items(tree, scope, prop, typ):
            node = _md_to_jsonld(item)
            if source == "rdfa":
                node = {k: v for k, v in node.items() if not k.startswith(("og", "fb", "twitter", "product"))}
            node["@type"] = (node.get("@type") or "").split()
            recs: list[Record] = []
            _walk_jsonld(node, 0, recs, source)
            out.extend(recs)
    return out


# --------------------------------------------------------------------------------------------------
# OpenGraph / product meta

def meta_records(tree) -> tuple[Record | None, dict[str, str]]:
    """(product record from og:/product: meta, all meta name/property -> content)."""
    meta: dict[str, str] = {}
    # every <meta>: one without property / name / itemprop has no key (a single selector costs lexbor
    # a third of "meta[property],meta[name],meta[itemprop]", which lists the same elements)
    for m in tree.css("meta"):
        a = m.attributes
        key = (a.get("property") or a.get("name") or a.get("itemprop") or "").strip().lower()
        val = a.get("content")
        if key and val and key not in meta:
            meta[key] = val.strip()
    price = meta.get("product:sale_price:amount") or meta.get("product:price:amount") or meta.get("og:price:amount") \
        or meta.get("og:price") or meta.get("product:price")
    if price is None and not any(k in meta for k in ("product:availability", "og:availability", "product:retailer_item_id")):
        return None, meta
    regular = meta.get("product:original_price:amount") or meta.get("og:original_price:amount")
    rec = Record(
        source="meta",
        type="product" if (meta.get("og:type", "").lower() in ("product", "og:product", "product.item")) else "",
        name=meta.get("og:title"),
        sku=meta.get("product:retailer_item_id") or meta.get("product:sku") or meta.get("og:sku"),
        brand=meta.get("product:brand") or meta.get("og:brand"),
        gtin=meta.get("product:gtin") or meta.get("product:ean") or meta.get("product:upc"),
        image=meta.get("og:image"),
        url=meta.get("og:url"),
    )
    rec.offers.append({
        "price": price,
        "currency": meta.get("product:sale_price:currency") or meta.get("product:price:currency")
        or meta.get("og:price:currency"),
        "low": None, "high": None,
        "availability": meta.get("product:availability") or meta.get("og:availability"),
        "regular": regular if regular and regular != price else None,
        "sku": None, "gtin": None, "url": None, "valid_until": meta.get("product:sale_price_dates:end"),
        "shipping": None, "aggregate": False, "item": None,
    })
    return rec, meta


# --------------------------------------------------------------------------------------------------
# embedded state JSON (__NEXT_DATA__, __NUXT__ payloads, window.__INITIAL_STATE__ = {...})

_STATE_ASSIGN = re.compile(
    r"(?:window\.|var\s+|let\s+|const\s+)?(__[A-Z_]*(?:STATE|DATA|PROPS|STORE|CONTEXT)[A-Z_]*__|__NUXT__|"
    r"__APOLLO_STATE__|__PRELOADED_STATE__)\s*=\s*(?=[{\[])"
)
_PRICE_KEYS = ("price", "salePrice", "sale_price", "currentPrice", "current_price", "finalPrice", "final_price",
               "sellingPrice", "selling_price", "priceValue", "offerPrice", "specialPrice", "displayPrice")
_REGULAR_KEYS = ("regularPrice", "regular_price", "listPrice", "list_price", "originalPrice", "original_price",
                 "oldPrice", "old_price", "wasPrice", "was_price", "compareAtPrice", "compare_at_price",
                 "basePrice", "msrp", "rrp", "strikePrice", "strikethroughPrice")
_SKU_KEYS = ("sku", "SKU", "skuId", "sku_id", "productSku", "articleNumber", "productCode", "product_code",
             "itemNumber", "item_number", "partNumber")
_NAME_KEYS = ("name", "title", "productName", "product_name", "displayName")


def _state_payloads(tree) -> Iterator[Any]:
    for s in tree.css("script#__NEXT_DATA__, script[type='application/json']"):
        t = s.text(deep=True)
        if t and len(t) > 30 and ("rice" in t):
            try:
                yield orjson.loads(t)
            except orjson.JSONDecodeError:
                continue
    dec = json.JSONDecoder(strict=False)
    for s in tree.css("script:not([src])"):
        t = s.text(deep=True)
        if not t or "__" not in t or "rice" not in t:
            continue
        for m in _STATE_ASSIGN.finditer(t):
            try:
                obj, _ = dec.raw_decode(t, m.end())
            except ValueError:
                continue
            yield obj


def _iter_dicts(obj: Any, depth: int = 0) -> Iterator[tuple[dict, int]]:
    stack = [(obj, depth)]
    seen = 0
    while stack:
        o, d = stack.pop()
        seen += 1
        if seen > 200_000:
            return
        if isinstance(o, dict):
            yield o, d
            for v in o.values():
                if isinstance(v, (dict, list)):
                    stack.append((v, d + 1))
        elif isinstance(o, list):
            for v in o[:500]:
                if isinstance(v, (dict, list)):
                    stack.append((v, d + 1))


def state_records(tree) -> list[Record]:
    """Product-looking objects (a name and a price, often a sku) in embedded application state."""
    out: list[Record] = []
    for payload in _state_payloads(tree):
        for d, depth in _iter_dicts(payload):
            price = None
            for k in _PRICE_KEYS:
                if k in d:
                    v = d[k]
                    if isinstance(v, dict):
                        v = _get(v, "value", "amount", "raw", "price", "current", "sale")
                    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                        price = v
                        break
            if price is None:
                continue
            name = None
            for k in _NAME_KEYS:
                if isinstance(d.get(k), str):
                    name = d[k]
                    break
            sku = None
            for k in _SKU_KEYS:
                if isinstance(d.get(k), (str, int)) and not isinstance(d.get(k), bool):
                    sku = str(d[k])
                    break
            regular = None
            for k in _REGULAR_KEYS:
                v = d.get(k)
                if isinstance(v, dict):
                    v = _get(v, "value", "amount", "raw", "price")
                if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                    regular = v
                    break
            cur = d.get("currency") or d.get("currencyCode") or d.get("priceCurrency")
            if isinstance(cur, dict):
                cur = cur.get("iso_4217") or cur.get("code")
            rec = Record(source="state", type="state", name=name, sku=sku, depth=depth)
            rec.offers.append({
                "price": price, "currency": cur if isinstance(cur, str) else None, "low": None, "high": None,
                "availability": _text(d.get("availability") or d.get("stockStatus") or d.get("stock_status")),
                "regular": regular, "sku": None, "gtin": None, "url": None, "valid_until": None,
                "shipping": None, "aggregate": False, "item": None,
            })
            out.append(rec)
            if len(out) > 200:
                return out
    return out


def iter_records(*groups: Iterable[Record]) -> Iterator[Record]:
    for g in groups:
        yield from g
