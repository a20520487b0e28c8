from __future__ import annotations

import gzip
from pathlib import Path

from scrapers.seo import extract_seo

DATA = Path(__file__).resolve().parents[1] / "data"

PAGE = """<!doctype html><html lang="en"><head>
<base href="https://shop.example/en/">
<title>
  Acme  X200 Espresso | Shop </title>
<meta name="Description" content=" Barista espresso at home. ">
<meta name="robots" content="NOINDEX, follow">
<link rel="canonical" href="products/x200">
<link rel="alternate" hreflang="de" href="https://shop.example/de/products/x200">
<link rel="alternate" hreflang="x-default" href="/products/x200">
<link rel="alternate" hreflang="en" href="products/x200">
<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [
  {"@type": "Product", "name": "X200", "offers": {"@type": "Offer"}}, {"@type": ["BreadcrumbList"]}]}</script>
<script type="application/ld+json">{"@type": "Organization", "name": "Acme",}</script>
<script>var hidden = "not words at all";</script><style>.a{color:red}</style>
</head><body>
<h1>Acme <em>X200</em></h1><h1> </h1>
<div itemscope itemtype="https://schema.org/Product"><span itemprop="brand" itemscope itemtype="https://schema.org/Brand">Acme</span></div>
<p>Five words in this paragraph.</p><noscript>enable javascript please</noscript><template><p>tpl words</p></template>
</body></html>"""


def test_seo_snapshot_fields_from_a_page():
    s = extract_seo(PAGE, url="http://shop.example/x200", final_url="https://shop.example/en/products/x200",
                    status_code=200, headers={"X-Robots-Tag": "noarchive, bingbot: nofollow"})
    assert s.status_code == 200 and s.final_url == "https://shop.example/en/products/x200"
    assert s.title == "Acme X200 Espresso | Shop"
    assert s.meta_description == "Barista espresso at home."
    assert s.h1 == ("Acme X200",)
    assert s.canonical == "https://shop.example/en/products/x200"
    assert s.robots == "noindex, follow, noarchive"
    assert s.hreflang == (("de", "https://shop.example/de/products/x200"),
                          ("en", "https://shop.example/en/products/x200"),
                          ("x-default", "https://shop.example/products/x200"))
    assert s.structured_data_types == ("BreadcrumbList", "Organization", "Product")
    # "Acme X200" + "Acme" + five-word paragraph; script/style/noscript/template excluded
    assert s.word_count == 2 + 1 + 5


def test_seo_final_url_defaults_to_url_and_missing_fields_are_empty():
    s = extract_seo(b"<html><body>hi</body></html>", url="https://a.example/")
    assert s.final_url == "https://a.example/" and s.title is None and s.canonical is None
    assert s.robots is None and s.h1 == () and s.hreflang == () and s.word_count == 1


def test_seo_on_real_product_pages_is_sane():
    pages = sorted((DATA / "product-pages" / "html").glob("*.html.gz"))[:15]
    for p in pages:
        s = extract_seo(gzip.decompress(p.read_bytes()), url="https://shop.example/p")
        assert s.title and s.word_count > 0
        assert s.canonical is None or s.canonical.startswith("http")
