"""Cross-shop product matching: is rival A's "Nike Pegasus 41 M 42" the manager's own SKU NP41-42?

A pure module (no database, no I/O). Evidence, strongest first:

1. **GTIN** (EAN/UPC/ITF-14). GTIN-8/12/13/14 are zero-padded to 14 digits and their check digit is
   validated; an invalid GTIN is ignored. Equal GTINs are a match; two *different* valid GTINs are a
   non-match (each size / colour / pack of a product has its own GTIN).
2. **SKU / MPN**: equal manufacturer part numbers (or a SKU equal to the other side's SKU or MPN) are a
   match unless the titles contradict each other (MPNs such as Nike style codes are shared by all sizes,
   so a size conflict in the titles still wins). Two different MPNs are a non-match.
3. **Title**: normalised titles compared with rapidfuzz, after *hard constraints* that must agree:
   brand, sizes (42, 42.5, XL), quantities and capacities (500 ml, 1 kg, 256GB, 15.6"), colours,
   pack counts ("2-pack", "x2", "set of 3", "6 x 330ml") and bundles, gender, model-variant words
   (Pro, Max, Plus, Ultra, Mini...), accessory-for ("case for iPhone 15") and refurbished condition, and
   the numbers / model codes (Pegasus 40 vs 41, S23 vs S24). When one title states an attribute and the
   other is silent, the pair is not vetoed but the confidence drops.

`MatchResult.confidence` is how sure we are that the two refs are the same product (0..1): high for a
match, low for a non-match. The default title threshold was chosen for precision (see bench/matching.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

from rapidfuzz import fuzz

__all__ = [
    "ProductRef", "MatchResult", "TitleFeatures", "match", "best_match", "normalize_gtin",
    "normalize_code", "title_features", "DEFAULT_THRESHOLD",
]

Method = Literal["gtin", "sku", "mpn", "title", "none"]

#: Minimum title confidence for `match` to call two refs the same product.
DEFAULT_THRESHOLD = 0.75


@dataclass(frozen=True)
class ProductRef:
    """What we know about one product on one shop."""

    title: str
    gtin: str | None = None
    sku: str | None = None
    mpn: str | None = None
    brand: str | None = None


@dataclass(frozen=True)
class MatchResult:
    is_match: bool
    confidence: float   # 0..1, how likely the two refs are the same product
    method: Method      # the evidence that decided
    reason: str         # human-readable, for `tracker match --review`


# --------------------------------------------------------------------------------------------- GTIN / codes

def _gtin_check_ok(digits: str) -> bool:
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def normalize_gtin(value: str | int | None) -> str | None:
    """GTIN-8/12/13/14 as 14 digits, or None when it is not a valid GTIN (length or check digit)."""
    if value is None:
        return None
    digits = re.sub(r"[\s\-.]", "", str(value))
    if not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        return None
    if set(digits) == {"0"} or not _gtin_check_ok(digits):
        return None
    return digits.zfill(14)


def normalize_code(value: str | None) -> str | None:
    """SKU / MPN for comparison: upper-case alphanumerics only; None when too short to be meaningful."""
    if not value:
        return None
    code = re.sub(r"[^0-9A-Za-z]", "", _fold(value)).upper()
    if len(code) < 4 or len(set(code)) == 1:
        return None
    return code


# --------------------------------------------------------------------------------------------- text features

def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).replace("ß", "ss")


_COLOURS = {
    "black": "black", "negro": "black", "negra": "black", "schwarz": "black", "noir": "black",
    "noire": "black", "nero": "black", "preto": "black", "zwart": "black", "onyx": "black",
    "white": "white", "blanco": "white", "blanca": "white", "weiss": "white", "blanc": "white",
    "blanche": "white", "bianco": "white", "branco": "white", "wit": "white",
    "red": "red", "rojo": "red", "roja": "red", "rot": "red", "rouge": "red", "rosso": "red",
    "vermelho": "red", "blue": "blue", "azul": "blue", "blau": "blue", "bleu": "blue", "blu": "blue",
    "navy": "navy", "marino": "navy", "green": "green", "verde": "green", "grun": "green",
    "vert": "green", "olive": "olive", "khaki": "khaki", "grey": "grey", "gray": "grey", "gris": "grey",
    "grau": "grey", "grigio": "grey", "cinza": "grey", "anthracite": "grey", "antracita": "grey",
    "charcoal": "grey", "graphite": "graphite", "silver": "silver", "plata": "silver",
    "silber": "silver", "argent": "silver", "argento": "silver", "gold": "gold", "oro": "gold",
    "dorado": "gold", "or": None, "pink": "pink", "rosa": "pink", "rose": "pink", "purple": "purple",
    "violet": "purple", "lila": "purple", "morado": "purple", "viola": "purple", "yellow": "yellow",
    "amarillo": "yellow", "gelb": "yellow", "jaune": "yellow", "giallo": "yellow", "orange": "orange",
    "naranja": "orange", "arancione": "orange", "brown": "brown", "marron": "brown", "braun": "brown",
    "beige": "beige", "cream": "beige", "ivory": "beige", "turquoise": "turquoise", "teal": "teal",
    "bronze": "bronze", "copper": "copper", "midnight": "midnight", "starlight": "starlight",
    "sage": "sage", "lavender": "lavender", "mint": "mint", "coral": "coral", "burgundy": "burgundy",
}
_COLOURS = {k: v for k, v in _COLOURS.items() if v}

_GENDER = {
    "men": "m", "mens": "m", "man": "m", "hombre": "m", "herren": "m", "homme": "m", "uomo": "m",
    "masculino": "m", "women": "w", "womens": "w", "woman": "w", "ladies": "w", "mujer": "w",
    "damen": "w", "femme": "w", "donna": "w", "feminino": "w", "kids": "k", "junior": "k", "nino": "k",
    "kinder": "k", "enfant": "k", "boys": "k", "girls": "k", "unisex": "u",
}

# words that make a different model / flavour when only one title has them
_VARIANT_WORDS = {"pro", "max", "plus", "ultra", "mini", "lite", "se", "fe", "edge", "slim", "neo",
                  "zero", "light", "diet", "decaf", "reduced", "sugarfree", "organic", "bio", "vegan",
                  "solo"}

# an accessory for a product ("iPhone 15 Silicone Case") is not the product
_ACCESSORY_WORDS = {"case", "cover", "protector", "charger", "strap", "adapter", "funda", "hulle",
                    "coque", "etui", "skin", "holder", "mount", "compatible", "kompatibel", "compatibile",
                    "replacement", "spare", "ersatz", "recambio"}
_REFURB = {"refurbished", "renewed", "reacondicionado", "generalueberholt", "generaluberholt",
           "reconditionne", "ricondizionato", "used", "second-hand", "b-ware", "open-box"}
_BUNDLE = {"bundle", "combo", "+", "kit", "pack-bundle", "lote"}
_STOPWORDS = {"the", "a", "an", "and", "with", "de", "del", "la", "el", "los", "las", "le", "les", "des",
              "du", "der", "die", "das", "und", "mit", "y", "et", "con", "avec", "in", "en", "of", "-",
              "/", "|", ",", "new", "nuevo", "neu", "nouveau", "by", "for", "para", "pour", "fur", "gen",
              "generation", "edition", "version", "original", "genuine", "official", "authentic"}
_SIZE_WORDS = {"size", "talla", "taille", "grosse", "gr", "eu", "uk", "us", "fr", "it", "t", "sz",
               "numero", "num"}
_LETTER_SIZES = {"xxs": "xxs", "xs": "xs", "xl": "xl", "xxl": "xxl", "xxxl": "xxxl", "2xl": "xxl",
                 "3xl": "xxxl", "4xl": "4xl", "5xl": "5xl",
                 # battery sizes
                 "aa": "aa", "aaa": "aaa", "aaaa": "aaaa", "lr6": "aa", "lr03": "aaa", "mignon": "aa",
                 "micro": "aaa"}
_AMBIGUOUS_LETTER_SIZES = {"s", "m", "l"}

# number + unit -> (dimension, factor to the canonical unit)
_UNITS: dict[str, tuple[str, Decimal]] = {
    "ml": ("volume", Decimal(1)), "cl": ("volume", Decimal(10)), "dl": ("volume", Decimal(100)),
    "l": ("volume", Decimal(1000)), "ltr": ("volume", Decimal(1000)), "litre": ("volume", Decimal(1000)),
    "liter": ("volume", Decimal(1000)), "litros": ("volume", Decimal(1000)),
    "litres": ("volume", Decimal(1000)), "liters": ("volume", Decimal(1000)),
    "floz": ("floz", Decimal(1)), "oz": ("oz", Decimal(1)),
    "mg": ("mass", Decimal("0.001")), "g": ("mass", Decimal(1)), "gr": ("mass", Decimal(1)),
    "grs": ("mass", Decimal(1)), "kg": ("mass", Decimal(1000)), "lb": ("lb", Decimal(1)),
    "lbs": ("lb", Decimal(1)),
    "mb": ("storage", Decimal("0.001")), "gb": ("storage", Decimal(1)), "tb": ("storage", Decimal(1000)),
    "mah": ("battery", Decimal(1)), "wh": ("energy", Decimal(1)), "w": ("power", Decimal(1)),
    "kw": ("power", Decimal(1000)), "v": ("voltage", Decimal(1)), "hz": ("freq", Decimal(1)),
    "mm": ("length", Decimal("0.1")), "cm": ("length", Decimal(1)), "m": ("length", Decimal(100)),
    "inch": ("inch", Decimal(1)), "inches": ("inch", Decimal(1)), "in": ("inch", Decimal(1)),
    "zoll": ("inch", Decimal(1)), "pulgadas": ("inch", Decimal(1)), "pouces": ("inch", Decimal(1)),
    "mp": ("megapixel", Decimal(1)), "tabs": ("count", Decimal(1)), "tablets": ("count", Decimal(1)),
    "capsules": ("count", Decimal(1)), "caps": ("count", Decimal(1)), "pods": ("count", Decimal(1)),
    "sheets": ("count", Decimal(1)), "rolls": ("rolls", Decimal(1)),
}
_NUM = r"\d+(?:[.,]\d+)?"
_QTY_RE = re.compile(
    rf"(?<![\w.,])({_NUM})\s?(fl\.?\s?oz|{'|'.join(sorted((u for u in _UNITS if u != 'floz'), key=len, reverse=True))})"
    r"(?![\w])", re.I)
# "m" (metres) and "l" (litres) only when written attached to the number ("2m", "1.5l" / "1 l" is ok for l)
_PACK_RES = [
    re.compile(r"(?<![\w.,])(\d{1,3})\s?-?\s?(?:pack|pk|pcs|pieces|piece|stuck|st|unidades|uds|ud|er\s?pack|"
               r"er-pack|er|count|ct|units)(?!\w)", re.I),
    re.compile(r"(?:pack|set|lot|lote|paquete|pack de|pack of|set of|lot de|box of|case of|caja de)"
               r"\s(?:de\s|of\s)?(\d{1,3})(?!\w)", re.I),
    re.compile(r"(?<![\w.,])x\s?(\d{1,3})(?![\w.,])", re.I),                 # "x2", "x 6"
    re.compile(r"(?<![\w.,])(\d{1,3})\s?x(?=\s|$)(?!\s*\d+\s*$)", re.I),   # "2x " (not "2x1" promos)
    re.compile(r"(?<![\w.,])(\d{1,3})\s?x\s?(?=\d)", re.I),                 # "6 x 330ml"
]
_WORD_PACKS = {"twin": 2, "duo": 2, "double": 2, "triple": 3, "trio": 3, "pair": 2, "pareja": 2}
_NETWORK_RE = re.compile(r"(?<![\w.])([2-6])g(?![\w])", re.I)  # 5G / 4G are networks, not grams
_INCH_RE = re.compile(rf"({_NUM})\s?(?:\"|''|”|″|-inch|-in\b|-zoll)", re.I)
_FRACTION_RE = re.compile(r"(\d+)\s?(?:1/2|½)")
_ORDINAL_RE = re.compile(r"(?<![\w.])(\d+)(?:st|nd|rd|th|eme|º|ª)(?![\w])", re.I)
_YEAR_RE = re.compile(r"(?:19|20)\d\d")
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[.][0-9]+)?|\+", re.I)


def _dec(text: str) -> Decimal:
    try:
        return Decimal(text.replace(",", "."))
    except InvalidOperation:
        return Decimal(0)


def _fmt(d: Decimal) -> str:
    s = format(d.normalize(), "f")
    return s


@dataclass(frozen=True)
class TitleFeatures:
    """What `match` compares between two titles (exposed for debugging and the review UI)."""

    text: str                                         # normalised title (quantities canonicalised)
    core: str                                         # text without colours / gender / stopwords
    tokens: tuple[str, ...]
    quantities: dict[str, frozenset[str]] = field(default_factory=dict)   # dimension -> values
    colours: frozenset[str] = frozenset()
    letter_sizes: frozenset[str] = frozenset()
    gender: frozenset[str] = frozenset()
    pack: int | None = None                           # None = not stated (means 1)
    bundle: bool = False
    variants: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()             # numeric tokens and model codes
    accessory_for: bool = False
    refurbished: bool = False


def title_features(title: str) -> TitleFeatures:
    t = _fold(title).lower()
    t = t.replace("’", "'").replace("'s", "s").replace("&", " and ")
    t = _FRACTION_RE.sub(lambda m: f"{m.group(1)}.5", t)
    t = _ORDINAL_RE.sub(lambda m: m.group(1), t)
    quantities: dict[str, set[str]] = {}

    def add_q(dim: str, value: Decimal) -> str:
        v = _fmt(value)
        quantities.setdefault(dim, set()).add(v)
        return f" q{dim}{v} "

    # inch marks first ("15.6\""), then number+unit
    t = _INCH_RE.sub(lambda m: add_q("inch", _dec(m.group(1))), t)
    t = _NETWORK_RE.sub(lambda m: f" net{m.group(1)}g ", t)

    pack: int | None = None
    packs: list[int] = []
    for rx in _PACK_RES:
        def take(m: re.Match[str]) -> str:
            packs.append(int(m.group(1)))
            return " "
        t = rx.sub(take, t)

    def unit_sub(m: re.Match[str]) -> str:
        unit = re.sub(r"[\s.]", "", m.group(2).lower())
        if unit in ("m",) and re.search(r"\s", m.group(0)):
            return m.group(0)  # "41 M 42": a gender / size letter, not metres
        dim, factor = _UNITS[unit]
        return add_q(dim, _dec(m.group(1)) * factor)

    t = _QTY_RE.sub(unit_sub, t)
    tokens = _TOKEN_RE.findall(t)
    for word, n in _WORD_PACKS.items():
        if word in tokens and ("pack" in t or word in ("twin", "duo", "trio", "pair")):
            packs.append(n)
    if packs:
        pack = max(packs)

    colours = {_COLOURS[w] for w in tokens if w in _COLOURS}
    gender: set[str] = {_GENDER[w] for w in tokens if w in _GENDER}
    letter_sizes: set[str] = {_LETTER_SIZES[w] for w in tokens if w in _LETTER_SIZES}
    numbers: set[str] = set()
    skip_idx: set[int] = set()
    for i, w in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        prev = tokens[i - 1] if i > 0 else None
        if w in ("m", "w") and nxt is not None and re.fullmatch(r"\d+(\.\d+)?", nxt):
            gender.add(w)                      # "Pegasus 41 M 42": men's size 42
            skip_idx.add(i)
        elif w in _AMBIGUOUS_LETTER_SIZES and (prev in _SIZE_WORDS or nxt is None):
            letter_sizes.add(w)
            skip_idx.add(i)
        if w.startswith("q") and any(w.startswith("q" + d) for d in quantities):
            skip_idx.add(i)
        elif re.search(r"\d", w) and not w.startswith("net") and not _YEAR_RE.fullmatch(w):
            numbers.add(w)
    variants = {w for w in tokens if w in _VARIANT_WORDS}
    accessory_for = any(w in _ACCESSORY_WORDS for w in tokens)
    refurbished = any(w in _REFURB for w in tokens) or "second hand" in t
    bundle = any(w in _BUNDLE for w in tokens)
    core_tokens = [w for i, w in enumerate(tokens)
                   if i not in skip_idx and w not in _COLOURS and w not in _GENDER
                   and w not in _STOPWORDS and w not in _SIZE_WORDS and w not in _LETTER_SIZES]
    return TitleFeatures(
        text=" ".join(tokens), core=" ".join(core_tokens), tokens=tuple(tokens),
        quantities={k: frozenset(v) for k, v in quantities.items()}, colours=frozenset(colours),
        letter_sizes=frozenset(letter_sizes), gender=frozenset(gender), pack=pack, bundle=bundle,
        variants=frozenset(variants), numbers=frozenset(numbers), accessory_for=accessory_for,
        refurbished=refurbished,
    )


# --------------------------------------------------------------------------------------------- comparisons

_BRAND_SUFFIX = re.compile(r"\b(inc|ltd|llc|gmbh|ag|sa|s\.a|srl|bv|co|corp|corporation|company)\.?$")


def _norm_brand(brand: str | None) -> str | None:
    if not brand:
        return None
    b = _fold(brand).lower().strip()
    b = _BRAND_SUFFIX.sub("", b).strip(" ,.")
    b = re.sub(r"[^a-z0-9]+", "", b)
    return b or None


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text)


def _brand_check(a: ProductRef, b: ProductRef, fa: TitleFeatures, fb: TitleFeatures) -> tuple[bool | None, str]:
    """True: brands agree; False: they conflict (veto); None: cannot tell."""
    ba, bb = _norm_brand(a.brand), _norm_brand(b.brand)
    if ba and bb:
        if ba == bb or ba.startswith(bb) or bb.startswith(ba):
            return True, f"brand {a.brand!r} = {b.brand!r}"
        if fuzz.ratio(ba, bb) >= 90:
            return True, f"brand {a.brand!r} ~ {b.brand!r}"
        return False, f"brands differ ({a.brand!r} vs {b.brand!r})"
    ca, cb = _compact(fa.text), _compact(fb.text)
    if ba or bb:
        brand, other, other_title = (ba, cb, b.title) if ba else (bb, ca, a.title)
        if brand in other:
            return True, "brand found in the other title"
        first = _compact(fb.tokens[0] if ba else fa.tokens[0]) if (fb.tokens if ba else fa.tokens) else ""
        return None, f"brand {brand!r} not in {other_title!r} (first word {first!r})"
    # no brand field: the first word of one title must appear in the other
    if fa.tokens and fb.tokens:
        if fa.tokens[0] == fb.tokens[0]:
            return True, f"same first word {fa.tokens[0]!r}"
        if fa.tokens[0] in fb.tokens[:4] or fb.tokens[0] in fa.tokens[:4]:
            return True, "brand word found in both titles"
    return None, "brand unknown"


def _set_conflict(x: frozenset[str], y: frozenset[str]) -> bool:
    """Both stated and neither contains the other ({black} vs {black, white} is fine)."""
    return bool(x) and bool(y) and not (x <= y or y <= x)


def _storage_equal(x: frozenset[str], y: frozenset[str]) -> bool:
    def widen(vals: frozenset[str]) -> set[Decimal]:
        out = set()
        for v in vals:
            d = Decimal(v)
            out.add(d)
            if d >= 1000:
                out.add(d * Decimal("1.024"))
        return out
    wx, wy = widen(x), widen(y)
    return bool(wx & wy) and (x <= y or y <= x or len(x) == len(y) == 1)


def _mentions(f: TitleFeatures) -> set[str]:
    """Every number a title states, in any role (token, quantity, pack count)."""
    out = {n for n in f.numbers}
    for vals in f.quantities.values():
        out |= set(vals)
    if f.pack:
        out.add(str(f.pack))
    return out


def _unshared_numbers(mine: TitleFeatures, theirs: TitleFeatures) -> list[str]:
    their_compact = _compact(theirs.text)
    their_all = _mentions(theirs)
    out = []
    for i, n in enumerate(mine.tokens):
        if n not in mine.numbers or n in theirs.numbers:
            continue
        if n in their_all:
            continue  # "174 nappies" vs "174 count"
        if len(n) >= 4 and not n.isdigit() and n in their_compact:
            continue  # "wh1000xm5" vs "wh 1000xm5"
        if n.isdigit() and len(n) >= 4 and n in their_compact:
            continue
        joined = [mine.tokens[i - 1] + n] if i > 0 else []
        if i + 1 < len(mine.tokens):
            joined.append(n + mine.tokens[i + 1])
        if any(j in theirs.numbers for j in joined):
            continue  # "fusion 5" vs "fusion5"
        out.append(n)
    return out


def _numbers_conflict(fa: TitleFeatures, fb: TitleFeatures) -> tuple[str, str] | None:
    """Numbers / model codes that each side has and the other lacks: Pegasus 40 vs 41, S23 vs S24."""
    xa = _unshared_numbers(fa, fb)
    xb = _unshared_numbers(fb, fa)
    if xa and xb:
        return ",".join(sorted(set(xa))), ",".join(sorted(set(xb)))
    return None


def _shared_code(fa: TitleFeatures, fb: TitleFeatures) -> str | None:
    """A distinctive model code both titles carry (letters and digits, >= 4 chars): "hx6800", "qn90d"."""
    ca, cb = _compact(fa.text), _compact(fb.text)
    for n in sorted(fa.numbers | fb.numbers, key=len, reverse=True):
        if len(n) >= 4 and re.search(r"[a-z]", n) and re.search(r"\d", n) and "." not in n \
                and n in ca and n in cb:
            return n
    return None


def _title_vetoes(fa: TitleFeatures, fb: TitleFeatures, brands: frozenset[str] = frozenset()) -> list[str]:
    vetoes: list[str] = []
    for dim in set(fa.quantities) & set(fb.quantities):
        qa, qb = fa.quantities[dim], fb.quantities[dim]
        if dim == "storage":
            if not _storage_equal(qa, qb):
                vetoes.append(f"{dim} differs ({'/'.join(sorted(qa))} vs {'/'.join(sorted(qb))})")
        elif _set_conflict(qa, qb):
            vetoes.append(f"{dim} differs ({'/'.join(sorted(qa))} vs {'/'.join(sorted(qb))})")
    if (fa.pack or 1) != (fb.pack or 1):
        # "174 Nappies" vs "174 Count": the silent side mentions the count
        silent = fb if fa.pack else fa
        stated = fa.pack or fb.pack
        if not (fa.pack and fb.pack) and str(stated) in _mentions(silent):
            pass
        else:
            vetoes.append(f"pack count differs ({fa.pack or 1} vs {fb.pack or 1})")
    if fa.bundle != fb.bundle:
        vetoes.append("one is a bundle")
    if _set_conflict(fa.colours, fb.colours):
        vetoes.append(f"colour differs ({'/'.join(sorted(fa.colours))} vs {'/'.join(sorted(fb.colours))})")
    if _set_conflict(fa.letter_sizes, fb.letter_sizes):
        vetoes.append(f"size differs ({'/'.join(sorted(fa.letter_sizes))} vs "
                      f"{'/'.join(sorted(fb.letter_sizes))})")
    if fa.gender and fb.gender and not (fa.gender & fb.gender) and "u" not in fa.gender | fb.gender:
        vetoes.append("gender differs")
    if fa.variants != fb.variants:
        vetoes.append(f"model variant differs ({' '.join(sorted(fa.variants)) or '-'} vs "
                      f"{' '.join(sorted(fb.variants)) or '-'})")
    if fa.accessory_for != fb.accessory_for:
        vetoes.append("one is an accessory for the other")
    if fa.refurbished != fb.refurbished:
        vetoes.append("condition differs (refurbished)")
    nums = _numbers_conflict(fa, fb)
    if nums:
        vetoes.append(f"model numbers / sizes differ ({nums[0]} vs {nums[1]})")
    sub = _substitution(fa, fb, brands)
    if sub:
        vetoes.append(f"sibling products: one word differs ({sub[0]} vs {sub[1]})")
    return vetoes


def _substitution(fa: TitleFeatures, fb: TitleFeatures, brands: frozenset[str]) -> tuple[str, str] | None:
    """Titles that share everything but one or two words on each side ("Vertuo Pop" vs "Vertuo Next",
    "QuietComfort Ultra Headphones" vs "... Earbuds") name sibling products, not the same one."""
    wa = [w for w in _words(fa) if w not in brands]
    wb = [w for w in _words(fb) if w not in brands]
    sa, sb = set(wa), set(wb)
    only_a = [w for w in wa if w not in sb and not any(len(w) >= 5 and fuzz.ratio(w, x) >= 85 for x in sb)]
    only_b = [w for w in wb if w not in sa and not any(len(w) >= 5 and fuzz.ratio(w, x) >= 85 for x in sa)]
    if only_a and only_b and len(only_a) <= 2 and len(only_b) <= 2 and len(sa & sb) >= 2:
        return " ".join(only_a), " ".join(only_b)
    return None


def _one_sided(fa: TitleFeatures, fb: TitleFeatures) -> list[str]:
    """Attributes one title states and the other does not: no veto, but less confidence."""
    out = []
    for dim in set(fa.quantities) ^ set(fb.quantities):
        out.append(dim)
    if bool(fa.colours) != bool(fb.colours):
        out.append("colour")
    if bool(fa.letter_sizes) != bool(fb.letter_sizes):
        out.append("size")
    if bool(fa.gender) != bool(fb.gender):
        out.append("gender")
    extra = sorted(set(_unshared_numbers(fa, fb)) | set(_unshared_numbers(fb, fa)))
    if extra:
        out.append("number " + ",".join(extra))
    return out


def _words(f: TitleFeatures) -> list[str]:
    return [w for w in f.core.split() if not re.search(r"\d", w) and len(w) > 1]


def _title_similarity(fa: TitleFeatures, fb: TitleFeatures) -> float:
    """Word similarity (numbers and codes are checked separately): how much of the shorter title the
    longer one covers (word by word, fuzzy), blended with rapidfuzz's token_sort_ratio."""
    wa, wb = _words(fa), _words(fb)
    if not wa or not wb:
        return fuzz.token_sort_ratio(fa.core, fb.core) / 100.0
    short, long_ = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    covered = 0
    for w in short:
        if w in long_ or any(len(w) >= 5 and fuzz.ratio(w, x) >= 85 for x in long_):
            covered += 1
    coverage = covered / len(short)
    s_sort = fuzz.token_sort_ratio(" ".join(wa), " ".join(wb)) / 100.0
    return 0.6 * coverage + 0.4 * s_sort


# --------------------------------------------------------------------------------------------- public API

def match(a: ProductRef, b: ProductRef, *, threshold: float = DEFAULT_THRESHOLD) -> MatchResult:
    """Decide whether two product refs from different shops are the same product."""
    fa, fb = title_features(a.title or ""), title_features(b.title or "")
    brands = frozenset(w for ref in (a, b) if ref.brand
                       for w in re.findall(r"[a-z0-9]+", _fold(ref.brand).lower()))
    vetoes = _title_vetoes(fa, fb, brands)
    notes: list[str] = []

    # 1. GTIN
    ga, gb = normalize_gtin(a.gtin), normalize_gtin(b.gtin)
    for raw, norm in ((a.gtin, ga), (b.gtin, gb)):
        if raw and not norm:
            notes.append(f"ignored invalid GTIN {raw!r}")
    if ga and gb:
        if ga == gb:
            return MatchResult(True, 0.99, "gtin", f"same GTIN {ga}")
        return MatchResult(False, 0.02, "gtin", f"different GTINs ({ga} vs {gb})")

    brand_ok, brand_reason = _brand_check(a, b, fa, fb)

    # 2. MPN / SKU
    ma, mb = normalize_code(a.mpn), normalize_code(b.mpn)
    sa, sb = normalize_code(a.sku), normalize_code(b.sku)
    code_hit: tuple[Method, str] | None = None
    if ma and mb and ma == mb:
        code_hit = ("mpn", f"same MPN {ma}")
    elif ma and mb and (ma.startswith(mb) or mb.startswith(ma)) and min(len(ma), len(mb)) >= 5:
        code_hit = ("mpn", f"MPN {ma} ~ {mb}")
    elif sa and sb and sa == sb:
        code_hit = ("sku", f"same SKU {sa}")
    elif (sa and sa in (mb,)) or (sb and sb in (ma,)):
        code_hit = ("mpn", f"SKU equals the other side's MPN ({sa or sb})")
    if code_hit:
        if brand_ok is False:
            return MatchResult(False, 0.1, code_hit[0], f"{code_hit[1]} but {brand_reason}")
        if vetoes:
            return MatchResult(False, 0.1, code_hit[0], f"{code_hit[1]} but {'; '.join(vetoes)}")
        conf = 0.95 if code_hit[0] == "mpn" else 0.9
        return MatchResult(True, conf, code_hit[0], "; ".join([code_hit[1], *notes]))
    if ma and mb and ma != mb:
        return MatchResult(False, 0.05, "mpn", f"different MPNs ({ma} vs {mb})")
    # an MPN written in the other title ("Sony WH-1000XM5 ..." with mpn WH1000XM5) is good evidence
    mpn_in_title = bool((ma and ma.lower() in _compact(fb.text)) or (mb and mb.lower() in _compact(fa.text)))

    # 3. Title
    if not fa.tokens or not fb.tokens:
        return MatchResult(False, 0.0, "none", "no title to compare")
    sim = _title_similarity(fa, fb)
    if brand_ok is False:
        return MatchResult(False, round(min(sim, 0.3), 3), "title", brand_reason)
    if vetoes:
        return MatchResult(False, round(min(sim * 0.3, 0.3), 3), "title", "; ".join(vetoes))
    one_sided = _one_sided(fa, fb)
    conf = sim
    conf -= 0.04 * min(len(one_sided), 3)
    if brand_ok is None:
        conf -= 0.1
    if mpn_in_title:
        conf += 0.1
    code = _shared_code(fa, fb)
    if code:
        conf += 0.15 if len(code) >= 6 else 0.1
    conf = max(0.0, min(conf, 0.95))
    reason = f"title similarity {sim:.2f}; {brand_reason}"
    if one_sided:
        reason += f"; only one title states: {', '.join(one_sided)}"
    if mpn_in_title:
        reason += "; MPN found in the other title"
    if code:
        reason += f"; same model code {code!r}"
    if notes:
        reason += "; " + "; ".join(notes)
    return MatchResult(conf >= threshold, round(conf, 3), "title", reason)


def best_match(ref: ProductRef, candidates: Sequence[ProductRef], *,
               threshold: float = DEFAULT_THRESHOLD) -> tuple[int, MatchResult] | None:
    """The candidate that matches `ref` with the highest confidence (>= threshold), or None.

    On equal confidence the earlier candidate wins.
    """
    best: tuple[int, MatchResult] | None = None
    for i, cand in enumerate(candidates):
        res = match(ref, cand, threshold=threshold)
        if not res.is_match or res.confidence < threshold:
            continue
        if best is None or res.confidence > best[1].confidence:
            best = (i, res)
    return best
