"""scrapers.listing: product cards and pagination of listing pages, on hand-written fixtures."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from scrapers.listing import crawl_listing, extract_listing, next_page_urls, normalize_url
from scrapers.types import ListingPage, ListingSelectors

DATA = Path(__file__).resolve().parent.parent / "data" / "listing"


def test_jsonld_itemlist_in_position_order_with_dom_completion():
    page = extract_listing((DATA / "itemlist.html").read_bytes(), "https://shop.example.co.uk/c/headphones")
    assert isinstance(page, ListingPage)
    assert [i.url for i in page.items] == [
        "https://shop.example.co.uk/p/sony-wh-1000xm5",     # position 1, relative URL, fragment dropped
        "https://shop.example.co.uk/p/bose-qc-ultra",
        "https://shop.example.co.uk/p/apple-airpods-max",
    ]
    sony, bose, airpods = page.items
    assert (sony.name, sony.price, sony.regular_price, sony.currency) == (
        "Sony WH-1000XM5", Decimal("279"), Decimal("379"), "GBP")
    assert sony.badge == "Deal"                               # completed from the DOM card
    assert bose.price == Decimal("449.95") and bose.currency == "GBP"
    # the ListItem with only a URL gets its name and price from the DOM card with the same URL
    assert airpods.name == "Apple AirPods Max" and airpods.price == Decimal("499.00")
    # the BreadcrumbList is not a product list
    assert "https://shop.example.co.uk/" not in [i.url for i in page.items]
    assert page.next_url == "https://shop.example.co.uk/c/headphones/page/2"


def test_product_grid_without_structured_data():
    url = "https://tienda.example.es/zapatillas-running"
    page = extract_listing((DATA / "grid.html").read_text(encoding="utf-8"), url)
    urls = [i.url for i in page.items]
    assert urls == [
        "https://tienda.example.es/p/nike-pegasus-41-m?color=black",
        "https://tienda.example.es/p/adidas-ultraboost-light",
        "https://tienda.example.es/p/asics-novablast-4",
    ]
    # header / nav / footer links and the one-card "recommended" block are not items
    assert not any(u.endswith(("/hombre", "/cesta", "/envios", "/calcetines-running")) for u in urls)
    pegasus, adidas, asics = page.items
    assert pegasus.name == "Nike Pegasus 41 Hombre"
    assert (pegasus.price, pegasus.regular_price, pegasus.currency) == (Decimal("119.99"), Decimal("149.99"), "EUR")
    assert pegasus.badge == "-20%"
    assert adidas.price == Decimal("1299.00") and adidas.regular_price is None and adidas.badge is None
    assert asics.badge == "Nuevo"
    assert page.next_url == "https://tienda.example.es/zapatillas-running?page=2"


def test_selectors_override():
    html = """<html><body>
      <section class="deals">
        <article class="deal"><a class="go" href="/cart/add?id=1">Add</a><a class="pdp" href="/d/one">
          <span class="t">Deal one</span></a><b class="cost">$10.00</b><i class="was">$12.50</i><em>HOT</em></article>
        <article class="deal"><a class="go" href="/cart/add?id=2">Add</a><a class="pdp" href="/d/two">
          <span class="t">Deal two</span></a><b class="cost">$20.00</b><em>NEW</em></article>
      </section>
      <section class="other"><article class="deal">not me</article></section>
      <a class="more" href="/deals?offset=20">more deals</a>
    </body></html>"""
    sel = ListingSelectors(item="section.deals article.deal", link="a.pdp", name=".t", price=".cost",
                           regular_price=".was", badge="em", next="a.more")
    page = extract_listing(html, "https://deals.example.com/deals", sel)
    assert [(i.url, i.name, i.price, i.regular_price, i.badge) for i in page.items] == [
        ("https://deals.example.com/d/one", "Deal one", Decimal("10.00"), Decimal("12.50"), "HOT"),
        ("https://deals.example.com/d/two", "Deal two", Decimal("20.00"), None, "NEW"),
    ]
    assert page.items[0].currency == "USD"
    assert page.next_url == "https://deals.example.com/deals?offset=20"


def _cards(n: int, start: int = 0) -> str:
    return "".join(
        f'<div class="card"><a href="/item/{i}">Item {i}</a><span class="price">{i}.99 €</span></div>'
        for i in range(start, start + n))


def test_pagination_rel_next_link():
    html = f"""<html><head><link rel="next" href="?page=3"></head><body>
      <div class="list">{_cards(3)}</div></body></html>"""
    page = extract_listing(html, "https://a.example.com/cat?page=2")
    assert page.next_url == "https://a.example.com/cat?page=3"


def test_pagination_page_number_pattern():
    html = f"""<html><body><div class="list">{_cards(3)}</div>
      <div class="pages"><a href="/cat?sort=price&page=1">1</a> <span>2</span>
      <a href="/cat?sort=price&page=3">3</a> <a href="/cat?sort=name&page=3">by name</a>
      <a href="/cat?sort=price&page=4">4</a></div></body></html>"""
    page = extract_listing(html, "https://a.example.com/cat?sort=price&page=2")
    assert page.next_url == "https://a.example.com/cat?sort=price&page=3"
    # on page 1 (no page param), the link to page 2 is the next page
    html1 = '<html><body><a href="/cat?page=2">2</a><a href="/cat?page=3">3</a></body></html>'
    assert extract_listing(html1, "https://a.example.com/cat").next_url == "https://a.example.com/cat?page=2"
    # path style /page/N
    html2 = '<html><body><a href="/shoes/page/3/">3</a></body></html>'
    assert next_page_urls(html2, "https://a.example.com/shoes/page/2/") == ["https://a.example.com/shoes/page/3/"]
    # a page that links only to earlier pages has no next page
    html3 = '<html><body><a href="/cat?page=1">1</a><a href="/cat?page=2">2</a></body></html>'
    assert extract_listing(html3, "https://a.example.com/cat?page=2").next_url is None


def test_pagination_next_button_multilingual():
    for label in ("Siguiente", "Suivant", "Weiter", "Avanti", "Próximo", "Next", "›", "»"):
        html = f"""<html><body><div class="list">{_cards(2)}</div>
          <div class="pager"><button type="button" onclick="window.location.href='/cat?pg=7'">{label}</button></div>
          </body></html>"""
        assert extract_listing(html, "https://a.example.com/cat?pg=6").next_url == \
            "https://a.example.com/cat?pg=7", label
    # a disabled next button (last page) is not a next page
    html = '<html><body><a class="next disabled" href="/cat?pg=7" aria-disabled="true">Next</a></body></html>'
    assert extract_listing(html, "https://a.example.com/cat?pg=7").next_url is None
    # aria-label on an icon link
    html = '<html><body><a href="/c/2" aria-label="Next page"><svg></svg></a></body></html>'
    assert extract_listing(html, "https://a.example.com/c/1").next_url == "https://a.example.com/c/2"


def test_duplicates_and_bad_links():
    html = """<html><body><ul>
      <li class="p"><a href="/x#a">X</a><span class="price">€5</span></li>
      <li class="p"><a href="/x#b">X again</a><span class="price">€5</span></li>
      <li class="p"><a href="javascript:void(0)">js</a><a href="/y">Y</a><span class="price">€6</span></li>
      <li class="p"><a href="HTTPS://A.Example.COM:443/z">Z</a><span class="price">€7</span></li>
    </ul></body></html>"""
    page = extract_listing(html, "https://a.example.com/c")
    assert [i.url for i in page.items] == ["https://a.example.com/x", "https://a.example.com/y",
                                            "https://a.example.com/z"]
    assert normalize_url("mailto:x@y.z", "https://a.example.com/") is None
    assert normalize_url("//cdn.example.com/p?q=1#f", "https://a.example.com/") == "https://cdn.example.com/p?q=1"


def test_empty_and_garbage_pages():
    assert extract_listing("", "https://a.example.com/").items == ()
    assert extract_listing(b"\xff\xfe<<<>>", "https://a.example.com/").items == ()
    html = '<script type="application/ld+json">{"@type": "ItemList", "itemListElement": [,,]}</script>'
    assert extract_listing(html, "https://a.example.com/").items == ()


def test_a_large_grid_is_read_whole():
    html = f"<html><body><header><a href='/'>home</a></header><div class='grid'>{_cards(600)}</div></body></html>"
    page = extract_listing(html, "https://a.example.com/all")
    assert len(page.items) == 600
    assert page.items[599].price == Decimal("599.99")


def test_crawl_listing_follows_pages_up_to_limit():
    pages = {
        f"https://a.example.com/c?page={n}":
            f"<html><body><div class='l'>{_cards(2, start=n * 10)}</div>"
            f"<a href='/c?page={n + 1}'>{n + 1}</a></body></html>"
        for n in range(1, 10)
    }
    pages["https://a.example.com/c"] = pages["https://a.example.com/c?page=1"]
    fetched = []

    async def fetch(url: str) -> str:
        fetched.append(url)
        return pages[url]

    out = asyncio.run(crawl_listing("https://a.example.com/c", fetch, max_pages=3))
    assert [u for u, _ in out] == ["https://a.example.com/c", "https://a.example.com/c?page=2",
                                   "https://a.example.com/c?page=3"]
    assert sum(len(p.items) for _, p in out) == 6
    assert len(fetched) == 3
