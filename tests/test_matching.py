"""tracker.matching: GTIN / SKU / MPN / title matching, and the labelled title-pair table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tracker.matching import (
    MatchResult,
    ProductRef,
    best_match,
    match,
    normalize_code,
    normalize_gtin,
    title_features,
)

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_matching", ROOT / "bench" / "matching.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_gtin_normalisation():
    assert normalize_gtin("4006381333931") == "04006381333931"          # EAN-13
    assert normalize_gtin("036000291452") == "00036000291452"           # UPC-A
    assert normalize_gtin("0036000291452") == "00036000291452"          # same as EAN-13
    assert normalize_gtin("96385074") == "00000096385074"               # EAN-8
    assert normalize_gtin("10036000291459") == "10036000291459"         # GTIN-14
    assert normalize_gtin("4006381333932") is None                      # bad check digit
    assert normalize_gtin("400638133393") is None                       # 12 digits, wrong check
    assert normalize_gtin("12345") is None and normalize_gtin("abc") is None and normalize_gtin(None) is None
    assert normalize_gtin("4006-3813-3393-1") == "04006381333931"


def test_codes():
    assert normalize_code("FD2722-002") == normalize_code("fd2722 002") == "FD2722002"
    assert normalize_code("12") is None and normalize_code("0000") is None


def test_gtin_beats_title():
    a = ProductRef("Crayola 24 crayons", gtin="036000291452")
    b = ProductRef("Some other title entirely", gtin="0036000291452")
    r = match(a, b)
    assert r == MatchResult(True, 0.99, "gtin", "same GTIN 00036000291452")
    r = match(ProductRef("Nike Pegasus 41 42", gtin="4006381333931"),
              ProductRef("Nike Pegasus 41 42", gtin="036000291452"))
    assert not r.is_match and r.method == "gtin"


def test_mpn_and_sku():
    r = match(ProductRef("HP 305 Black", mpn="3YM61AE"), ProductRef("HP 305 Ink Black", mpn="3ym61ae"))
    assert r.is_match and r.method == "mpn" and r.confidence >= 0.9
    # the manager's own SKU is the rival's MPN
    r = match(ProductRef("Nike Pegasus 41 M 42", sku="FD2722-002"), ProductRef("Pegasus 41", mpn="FD2722002"))
    assert r.is_match and r.method == "mpn"
    # same style code, different size in the titles: not the same SKU
    r = match(ProductRef("Nike Pegasus 41 EU 42", mpn="FD2722-002"), ProductRef("Nike Pegasus 41 EU 44", mpn="FD2722-002"))
    assert not r.is_match
    r = match(ProductRef("X", sku="AB-1234"), ProductRef("Y", sku="ab1234"))
    assert r.is_match and r.method == "sku"


def test_the_issue_example():
    own = ProductRef("Nike Pegasus 41 M 42", sku="NP41-42", brand="Nike")
    rival = ProductRef("Nike Air Zoom Pegasus 41 Men's Road Running Shoes EU 42")
    r = match(own, rival)
    assert r.is_match and r.method == "title" and 0 < r.confidence <= 0.95


@pytest.mark.parametrize("a,b", [
    ("Nike Pegasus 41 M 42", "Nike Pegasus 41 M 42.5"),
    ("Coca-Cola Zero 500 ml", "Coca-Cola Zero 1 L"),
    ("Ground coffee 1 kg", "Ground coffee 500 g"),
    ("Apple iPhone 15 256GB", "Apple iPhone 15 512 GB"),
    ('Lenovo IdeaPad 3 15.6"', "Lenovo IdeaPad 3 14 inch"),
    ("Uniqlo T-Shirt White Size XL", "Uniqlo T-Shirt White Size M"),
    ("Gillette Fusion5 blades 4-pack", "Gillette Fusion5 blades x8"),
    ("Duracell AA batteries set of 3", "Duracell AA batteries"),
    ("PlayStation 5 Console", "PlayStation 5 Console Bundle"),
    ("Nike Pegasus 41 Black", "Nike Pegasus 41 Red"),
])
def test_attributes_must_agree(a, b):
    r = match(ProductRef(a), ProductRef(b))
    assert not r.is_match, r


def test_features():
    f = title_features("Coca-Cola Zero 6 x 330ml")
    assert f.pack == 6 and f.quantities["volume"] == frozenset({"330"})
    f = title_features("Lenovo 15,6 Zoll 1TB SSD")
    assert f.quantities["inch"] == frozenset({"15.6"}) and f.quantities["storage"] == frozenset({"1000"})
    f = title_features("Samsung Galaxy S24 5G Onyx Black")
    assert "mass" not in f.quantities and f.colours == frozenset({"black"})


def test_best_match():
    ref = ProductRef("Apple iPhone 15 128GB Black", brand="Apple")
    cands = [ProductRef("Apple iPhone 15 256GB Black"), ProductRef("Apple iPhone 15 Plus 128GB Black"),
             ProductRef("iPhone 15 128 GB - Black (Apple)"), ProductRef("Apple iPhone 15 128GB Black Refurbished")]
    got = best_match(ref, cands, threshold=0.75)
    assert got is not None and got[0] == 2 and got[1].is_match
    assert best_match(ref, cands[:2], threshold=0.75) is None
    assert best_match(ref, [], threshold=0.5) is None


def test_title_pairs_precision_and_recall(capsys):
    bench = _bench()
    rows = bench.load_pairs()
    assert len(rows) >= 40
    labels = [r["expected_match"] for r in rows]
    assert labels.count("1") >= 15 and labels.count("0") >= 15
    r = bench.evaluate()
    print(f"precision={r['precision']:.3f} recall={r['recall']:.3f}")
    assert r["precision"] >= 0.98
    assert r["recall"] >= 0.80      # reached: 0.861 (31 of 36) at the default threshold
