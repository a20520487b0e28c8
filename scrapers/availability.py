"""Stock status: schema.org values, OpenGraph words and visible text in many languages."""

from __future__ import annotations

import re

from .fast_re import ends_with, guarded
from .types import Availability

__all__ = ["normalize_availability", "availability_from_text", "states_out_of_stock", "OUT_OF_STOCK_RE", "BACK_IN_STOCK_ALERT_RE", "IN_STOCK_RE"]

_SCHEMA = {
    "instock": Availability.IN_STOCK,
    "in_stock": Availability.IN_STOCK,
    "in stock": Availability.IN_STOCK,
    "available": Availability.IN_STOCK,
    "availableforpurchase": Availability.IN_STOCK,
    "true": Availability.IN_STOCK,
    "yes": Availability.IN_STOCK,
    "outofstock": Availability.OUT_OF_STOCK,
    "out_of_stock": Availability.OUT_OF_STOCK,
    "out of stock": Availability.OUT_OF_STOCK,
    "oos": Availability.OUT_OF_STOCK,
    "unavailable": Availability.OUT_OF_STOCK,
    "notavailable": Availability.OUT_OF_STOCK,
    "not available": Availability.OUT_OF_STOCK,
    "false": Availability.OUT_OF_STOCK,
    "soldout": Availability.SOLD_OUT,
    "sold": Availability.SOLD_OUT,  # a classified ad's status: "Status: SOLD"
    "not sold": Availability.IN_STOCK,  # ... and "Status: NOT SOLD", still for sale
    "unsold": Availability.IN_STOCK,
    "sold_out": Availability.SOLD_OUT,
    "sold out": Availability.SOLD_OUT,
    "discontinued": Availability.DISCONTINUED,
    "preorder": Availability.PRE_ORDER,
    "pre_order": Availability.PRE_ORDER,
    "pre-order": Availability.PRE_ORDER,
    "presale": Availability.PRE_ORDER,
    "presell": Availability.PRE_ORDER,
    "backorder": Availability.BACK_ORDER,
    "back_order": Availability.BACK_ORDER,
    "available for order": Availability.BACK_ORDER,
    "limitedavailability": Availability.LIMITED,
    "limited_availability": Availability.LIMITED,
    "limited availability": Availability.LIMITED,
    "instoreonly": Availability.IN_STORE_ONLY,
    "in_store_only": Availability.IN_STORE_ONLY,
    "onlineonly": Availability.ONLINE_ONLY,
    "online_only": Availability.ONLINE_ONLY,
}


def normalize_availability(value: object) -> Availability | None:
    """schema.org / OpenGraph availability value (``https://schema.org/InStock``, ``in stock``,
    ``OutOfStock``, ``oos``...) -> `Availability`, or None when it is not one of those."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return Availability.IN_STOCK if value else Availability.OUT_OF_STOCK
    s = str(value).strip()
    if not s:
        return None
    key = s.rsplit("/", 1)[-1].rsplit(":", 1)[-1].strip().lower()
    hit = _SCHEMA.get(key)
    if hit:
        return hit
    if len(s) < 40:
        return availability_from_text(s)
    return None


# Visible "out of stock" phrases. Kept to phrases that mean the product (not a delivery option) is gone.
_OOS_PHRASES = [
    # en
    r"out[\s-]of[\s-]stock", r"sold[\s-]?out", r"currently unavailable", r"no longer available",
    r"not available(?! (?:for|in|to|at|on))", r"temporarily unavailable", r"no stock", r"unavailable",
    r"not (?:currently |presently )?in stock", r"no longer in stock", r"not (?:currently|presently) available",
    r"item is no longer", r"this item has ended", r"discontinued",
    # es / pt / it / fr / de / nl
    r"agotad[oa]s?", r"sin stock", r"sin existencias", r"no disponible", r"fuera de stock",
    r"esgotad[oa]", r"indispon[ií]vel", r"sem estoque", r"fora de estoque", r"n[ãa]o dispon[ií]vel",
    r"esaurit[oa]", r"non disponibile", r"non disponible", r"[ée]puis[ée]e?", r"rupture de stock",
    r"plus disponible", r"en rupture", r"(?:actuellement |temporairement )?indisponible", r"momentaneamente non disponibile",
    r"temporalmente agotado", r"no hay stock", r"no est[áa] disponible", r"sem stock", r"nenhum stock", r"ausverkauft", r"nicht verf[üu]gbar", r"nicht lieferbar",
    r"nicht (?:mehr )?auf lager", r"derzeit nicht", r"uitverkocht", r"niet (?:meer )?(?:op voorraad|leverbaar|beschikbaar)",
    # nordic / baltic / central & eastern europe
    r"slutsåld", r"slut i lager", r"(?:ej|inte) i lager", r"ikke på lager", r"udsolgt", r"utsolgt", r"loppuunmyyty", r"ei varastossa", r"tilapäisesti loppu",
    r"brak w magazynie", r"niedostępny", r"wyprzedan[ya]", r"vyprodáno", r"není skladem", r"nie je skladom",
    r"vypredané", r"elfogyott", r"nincs készleten", r"stoc epuizat", r"indisponibil", r"nu (?:este|e) [îi]n stoc",
    r"rasprodano", r"nije dostup(?:an|no|na)", r"nema na zalihi", r"nije na zalihi", r"nema na stanju", r"razprodano", r"ni na zalogi", r"išparduota", r"nėra sandėlyje",
    r"nav noliktavā", r"izpārdots", r"otsas", r"laost otsas", r"pole (?:hetkel |enam )?saadaval", r"tükendi", r"stokta yok",
    r"εξαντλήθηκε", r"μη διαθέσιμο",
    # cyrillic
    r"нет в наличии", r"немає в наявності", r"распродано", r"товар закончился", r"закончился",
    r"нет на складе", r"нет в продаже", r"отсутствует", r"няма наличност", r"изчерпан",
    # cjk / other
    r"在庫切れ", r"売り切れ", r"品切れ", r"缺货", r"缺貨", r"售罄", r"已售完", r"售完", r"품절", r"일시품절",
    r"재고 ?없음", r"สินค้าหมด", r"hết hàng", r"stok habis", r"habis", r"אזל מהמלאי", r"אזל", r"(?:אינו|לא|חסר) במלאי", r"نفدت الكمية",
    r"غير متوفر", r"نفذت الكمية", r"ناموجود",
]
OUT_OF_STOCK_RE = re.compile(r"(?<![\w-])(?:" + "|".join(_OOS_PHRASES) + r")(?![\w-])", re.I)

_IN_PHRASES = [
    r"in stock", r"available", r"add to (?:cart|bag|basket|trolley)", r"buy now", r"en stock", r"disponible",
    r"en existencia", r"em estoque", r"dispon[ií]vel", r"disponibile", r"auf lager", r"lieferbar",
    r"sofort verfügbar", r"op voorraad", r"na stanie", r"dostępny", r"skladem", r"raktáron", r"în stoc",
    r"в наличии", r"є в наявності", r"在庫あり", r"有货", r"有貨", r"재고 ?있음", r"laos", r"noliktavā",
    r"sandėlyje", r"stokta", r"på lager", r"varastossa", r"ajouter au panier", r"añadir al carrito",
    r"in den warenkorb", r"aggiungi al carrello", r"adicionar ao carrinho", r"comprar", r"kaufen", r"acheter",
    r"do koszyka", r"в корзину", r"купить",
]
IN_STOCK_RE = re.compile(r"(?<![\w-])(?:" + "|".join(_IN_PHRASES) + r")(?![\w-])", re.I)
_NEGATED_IN = re.compile(r"\b(?:not|no|nicht|non|pas|sin|sem|nie|ne|не|нет)\s+(?:\w+\s+)?$", re.I)


# "tell me when it is back": offered only for a product that cannot be bought now
BACK_IN_STOCK_ALERT_RE = re.compile(
    r"notify me|email me when|e-mail me when|alert me when|back in stock|when (?:it is |it's )?available again|"
    r"benachrichtig|wieder verfügbar|avísame|avisame|av[íi]seme|m'avertir|me prévenir|prévenez-moi|"
    r"m'alerter|avvisami|avvertimi|avise-me|me avise|powiadom|upozornit|értesítsen|anunță-mă|anunta-ma|"
    r"сообщить о поступлении|уведомить о поступлении|сообщить о наличии|入荷お知らせ|入荷通知|到货通知|"
    r"재입고 알림",
    re.I,
)

_WEAK_BEFORE = re.compile(
    r"(?:image|imagen|bild|photo|foto|picture|colou?r|size|talla|taille|größe|taglia|tamanho|delivery|shipping|"
    r"envío|livraison|lieferung|store|shop|tienda|magasin|filiale|click|collect|pickup|retrait|recogida|"
    r"option|variant|combination|combinación)\W{0,3}(?:\w+\W{1,3}){0,2}$",
    re.I,
)

# the same tests, faster (`fast_re`: same answers)
_OUT_OF_STOCK_FINDITER = guarded(OUT_OF_STOCK_RE).finditer
_IN_STOCK_SEARCH = guarded(IN_STOCK_RE).search
_NEGATED_IN_END = ends_with(_NEGATED_IN)
_WEAK_BEFORE_END = ends_with(_WEAK_BEFORE)


def availability_from_text(text: str | None, *, strict: bool = False) -> Availability | None:
    """Status a short visible text states ("Agotado", "Nicht verfügbar", "In stock"), or None.

    `strict` ignores out-of-stock words that follow a word about something else than the product
    (image, colour, size, delivery, store pickup)."""
    if not text:
        return None
    t = " ".join(text.split())
    if not t:
        return None
    for m in _OUT_OF_STOCK_FINDITER(t):
        if strict and _WEAK_BEFORE_END(t[max(0, m.start() - 40):m.start()]):
            continue  # "Image unavailable", "Colour not available", "Store pickup unavailable"
        return Availability.OUT_OF_STOCK
    m = _IN_STOCK_SEARCH(t)
    if m and not _NEGATED_IN_END(t[: m.start()]):
        return Availability.IN_STOCK
    return None


def states_out_of_stock(text: str | None) -> bool:
    """Whether a (long) visible text says somewhere that a product is out of stock, ignoring the words
    about an image, a colour, a size or a delivery option (as `availability_from_text(strict=True)`)."""
    if not text:
        return False
    for m in _OUT_OF_STOCK_FINDITER(text):
        if not _WEAK_BEFORE_END(text[max(0, m.start() - 40):m.start()]):
            return True
    return False
