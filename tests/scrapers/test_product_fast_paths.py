"""The fast forms of the product rules' text tests give exactly the answers of the patterns they stand for."""

from __future__ import annotations

import random
import re
import sys

import pytest

import scrapers.product as P

_WORDS = re.compile(r"[^\W\d_]+")


def _corpus(pattern: re.Pattern, n: int, seed: int) -> list[str]:
    """Random texts made of the pattern's own words (cut, cased, glued) and of characters around them."""
    rnd = random.Random(seed)
    words = _WORDS.findall(pattern.pattern) + ["x", "×", "de", "à partir de", "list price", "4 x", "2x"]
    chars = list(" \n\t\u00a0:.,-/%$€0123456789xX×aZéßıİſK") + ["", " ", " ", ": "]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(0, 6)):
            r = rnd.random()
            if r < 0.5:
                w = rnd.choice(words)
                if rnd.random() < 0.3:
                    w = w.upper() if rnd.random() < 0.5 else w.title()
                if rnd.random() < 0.2 and len(w) > 2:
                    i = rnd.randrange(len(w))
                    w = w[i:] if rnd.random() < 0.5 else w[:i]
                parts.append(w)
            else:
                parts.append("".join(rnd.choice(chars) for _ in range(rnd.randint(1, 3))))
        out.append("".join(parts))
    return out


@pytest.mark.parametrize("name", ["_STRIKE_BEFORE", "_BEFORE_PENALTY"])
def test_end_anchored_pattern_matched_backwards_agrees_with_its_search(name):
    pattern = getattr(P, name)
    fast = getattr(P, name + "_END")
    assert fast.__code__.co_freevars == ("match",), "the pattern was not reversed"
    texts = _corpus(pattern, 30000, seed=len(name))
    hits = 0
    for t in texts:
        expected = pattern.search(t) is not None
        hits += expected
        assert fast(t) == expected, repr(t)
    assert hits > 1000  # the corpus does exercise the words


def test_reversal_handles_look_arounds_boundaries_and_final_newline():
    cases = [r"(?<![a-z])ab+c\b$", r"(?:x|\bfoo\s?)(?=\d)?\d*$", r"(?i)(?:was|list(?: price)?)\s?[:]?\s?$"]
    texts = ["ab", "zabbc", " abbc", "abc\n", "abc\n\n", "foo 12", "foo12\n", "List price:", "list  ", "WAS ",
             "", "\n", "x", "was\n", "thelist:"]
    for src in cases:
        pattern = re.compile(src)
        fast = P._ends_with(pattern)
        for t in texts + _corpus(pattern, 3000, seed=7):
            assert fast(t) == (pattern.search(t) is not None), (src, t)


def test_text_penalty_prefilter_never_hides_a_match():
    # every character the pattern's letters match (case-insensitively) passes the prefilter
    letters = "".join(sorted({c for c in P._TEXT_PENALTY.pattern if c.isalpha()}))
    every_char = "".join(chr(i) for i in range(sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF)
    for c in re.findall("[" + re.escape(letters) + "]", every_char, re.I):
        assert P._TEXT_PENALTY_HINT.search(c), hex(ord(c))
    for t in _corpus(P._TEXT_PENALTY, 30000, seed=3) + ["$89.19", "4 x 24,99 €", "-20%", "12,99 €/100 g", "€ 5"]:
        assert P._text_penalty(t) == (P._TEXT_PENALTY.search(t) is not None), repr(t)


def test_currency_symbol_shortcut_is_the_patterns_own_symbol_class():
    cls = P._STRICT_CURRENCY.pattern[1:P._STRICT_CURRENCY.pattern.index("]")]
    assert frozenset(cls) == P._CURRENCY_SYMBOLS
    texts = _corpus(P._STRICT_CURRENCY, 20000, seed=11) + ["EUR 5", "SKU 5", "5 LEI", "12 zł", "ر.س 5", "kr. 99"]
    for t in texts:
        expected = any(len(g) != 3 or not g.isupper() or g in P._iso_codes()
                       for g in (m.group(0) for m in P._STRICT_CURRENCY.finditer(t)))
        assert P._has_currency(t) == expected, repr(t)


_GUARDED = [("_SHIPPING_WORDS", "_SHIPPING_WORDS_SEARCH"), ("_TEXT_PENALTY", "_TEXT_PENALTY_SEARCH"),
            ("_SKU_LABEL", "_SKU_LABEL_FINDITER"), ("BACK_IN_STOCK_ALERT_RE", "_BACK_IN_STOCK_ALERT_SEARCH"),
            ("_BUY_TEXT", "_BUY_TEXT_SEARCH")]


def test_guarded_patterns_give_the_same_matches_as_the_plain_ones():
    """fast_re.guarded adds look-aheads through CPython's private regex parser: every guarded pattern the
    rules use must find exactly what its plain pattern finds (spans and groups), on texts made of its words."""
    from scrapers.fast_re import guarded

    for name, fast_name in _GUARDED:
        plain, fast = getattr(P, name), getattr(P, fast_name)
        method = fast.__name__
        twin = getattr(guarded(plain), method)
        assert twin.__self__.pattern is None, f"{name}: not rewritten (fell back to the plain pattern)"
        for t in _corpus(plain, 4000, seed=len(name)):
            mine, theirs = fast(t), getattr(plain, method)(t)
            if method == "finditer":
                mine, theirs = list(mine), list(theirs)
                assert [(m.span(), m.groups()) for m in mine] == [(m.span(), m.groups()) for m in theirs], (name, t)
            else:
                assert (mine and (mine.span(), mine.groups())) == (theirs and (theirs.span(), theirs.groups())), \
                    (name, t)
