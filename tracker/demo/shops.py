"""Bundled demo rival shops, served on 127.0.0.1, whose catalogue moves to "the next day" on request.

- Northwind Sports: prices in JSON-LD and in plain HTML (fetched over HTTP).
- Alpenrad: prices appear only after JavaScript runs, in European format (1.299,00 €), with a
  strike-through regular price and a promotion badge on sale items (fetched with Chromium).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from decimal import Decimal

from aiohttp import web


@dataclass(frozen=True)
class Item:
    slug: str
    name: str
    sku: str
    price: Decimal
    regular: Decimal | None = None
    badge: str | None = None
    in_stock: bool = True


NORTHWIND = {
    1: [Item("trail-runner-2", "Trail Runner 2", "NW-TR2", Decimal("129.90")),
        Item("road-racer", "Road Racer", "NW-RR1", Decimal("99.00")),
        Item("alpine-hiker", "Alpine Hiker Boot", "NW-AH5", Decimal("159.00")),
        Item("merino-socks", "Merino Running Socks", "NW-MS3", Decimal("12.50"))],
    2: [Item("trail-runner-2", "Trail Runner 2", "NW-TR2", Decimal("114.90")),
        Item("road-racer", "Road Racer", "NW-RR1", Decimal("104.00")),
        Item("alpine-hiker", "Alpine Hiker Boot", "NW-AH5", Decimal("159.00"), in_stock=False),
        Item("merino-socks", "Merino Running Socks", "NW-MS3", Decimal("12.50"))],
}
ALPENRAD = {
    1: [Item("e-bike-city", "E-Bike City 500", "AR-EB500", Decimal("1299.00")),
        Item("helmet-pro", "Helm Pro MIPS", "AR-HP2", Decimal("89.90")),
        Item("bike-lock", "Faltschloss 900", "AR-FS9", Decimal("34.50"))],
    2: [Item("e-bike-city", "E-Bike City 500", "AR-EB500", Decimal("1104.15"), regular=Decimal("1299.00"),
             badge="-15%"),
        Item("helmet-pro", "Helm Pro MIPS", "AR-HP2", Decimal("89.90")),
        Item("bike-lock", "Faltschloss 900", "AR-FS9", Decimal("39.90"))],
}

# What the demo's report must show after day 2, exactly (rival, product, change kind).
EXPECTED_CHANGES = sorted([
    ("Northwind Sports", "Trail Runner 2", "price_down"),
    ("Northwind Sports", "Road Racer", "price_up"),
    ("Northwind Sports", "Alpine Hiker Boot", "out_of_stock"),
    ("Alpenrad", "E-Bike City 500", "price_down"),
    ("Alpenrad", "E-Bike City 500", "regular_price_changed"),
    ("Alpenrad", "E-Bike City 500", "promotion_started"),
    ("Alpenrad", "Faltschloss 900", "price_up"),
])


def euro(amount: Decimal) -> str:
    """German format: 1.299,00 €."""
    whole, frac = f"{amount:,.2f}".split(".")
    return f"{whole.replace(',', '.')},{frac} €"


def _page(title: str, body: str, head: str = "") -> str:
    return (f"<!DOCTYPE html><html lang=\"{'de' if '€' in body or 'de-DE' in head else 'en'}\"><head>"
            f"<meta charset=\"utf-8\"><title>{html.escape(title)}</title>{head}</head>"
            f"<body><header><a href=\"/\">Home</a></header><main>{body}</main>"
            f"<footer>Free shipping on orders over 50</footer></body></html>")


def northwind_product(item: Item, base: str) -> str:
    ld = {"@context": "https://schema.org", "@type": "Product", "name": item.name, "sku": item.sku,
          "brand": {"@type": "Brand", "name": "Northwind"},
          "offers": {"@type": "Offer", "price": str(item.price), "priceCurrency": "USD",
                     "url": f"{base}/p/{item.slug}",
                     "availability": "https://schema.org/" + ("InStock" if item.in_stock else "OutOfStock")}}
    stock = "In stock" if item.in_stock else "Out of stock"
    body = (f"<h1>{html.escape(item.name)}</h1><div class=\"product\">"
            f"<span class=\"price\">${item.price:,.2f}</span>"
            f"<p class=\"stock\">{stock}</p><p>SKU: {item.sku}</p>"
            f"<button>Add to cart</button></div>")
    head = f"<script type=\"application/ld+json\">{json.dumps(ld)}</script>"
    return _page(item.name, body, head)


def alpenrad_product(item: Item) -> str:
    data = {"name": item.name, "sku": item.sku, "price": euro(item.price),
            "regular": euro(item.regular) if item.regular else None, "badge": item.badge,
            "stock": "Auf Lager" if item.in_stock else "Ausverkauft"}
    script = """
<script>
window.__PRODUCT__ = %s;
setTimeout(function () {
  var p = window.__PRODUCT__, el = document.getElementById('app');
  var h = '<h1>' + p.name + '</h1><div class="product-box">';
  if (p.badge) h += '<span class="badge">' + p.badge + '</span> ';
  if (p.regular) h += '<del class="price-was">' + p.regular + '</del> ';
  h += '<span class="price-now">' + p.price + '</span>';
  h += '<p class="availability">' + p.stock + '</p><p>Art.-Nr.: ' + p.sku + '</p>';
  h += '<button>In den Warenkorb</button></div>';
  el.innerHTML = h;
}, 50);
</script>""" % json.dumps(data)
    body = f"<div id=\"app\">Lädt…</div>{script}"
    return _page(item.name, body, "<meta name=\"description\" content=\"de-DE\">")


class DemoShops:
    """Both shops in one aiohttp app per shop; `day` switches their catalogue."""

    def __init__(self) -> None:
        self.day = 1
        self.runners: list[web.AppRunner] = []
        self.northwind_url = ""
        self.alpenrad_url = ""

    def _northwind(self) -> web.Application:
        app = web.Application()

        async def product(request: web.Request) -> web.Response:
            item = next((i for i in NORTHWIND[self.day] if i.slug == request.match_info["slug"]), None)
            if item is None:
                raise web.HTTPNotFound()
            return web.Response(text=northwind_product(item, self.northwind_url), content_type="text/html")

        app.router.add_get("/p/{slug}", product)
        app.router.add_get("/robots.txt", _robots)
        return app

    def _alpenrad(self) -> web.Application:
        app = web.Application()

        async def product(request: web.Request) -> web.Response:
            item = next((i for i in ALPENRAD[self.day] if i.slug == request.match_info["slug"]), None)
            if item is None:
                raise web.HTTPNotFound()
            return web.Response(text=alpenrad_product(item), content_type="text/html")

        app.router.add_get("/produkt/{slug}", product)
        app.router.add_get("/robots.txt", _robots)
        return app

    async def start(self) -> "DemoShops":
        # Two host names for 127.0.0.1, so each shop is its own domain for politeness limits.
        self.northwind_url = await self._serve(self._northwind(), "127.0.0.1")
        self.alpenrad_url = (await self._serve(self._alpenrad(), "127.0.0.1")).replace("127.0.0.1", "localhost")
        return self

    async def _serve(self, app: web.Application, host: str) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        self.runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()

    def config_yaml(self, database: str) -> str:
        """A config in the documented format pointing at the running shops."""
        nw = "\n".join(f"      - {{name: {i.name}, url: \"{self.northwind_url}/p/{i.slug}\", match: {i.sku[3:]}}}"
                       for i in NORTHWIND[1])
        ar = "\n".join(f"      - {{name: {i.name}, url: \"{self.alpenrad_url}/produkt/{i.slug}\"}}"
                       for i in ALPENRAD[1])
        return f"""# Written by `tracker demo`: the demo's config, in the documented format.
database: {database}
timezone: Europe/Madrid
locale: en_US
email:
  from: rivalwatch@demo.localhost
  to: [ecommerce@demo.localhost]
  outbox_dir: outbox
http:
  per_domain_concurrency: 2
  per_domain_delay_s: 0.05
  retries: 0
  timeout_s: 10
browser:
  concurrency: 3
  timeout_s: 15
rivals:
  - name: Northwind Sports
    fetch: http
    products:
{nw}
  - name: Alpenrad
    fetch: browser
    products:
{ar}
"""


async def _robots(request: web.Request) -> web.Response:
    return web.Response(text="User-agent: *\nAllow: /\n")
