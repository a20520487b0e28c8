"""scrapers.product: one small hand-made page per rule."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from scrapers.availability import availability_from_text, normalize_availability
from scrapers.product import extract_product
from scrapers.promotions import find_coupon, is_badge_text
from scrapers.types import Availability, Selectors

URL = "https://shop.example.com/p/widget-123"


def page(body: str = "", *, ld: object | None = None, head: str = "", lang: str = "en") -> str:
    script = f'<script type="application/ld+json">{json.dumps(ld)}</script>' if ld is not None else ""
    return f'<!doctype html><html lang="{lang}"><head><title>Widget</title>{head}{script}</head><body>{body}</body></html>'


def product_ld(**offer) -> dict:
    o = {"@type": "Offer", "price": "19.99", "priceCurrency": "USD", "availability": "https://schema.org/InStock"}
    o.update(offer)
    return {"@context": "https://schema.org", "@type": "Product", "name": "Widget", "sku": "W-1", "offers": o}


# ---------------------------------------------------------------- structured data

def test_json_ld_product_offer():
    p = extract_product(page("<h1>Widget</h1>", ld=product_ld()), URL)
    assert (p.price, p.currency, p.availability, p.sku, p.name) == (
        Decimal("19.99"), "USD", Availability.IN_STOCK, "W-1", "Widget")


def test_json_ld_inside_graph_with_other_nodes():
    ld = {"@context": "https://schema.org", "@graph": [
        {"@type": "WebSite", "name": "Shop"},
        {"@type": "BreadcrumbList", "itemListElement": []},
        product_ld(price="42.00"),
    ]}
    assert extract_product(page("<h1>Widget</h1>", ld=ld), URL).price == Decimal("42.00")


def test_product_group_takes_price_from_variants():
    ld = {"@context": "https://schema.org", "@type": "ProductGroup", "name": "Widget", "productGroupID": "W",
          "hasVariant": [
              {"@type": "Product", "name": "Widget S", "sku": "W-S", "offers": {
                  "@type": "Offer", "price": 25, "priceCurrency": "EUR", "availability": "https://schema.org/OutOfStock"}},
              {"@type": "Product", "name": "Widget M", "sku": "W-M", "offers": {
                  "@type": "Offer", "price": 25, "priceCurrency": "EUR", "availability": "https://schema.org/InStock"}},
          ]}
    p = extract_product(page("<h1>Widget</h1>", ld=ld), URL)
    assert p.price == Decimal(25) and p.currency == "EUR"
    assert p.availability == Availability.IN_STOCK  # one size sold out is not the product sold out


def test_aggregate_offer_uses_low_price():
    ld = {"@context": "https://schema.org", "@type": "Product", "name": "Widget",
          "offers": {"@type": "AggregateOffer", "lowPrice": "502.20", "highPrice": "558.00", "priceCurrency": "BYN"}}
    p = extract_product(page("<h1>Widget</h1>", ld=ld), "https://shop.example.by/widget")
    assert (p.price, p.currency) == (Decimal("502.20"), "BYN")


def test_offers_list_with_one_size_out_of_stock_is_in_stock():
    ld = product_ld()
    ld["offers"] = [dict(ld["offers"], availability="https://schema.org/OutOfStock"), ld["offers"]]
    assert extract_product(page("<h1>Widget</h1>", ld=ld), URL).availability == Availability.IN_STOCK


def test_broken_json_ld_with_trailing_comma_still_reads():
    html = page('<h1>Widget</h1>', head='<script type="application/ld+json">{"@type": "Product", "name": "Widget", '
                '"offers": {"@type": "Offer", "price": "9.50", "priceCurrency": "GBP",},}</script>')
    assert extract_product(html, URL).price == Decimal("9.50")


def test_microdata_product():
    body = """<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Widget</h1>
      <meta itemprop="sku" content="MD-77"><div itemprop="offers" itemscope itemtype="https://schema.org/Offer">
      <span itemprop="price" content="15.99">15,99 €</span><meta itemprop="priceCurrency" content="EUR">
      <link itemprop="availability" href="https://schema.org/InStock"></div></div>"""
    p = extract_product(page(body, lang="de"), "https://shop.example.de/widget")
    assert (p.price, p.currency, p.sku, p.availability) == (Decimal("15.99"), "EUR", "MD-77", Availability.IN_STOCK)


def test_opengraph_product_meta():
    head = ('<meta property="og:type" content="product"><meta property="og:title" content="Widget">'
            '<meta property="product:price:amount" content="997.00"><meta property="product:price:currency" content="PLN">')
    p = extract_product(page("<h1>Widget</h1>", head=head, lang="pl"), "https://shop.example.pl/widget")
    assert (p.price, p.currency) == (Decimal("997.00"), "PLN")


# ---------------------------------------------------------------- markup vs. what the buyer sees

def test_visible_discount_wins_over_regular_price_in_markup():
    body = """<h1>Widget</h1><div class="price-box"><del class="price-old">EUR219.99</del>
      <span class="price current-price">EUR110.00</span></div>"""
    p = extract_product(page(body, ld=product_ld(price="219.99", priceCurrency="EUR")), URL)
    assert (p.price, p.regular_price) == (Decimal("110.00"), Decimal("219.99"))


def test_strike_through_price_becomes_regular_price():
    body = '<h1>Widget</h1><span class="price">$19.99</span><s class="was">$24.99</s>'
    p = extract_product(page(body, ld=product_ld()), URL)
    assert (p.price, p.regular_price) == (Decimal("19.99"), Decimal("24.99"))


def test_related_products_carousel_price_is_not_the_product_price():
    body = """<h1>Widget</h1><p>Call us for a quote.</p>
      <section class="related-products"><div class="product-card"><h3>Other</h3>
      <span class="price">$5.00</span></div></section>"""
    assert extract_product(page(body), URL).price is None


def test_price_next_to_title_without_markup():
    body = """<nav><span class="price">$1.00</span></nav><main><h1>Widget</h1>
      <div class="product-price"><span class="price">$87.11</span></div></main>"""
    p = extract_product(page(body), URL)
    assert (p.price, p.currency) == (Decimal("87.11"), "USD")


def test_german_page_visible_price_with_thousands_separator():
    body = '<h1>Waschmaschine</h1><div class="product-price"><span class="price">1.299 €</span></div>'
    p = extract_product(page(body, lang="de"), "https://shop.example.de/waschmaschine")
    assert (p.price, p.currency) == (Decimal("1299"), "EUR")


def test_chilean_page_reads_dot_as_thousands():
    body = '<h1>Entrada</h1><p class="price">$34.000</p>'
    p = extract_product(page(body, lang="es"), "https://tickets.example.cl/evento")
    assert (p.price, p.currency) == (Decimal("34000"), "CLP")


def test_price_zero_in_markup_is_no_price():
    assert extract_product(page("<h1>Widget</h1>", ld=product_ld(price="0")), URL).price is None


# ---------------------------------------------------------------- availability

@pytest.mark.parametrize(
    "text",
    ["Out of stock", "Agotado", "Esgotado", "Esaurito", "Ausverkauft", "Épuisé", "Нет в наличии", "Sold out",
     "Currently unavailable.", "Actuellement indisponible.", "Brak w magazynie", "品切れ", "품절"],
)
def test_out_of_stock_words_in_many_languages(text):
    assert availability_from_text(text) == Availability.OUT_OF_STOCK


@pytest.mark.parametrize("text", ["In stock", "En stock", "Auf Lager", "Disponible", "Add to cart"])
def test_in_stock_words(text):
    assert availability_from_text(text) == Availability.IN_STOCK


@pytest.mark.parametrize(
    ("value", "expected"),
    [("https://schema.org/InStock", Availability.IN_STOCK), ("http://schema.org/OutOfStock", Availability.OUT_OF_STOCK),
     ("SoldOut", Availability.SOLD_OUT), ("in stock", Availability.IN_STOCK), ("oos", Availability.OUT_OF_STOCK),
     ("PreOrder", Availability.PRE_ORDER), ("schema:Discontinued", Availability.DISCONTINUED), ("", None)],
)
def test_schema_availability_values(value, expected):
    assert normalize_availability(value) == expected


def test_visible_out_of_stock_text_without_markup():
    body = '<h1>Widget</h1><span class="price">$10</span><p class="stock">Agotado</p>'
    assert extract_product(page(body, lang="es"), URL).availability == Availability.OUT_OF_STOCK


def test_image_unavailable_is_not_out_of_stock():
    body = '<h1>Widget</h1><div class="availability-image">Image unavailable</div><span class="price">$10</span>'
    assert extract_product(page(body), URL).availability != Availability.OUT_OF_STOCK


def test_enabled_add_to_cart_button_overrides_out_of_stock_markup():
    body = '<h1>Widget</h1><span class="price">$19.99</span><button class="add-to-cart">Add to your basket</button>'
    ld = product_ld(availability="https://schema.org/OutOfStock")
    assert extract_product(page(body, ld=ld), URL).availability == Availability.IN_STOCK


def test_out_of_stock_markup_stands_without_a_buy_button():
    ld = product_ld(availability="https://schema.org/OutOfStock")
    assert extract_product(page("<h1>Widget</h1>", ld=ld), URL).availability == Availability.OUT_OF_STOCK


# ---------------------------------------------------------------- SKU

def test_sku_from_labelled_text_when_markup_has_none():
    body = '<h1>Widget</h1><span class="price">$10</span><p>Product code: 83810610</p>'
    assert extract_product(page(body), "https://shop.example.com/widget").sku == "83810610"


@pytest.mark.parametrize(
    ("label", "value"),
    [("SKU:", "AB-1234"), ("Art.-Nr.", "1049084"), ("Ref.", "TE502955"), ("Código:", "746423"),
     ("Artikelnummer", "55512"), ("Kod produktu:", "82514129")],
)
def test_sku_labels_in_several_languages(label, value):
    body = f'<h1>Widget</h1><div class="details"><span>{label}</span> <span>{value}</span></div>'
    assert extract_product(page(body), "https://shop.example.com/widget").sku == value


def test_visible_product_code_preferred_over_markup_sku_that_is_the_mpn():
    ld = product_ld()
    ld.update(sku="238368885", mpn="238368885")
    body = '<h1>Widget</h1><p>Product code: 83810610</p>'
    assert extract_product(page(body, ld=ld), "https://shop.example.com/widget").sku == "83810610"


def test_model_number_in_title_is_not_the_sku():
    ld = product_ld()
    ld.update(name="Desktop OPTIPLEX 9010 TOWER i7", sku="OPTIPLEX 9010 TOWER")
    p = extract_product(page("<h1>Desktop OPTIPLEX 9010 TOWER i7</h1>", ld=ld), "https://shop.example.com/Prod/144432/")
    assert p.sku == "144432"


@pytest.mark.parametrize(
    ("url", "sku"),
    [("https://www.example.com/dp/B07FW264WL", "B07FW264WL"),
     ("https://www.example.ch/de/filzstift-24718?sku=1049084", "1049084"),
     ("https://www.example.com/itm/302474151804", "302474151804"),
     ("https://www.example.pt/Tommy-Jeans-OFLEKI-x3410048.php", "3410048")],
)
def test_sku_from_url(url, sku):
    assert extract_product(page("<h1>Thing</h1>"), url).sku == sku


# ---------------------------------------------------------------- promotions

@pytest.mark.parametrize("text", ["-20%", "20% off", "2x1", "3 for 2", "Free shipping", "Envío gratis", "Sale"])
def test_badge_texts(text):
    assert is_badge_text(text)


@pytest.mark.parametrize("text", ["Widget 2000", "Add to cart", "Reviews (12)"])
def test_not_badges(text):
    assert not is_badge_text(text)


def test_coupon_code():
    assert find_coupon("Use code SAVE20 at checkout") == "SAVE20"
    assert find_coupon("Cupón: VERANO24") == "VERANO24"


def test_promotions_free_shipping_and_coupon_on_page():
    body = ('<h1>Widget</h1><span class="price">$10</span><span class="badge">-20%</span>'
            '<div class="shipping-badge">Free shipping</div><div class="coupon">Use code SAVE20</div>')
    p = extract_product(page(body), URL)
    assert "-20%" in p.promotions and p.shipping == Decimal(0) and p.coupon == "SAVE20"


# ---------------------------------------------------------------- demo shop markup and selectors

DEMO = """<html lang="es"><head><script type="application/ld+json">{"@context":"https://schema.org","@type":"Product",
"name":"Lavadora X","sku":"LX-1","offers":{"@type":"Offer","price":"1299.00","priceCurrency":"EUR"}}</script></head>
<body><h1>Lavadora X</h1><span class="price">1.299,00 €</span><del class="price-was">1.499,00 €</del>
<span class="badge">-13%</span><p class="stock">Agotado</p></body></html>"""


def test_demo_shop_markup():
    p = extract_product(DEMO, "https://demo.example.es/lavadora-x")
    assert (p.price, p.regular_price, p.currency) == (Decimal("1299.00"), Decimal("1499.00"), "EUR")
    assert p.promotions == ("-13%",)
    assert p.availability == Availability.OUT_OF_STOCK
    assert p.sku == "LX-1"


def test_selectors_override_field_by_field():
    sel = Selectors(price="del.price-was", availability="h1", sku="h1")
    p = extract_product(DEMO, "https://demo.example.es/lavadora-x", sel)
    assert p.price == Decimal("1499.00")
    assert p.availability == Availability.IN_STOCK  # element present and not saying "out of stock"
    assert p.sku == "Lavadora X"
    assert p.regular_price == Decimal("1499.00") and p.name == "Lavadora X"  # not configured: automatic


def test_selector_matching_nothing_gives_none_not_a_guess():
    p = extract_product(DEMO, "https://demo.example.es/lavadora-x", Selectors(price=".nope", promotion=".nope"))
    assert p.price is None and p.promotions == ()


def test_invalid_selector_gives_none():
    assert extract_product(DEMO, "https://demo.example.es/x", Selectors(price="[[[")).price is None


# ---------------------------------------------------------------- robustness and speed

@pytest.mark.parametrize("html", ["", "<<<>>>", "<html><body><h1>", b"\xff\xfe\x00garbage", "x" * 10,
                                  '<script type="application/ld+json">{not json</script>'])
def test_bad_html_never_raises(html):
    p = extract_product(html, "not a url")
    assert p.price is None


def test_bytes_input_with_declared_charset():
    html = page("<h1>Café</h1><span class='price'>12,50 EUR</span>", lang="fr").replace(
        "<head>", '<head><meta charset="iso-8859-1">').encode("iso-8859-1")
    p = extract_product(html, "https://shop.example.fr/cafe")
    assert p.name == "Café" and p.price == Decimal("12.50")


# ---------------------------------------------------------------- embedded application state

def test_next_data_state_used_when_markup_has_no_price_and_page_shows_it():
    html = ('<html lang="en"><head><title>Widget Pro</title></head><body><h1>Widget Pro</h1><div class="x">$49.90</div>'
            '<script id="__NEXT_DATA__" type="application/json">{"props":{"pageProps":{"product":'
            '{"name":"Widget Pro","sku":"WP-9","price":49.9,"currency":"USD"}}}}</script></body></html>')
    p = extract_product(html, "https://shop.example.com/widget-pro")
    assert (p.price, p.currency, p.sku) == (Decimal("49.9"), "USD", "WP-9")


def test_initial_state_price_not_shown_on_page_is_ignored():
    html = ('<html lang="en"><head><title>Widget Pro</title></head><body><h1>Widget Pro</h1><p>Ask for a quote</p>'
            '<script>window.__INITIAL_STATE__ = {"product": {"name": "Widget Pro", "price": 12.5}};</script></body></html>')
    assert extract_product(html, "https://shop.example.com/widget-pro").price is None


# ---------------------------------------------------------------- general rules for unseen shops (traps)
# Each test names the general signal it relies on; none names a shop, a page or a shop-specific class.

def _pg(body: str = "", *, ld: object | None = None, head: str = "", lang: str = "en") -> str:
    return page(body, ld=ld, head=head, lang=lang).replace("<title>Widget</title>", "<title>Widget Pro</title>")


def _ld(**offer) -> dict:
    d = product_ld(**offer)
    d["name"] = "Widget Pro"
    return d


DE = "https://shop.example.de/widget-pro"


def test_trap_related_carousel_with_lower_prices_after_the_title():
    """Signal: ancestors with carousel / also-bought words are not the main product."""
    body = ('<main><h1>Widget Pro</h1><div class="pdp"><span class="price">$49.00</span></div></main>'
            '<section class="carousel"><h2>Customers also bought</h2><div class="tile"><span class="price">$9.00</span>'
            '</div><div class="tile"><span class="price">$12.00</span></div></section>')
    assert extract_product(_pg(body), URL).price == Decimal("49.00")


def test_trap_recently_viewed_before_title_and_price_without_price_class():
    """Signals: currency-marked text right after the title is a candidate even with meaningless class names;
    a 'recently-viewed' block is not the product."""
    body = ('<div class="recently-viewed"><span class="price">$9.00</span></div>'
            '<main><h1>Widget Pro</h1><div><span>$49.00</span></div></main>')
    assert extract_product(_pg(body), URL).price == Decimal("49.00")


def test_trap_free_shipping_threshold_is_not_the_price():
    body = ('<h1>Widget Pro</h1><p class="ship">Free shipping over <span class="price">50 €</span></p>'
            '<div class="product-price">79,95 €</div>')
    assert extract_product(_pg(body, lang="de"), DE).price == Decimal("79.95")


def test_trap_free_shipping_banner_before_title():
    body = '<div class="banner">Free shipping over 50 €</div><h1>Widget Pro</h1><div class="product-price">79,95 €</div>'
    assert extract_product(_pg(body, lang="de"), DE).price == Decimal("79.95")


def test_trap_price_per_unit_written_after_the_amount():
    """Signal: '/ kg', 'per 100 g' right after an amount make it a unit price."""
    body = ('<h1>Widget Pro</h1><div class="info"><span class="price">2,49 €</span> / kg</div>'
            '<div><span class="price">4,98 €</span></div>')
    assert extract_product(_pg(body, lang="de"), DE).price == Decimal("4.98")


def test_trap_price_per_unit_inside_the_text():
    body = '<h1>Widget Pro</h1><span class="price-per-unit">2,49 €/kg</span><span class="price">4,98 €</span>'
    assert extract_product(_pg(body, lang="de"), DE).price == Decimal("4.98")


@pytest.mark.parametrize("before", ["or 4 x ", "oder 4 x ", "12x de ", "4 interest-free payments of "])
def test_trap_monthly_instalment_before_the_real_price(before):
    """Signal: 'N x', 'payments of' right before an amount make it an instalment."""
    body = (f'<h1>Widget Pro</h1><p>{before}<span class="price">$24.99</span> with a card</p>'
            '<div class="pp"><span class="price">$99.96</span></div>')
    assert extract_product(_pg(body), URL).price == Decimal("99.96")


def test_trap_monthly_instalment_after():
    body = ('<h1>Widget Pro</h1><div class="pp"><span class="price">$99.96</span></div>'
            '<p>From <span class="price">$8.33</span>/mo</p>')
    assert extract_product(_pg(body), URL).price == Decimal("99.96")


def test_trap_review_counts_and_ratings_are_not_prices():
    body = '<h1>Widget Pro</h1><a class="reviews">(1,234)</a><span class="rating">4.5</span><div class="price">$35.00</div>'
    assert extract_product(_pg(body), URL).price == Decimal("35.00")


def test_trap_you_save_amount_is_not_the_price():
    body = ('<h1>Widget Pro</h1><div class="pp"><span class="price">$35.00</span> <span>You save '
            '<span class="price">$5.00</span></span></div>')
    assert extract_product(_pg(body), URL).price == Decimal("35.00")


def test_trap_one_size_out_of_stock_in_the_size_selector():
    body = ('<h1>Widget Pro</h1><span class="price">$35.00</span><ul class="sizes"><li>S</li>'
            '<li class="out-of-stock">M - Out of stock</li></ul><div class="size-select"><span class="stock">'
            'Size L: out of stock</span></div><button class="add-to-cart">Add to cart</button>')
    assert extract_product(_pg(body), URL).availability != Availability.OUT_OF_STOCK


def test_trap_one_variant_out_of_stock_in_markup_offers():
    ld = _ld()
    ld["offers"] = [dict(ld["offers"], availability="https://schema.org/OutOfStock", sku="W-S"),
                    dict(ld["offers"], sku="W-M")]
    body = '<h1>Widget Pro</h1><span class="price">$19.99</span><select><option>S - sold out</option><option>M</option></select>'
    assert extract_product(_pg(body, ld=ld), URL).availability == Availability.IN_STOCK


def test_sold_out_button_in_place_of_add_to_cart_without_markup():
    """Signal: the buy button's own text says the product is gone."""
    body = '<h1>Widget Pro</h1><span class="price">19,99 €</span><button disabled>Ausverkauft</button>'
    assert extract_product(_pg(body, lang="de"), DE).availability == Availability.OUT_OF_STOCK


def test_disabled_add_to_cart_alone_is_not_out_of_stock():
    """Shops disable 'Add to cart' until a size is chosen."""
    body = '<h1>Widget Pro</h1><span class="price">19,99 €</span><button class="add-to-cart" disabled>In den Warenkorb</button>'
    assert extract_product(_pg(body, lang="de"), DE).availability != Availability.OUT_OF_STOCK


def test_trap_markup_regular_price_with_discount_labelled_was():
    """Signals: a 'Was:' label right before an amount marks it as the regular price; markup = regular."""
    body = ('<h1>Widget Pro</h1><div class="product-price"><span class="price">$15.99</span> '
            '<span class="lbl">Was:</span> <span class="price">$19.99</span></div>')
    p = extract_product(_pg(body, ld=_ld()), URL)
    assert (p.price, p.regular_price) == (Decimal("15.99"), Decimal("19.99"))


def test_trap_markup_regular_price_with_inline_line_through():
    """Signal: text-decoration: line-through in an inline style."""
    body = '<h1>Widget Pro</h1><div><span style="text-decoration: line-through">$19.99</span> <b>$15.99</b></div>'
    p = extract_product(_pg(body, ld=_ld()), URL)
    assert (p.price, p.regular_price) == (Decimal("15.99"), Decimal("19.99"))


def test_trap_markup_price_struck_in_buy_box_but_repeated_elsewhere():
    """The markup price appears struck next to the title and again plain further down (a specs table): the
    struck copy and the lower lead price win."""
    body = ('<h1>Widget Pro</h1><div class="price-box"><del>$19.99</del> <span class="price">$15.99</span></div>'
            + '<p>Some text about the product.</p>' * 10 + '<table><tr><td>Price</td><td>$19.99</td></tr></table>')
    p = extract_product(_pg(body, ld=_ld()), URL)
    assert (p.price, p.regular_price) == (Decimal("15.99"), Decimal("19.99"))


def test_trap_markup_price_absent_from_page_and_lower_price_by_title():
    body = '<h1>Widget Pro</h1><div class="product-price"><span class="price">$15.99</span></div>'
    p = extract_product(_pg(body, ld=_ld(price="21.00")), URL)
    assert (p.price, p.regular_price) == (Decimal("15.99"), Decimal("21.00"))


def test_trap_aggregate_offer_low_and_high_price():
    ld = {"@context": "https://schema.org", "@type": "Product", "name": "Widget Pro",
          "offers": {"@type": "AggregateOffer", "lowPrice": 10, "highPrice": 30, "priceCurrency": "EUR", "offerCount": 3}}
    p = extract_product(_pg('<h1>Widget Pro</h1><span class="price">10 € – 30 €</span>', ld=ld), URL)
    assert (p.price, p.currency) == (Decimal("10"), "EUR")


def test_trap_product_group_with_variants_and_graph():
    ld = {"@context": "https://schema.org", "@graph": [{"@type": "Organization", "name": "Shop"}, {
        "@type": "ProductGroup", "name": "Widget Pro", "hasVariant": [
            {"@type": "Product", "sku": "WP-S", "offers": [{"@type": "Offer", "price": "39.00", "priceCurrency": "GBP",
                                                           "availability": "https://schema.org/OutOfStock"}]},
            {"@type": "Product", "sku": "WP-M", "offers": [{"@type": "Offer", "price": "39.00", "priceCurrency": "GBP",
                                                           "availability": "https://schema.org/InStock"}]}]}]}
    p = extract_product(_pg('<h1>Widget Pro</h1>', ld=ld), "https://shop.example.co.uk/widget-pro")
    assert (p.price, p.currency, p.availability) == (Decimal("39.00"), "GBP", Availability.IN_STOCK)


def test_trap_next_data_only_price_with_nested_value():
    body = ('<h1>Widget Pro</h1><div class="x">R$ 1.299,90</div><script id="__NEXT_DATA__" type="application/json">'
            '{"props":{"pageProps":{"product":{"name":"Widget Pro","price":{"value":1299.9},"currency":"BRL"}}}}</script>')
    p = extract_product(_pg(body, lang="pt-BR"), "https://shop.example.com.br/widget-pro")
    assert (p.price, p.currency) == (Decimal("1299.9"), "BRL")


def test_trap_nuxt_state_sale_and_regular_price():
    body = ('<h1>Widget Pro</h1><div class="x">$59.00</div><script>window.__NUXT__={"data":[{"product":'
            '{"title":"Widget Pro","salePrice":"59.00","regularPrice":"79.00"}}]};</script>')
    p = extract_product(_pg(body), URL)
    assert (p.price, p.regular_price) == (Decimal("59.00"), Decimal("79.00"))


def test_screen_reader_only_price_text_with_split_visual_digits():
    """Signals: screen-reader-only text (offscreen / sr-only) is the price as spoken, not hidden; a
    data-*strike* attribute marks the list price; carousels are ignored."""
    body = ('<h1>Widget Pro</h1><div id="buybox"><span class="p-price"><span class="p-offscreen">$24.99</span>'
            '<span aria-hidden="true"><span class="p-symbol">$</span><span class="p-whole">24<span>.</span></span>'
            '<span class="p-fraction">99</span></span></span> <span class="p-price" data-p-strike="true">'
            '<span class="p-offscreen">$34.99</span><span aria-hidden="true">$34.99</span></span></div>'
            '<div class="p-carousel"><span class="p-price"><span class="p-offscreen">$9.99</span></span></div>')
    p = extract_product(_pg(body), URL)
    assert (p.price, p.regular_price) == (Decimal("24.99"), Decimal("34.99"))


@pytest.mark.parametrize(("html", "lang", "url", "amount"), [
    ('<p class="product-new-price">173<sup>34</sup> <span>Lei</span></p>', "ro", "https://shop.example.ro/w", "173.34"),
    ('<div class="price">$229<span class="end">99</span></div>', "en", URL, "229.99"),
    ('<div class="price">1.299<sup>00</sup> €</div>', "de", DE, "1299.00"),
])
def test_cents_raised_in_their_own_element(html, lang, url, amount):
    assert extract_product(_pg("<h1>Widget Pro</h1>" + html, lang=lang), url).price == Decimal(amount)


def test_price_with_obfuscated_class_names_next_to_title():
    """Signal: currency-marked text in the title's neighbourhood, whatever the class names."""
    body = ('<div class="x1"><h1 class="k9">Widget Pro</h1><div class="q7"><span class="zz">€344.00</span>'
            '<span>VAT included</span></div></div><ul class="r"><li><span class="zz">€12.00</span></li></ul>')
    assert extract_product(_pg(body), "https://shop.example.ie/w").price == Decimal("344.00")


def test_delivery_option_price_in_a_button_loses_to_the_product_price():
    body = ('<h1>Widget Pro</h1><button type="button"><span>Delivery</span> <span>CHF 7.95</span></button>'
            '<div data-testid="price" class="a0"><span class="b1">CHF <!-- -->19.50</span></div>')
    assert extract_product(_pg(body, lang="de"), "https://shop.example.ch/w").price == Decimal("19.50")


def test_identifier_with_code_like_letters_is_not_a_currency():
    body = '<h1>Widget Pro</h1><div class="amount">EAN 7610186303159</div><div class="price">CHF 2.25</div>'
    assert extract_product(_pg(body, lang="de"), "https://shop.example.ch/w").price == Decimal("2.25")


def test_two_markup_sources_disagree_the_visible_one_wins():
    """Signal: agreement between structured data and the price shown by the title."""
    head = '<meta property="og:type" content="product"><meta property="product:price:amount" content="200">' \
           '<meta property="og:title" content="Widget Pro">'
    body = '<h1>Widget Pro</h1><div class="price">$200</div><div>Starting price $150</div>'
    p = extract_product(_pg(body, ld=_ld(price="150"), head=head), URL)
    assert p.price == Decimal("200")


def test_itemprop_price_content_attribute():
    body = '<div itemscope itemtype="https://schema.org/Product"><h1 itemprop="name">Widget Pro</h1><div itemprop="offers" ' \
           'itemscope itemtype="https://schema.org/Offer"><span itemprop="price" content="1299.00">1.299,00 €</span>' \
           '<meta itemprop="priceCurrency" content="EUR"></div></div>'
    assert extract_product(_pg(body, lang="de"), DE).price == Decimal("1299.00")


@pytest.mark.parametrize(("text", "lang", "url", "amount", "cur"), [
    ("CHF 1'299.–", "de-CH", "https://shop.example.ch/w", "1299", "CHF"),
    ("₹1,29,999", "en-IN", "https://shop.example.in/w", "129999", "INR"),
    ("R$ 1.299,90", "pt-BR", "https://shop.example.com.br/w", "1299.90", "BRL"),
    ("$34.000", "es-CL", "https://shop.example.cl/w", "34000", "CLP"),
])
def test_locale_prices_shown_without_markup(text, lang, url, amount, cur):
    p = extract_product(_pg(f'<h1>Widget Pro</h1><span class="price">{text}</span>', lang=lang), url)
    assert (p.price, p.currency) == (Decimal(amount), cur)


def test_promotions_multibuy_coupon_and_end_date():
    body = ('<h1>Widget Pro</h1><span class="price">$19.99</span><span class="badge">2x1</span>'
            '<p class="promo">Use code SPRING10 - offer ends 31/05/2024</p>')
    p = extract_product(_pg(body), URL)
    assert "2x1" in p.promotions and p.coupon == "SPRING10" and p.promotion_ends == "31/05/2024"


# a product grid without class words, with a lower price, after the product's own slider block
_CARDS = ('<div class="grid"><a class="card"><span class="t">Gizmo</span><div class="item-price">'
          '<span class="item-price-new">12,00 €</span></div></a><a class="card"><span class="t">Gadget</span>'
          '<div class="item-price"><span class="item-price-new">35,00 €</span></div></a></div>')


def test_price_in_slider_block_right_under_the_title_is_the_products():
    """Signal: a carousel / slider block that is the first thing priced after the heading and holds only that
    price (and its struck regular price) is the product's own gallery / price box, not a strip of others."""
    body = ('<div class="row"><h1>Widget Pro</h1><div><div class="sticker">-50%</div>'
            '<div class="hero-slider-price"><span class="slider-pricenew">270,00 €</span><br>'
            '<span class="slider-priceold">540,00 €</span></div><a href="#" class="cta">Kupi</a></div>'
            '<div class="slider-holder"><img src="1.jpg"></div></div>'
            '<article><p>' + 'Description of the widget. ' * 30 + '</p></article>' + _CARDS)
    p = extract_product(_pg(body, lang="hr"), "https://shop.example.hr/widget-pro")
    assert (p.price, p.regular_price) == (Decimal("270.00"), Decimal("540.00"))


@pytest.mark.parametrize("block", [
    # a strip of several products right under the title: several prices in the block
    '<div class="slider"><div class="s"><span class="price">270,00 €</span></div>'
    '<div class="s"><span class="price">99,00 €</span></div><div class="s"><span class="price">45,00 €</span></div></div>',
    # one product, but the block says it is another one ("related")
    '<div class="related-slider"><span class="price">270,00 €</span></div>',
])
def test_trap_strip_of_other_products_right_under_the_title_stays_unrelated(block):
    body = '<main><h1>Widget Pro</h1>' + block + '<p>Call us for a quote.</p></main>'
    p = extract_product(_pg(body, lang="hr"), "https://shop.example.hr/widget-pro")
    assert p.price is None


# ---------------------------------------------------------------- stock: markup vs. what the page shows

@pytest.mark.parametrize("text", ["המוצר אינו במלאי", "Vabandame, antud toode pole hetkel saadaval.", "Not in stock",
                                  "Proizvod nije dostupan", "Ej i lager", "Nu este in stoc", "Нет в продаже"])
def test_more_out_of_stock_statements(text):
    assert availability_from_text(text, strict=True) == Availability.OUT_OF_STOCK


@pytest.mark.parametrize(("value", "expected"), [("SOLD", Availability.SOLD_OUT), (" NOT SOLD ", Availability.IN_STOCK)])
def test_classified_ad_status_values(value, expected):
    assert normalize_availability(value) == expected


_PDP = ('<h1>Widget Pro</h1><div class="buy-box"><p class="price">$17.49</p>{extra}</div>'
        '<p>' + 'About this widget. ' * 20 + '</p>')


def test_stale_out_of_stock_markup_on_a_page_that_shows_the_price_and_no_stock_word():
    """Signal: markup says OutOfStock, but the page shows the price as the product's and nowhere says the
    product is gone (no stock text, no sold-out or disabled buy button): the markup is not what the buyer
    sees, so the status is left unknown rather than reported as out of stock."""
    ld = _ld(price="17.49", availability="https://schema.org/OutOfStock")
    p = extract_product(_pg(_PDP.format(extra='<div class="store">Check in-store stock</div>'), ld=ld), URL)
    assert p.price == Decimal("17.49") and p.availability is None


@pytest.mark.parametrize("extra", [
    '<p>Email me when back in stock</p>',
    '<p class="note">Sorry, this item is sold out</p>',
    '<button class="add-to-cart" disabled>Add to cart</button>',
    '<div>המוצר אינו במלאי</div>',
])
def test_trap_out_of_stock_markup_confirmed_by_the_page(extra):
    ld = _ld(price="17.49", availability="https://schema.org/OutOfStock")
    p = extract_product(_pg(_PDP.format(extra=extra), ld=ld), URL)
    assert p.availability == Availability.OUT_OF_STOCK


def test_trap_out_of_stock_markup_on_a_page_without_a_shown_price():
    ld = _ld(price="0", availability="https://schema.org/OutOfStock")
    body = '<h1>Widget Pro</h1><p>' + 'About this widget. ' * 20 + '</p>'
    assert extract_product(_pg(body, ld=ld), URL).availability == Availability.OUT_OF_STOCK


def test_trap_out_of_stock_markup_confirmed_far_down_a_page_without_a_title():
    ld = _ld(price="17.49", availability="https://schema.org/OutOfStock")
    body = ('<nav>' + '<a href="/c">Category link</a> ' * 1500 + '</nav><div class="product-price">'
            '<span class="price sale">$17.49</span></div><p class="note">Sorry, this item is sold out</p>')
    assert extract_product(_pg(body, ld=ld), URL).availability == Availability.OUT_OF_STOCK
