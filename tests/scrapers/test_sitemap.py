"""scrapers.sitemap: discovery against a local aiohttp server (127.0.0.1, addressed as `localhost`)."""

from __future__ import annotations

import asyncio
import gzip
import threading
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest
from aiohttp import web

from scrapers.sitemap import (
    DiscoveryResult,
    RawResponse,
    SitemapError,
    SitemapTooLarge,
    discover,
    filter_urls,
    on_domain,
    url_matches,
    url_problem,
)

BOMB_MB = 200


def _urlset(urls: list[str]) -> bytes:
    body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>').encode()


def _index(urls: list[str]) -> bytes:
    body = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</sitemapindex>').encode()


def _gzip_bomb(mb: int) -> bytes:
    """`mb` MB of zeros, gzip-compressed chunk by chunk (about 200 KB for 200 MB)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [co.compress(zeros) for _ in range(mb)]
    parts.append(co.flush())
    return b"".join(parts)


class _Server:
    def __init__(self) -> None:
        self.routes: dict[str, web.StreamResponse | bytes | tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        self.port = 0
        self.base = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        self.hits.append(path)
        spec = self.routes.get(path)
        if spec is None:
            return web.Response(status=404, text="not found")
        if isinstance(spec, bytes):
            ctype = "application/gzip" if path.endswith(".gz") else (
                "text/plain" if path.endswith(".txt") else "application/xml")
            return web.Response(body=spec, headers={"Content-Type": ctype})
        status, headers, body = spec
        return web.Response(status=status, headers=headers, body=body)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handler)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://localhost:{self.port}"
        self._started.set()
        self._loop.run_forever()

    def start(self) -> "_Server":
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        async def _cleanup() -> None:
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(_cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server().start()
    b = srv.base
    srv.routes.update({
        "/robots.txt": (f"User-agent: *\nDisallow: /cart\n"
                        f"Sitemap: {b}/sitemap_index.xml\n"
                        f"Sitemap: https://cdn.other-shop.example/sitemap.xml\n").encode(),
        "/sitemap_index.xml": _index([f"{b}/sitemaps/products-1.xml.gz", f"{b}/sitemaps/products-2.xml.gz",
                                      f"{b}/sitemaps/pages.xml", "http://169.254.169.254/latest/sitemap.xml"]),
        "/sitemaps/products-1.xml.gz": gzip.compress(_urlset(
            [f"{b}/p/nike-pegasus-41", f"{b}/p/adidas-ultraboost#frag", f"{b}/p/nike-pegasus-41"])),
        "/sitemaps/products-2.xml.gz": gzip.compress(_urlset(
            [f"{b}/p/asics-novablast-4", f"http://www.localhost:{srv.port}/p/sub-domain-ok"])),
        "/sitemaps/pages.xml": _urlset([f"{b}/about", f"{b}/p/hoka-clifton-9"]),
        # rival-controlled junk
        "/hostile.xml": _urlset([
            f"{b}/p/fine", "https://evil.example.net/p/x", "http://127.0.0.1/admin", "http://[::1]/x",
            "http://2130706433/x", "javascript:alert(1)", "ftp://localhost/file", f"http://user:pw@localhost:{srv.port}/p/y",
            f"http://localhost.evil.example.net:{srv.port}/p/z",
        ]),
        "/moved.xml": (302, {"Location": "https://evil.example.net/sitemap.xml"}, b""),
        "/moved-ip.xml": (301, {"Location": f"http://127.0.0.1:{srv.port}/sitemaps/pages.xml"}, b""),
        "/moved-ok.xml": (301, {"Location": "/sitemaps/pages.xml"}, b""),
        "/bomb.xml.gz": _gzip_bomb(BOMB_MB),
        "/bomb-index.xml": _index([f"{b}/sitemaps/pages.xml", f"{b}/bomb.xml.gz"]),
        "/transport-bomb.xml": (200, {"Content-Type": "application/xml", "Content-Encoding": "gzip"},
                                _gzip_bomb(60)),
        "/loop.xml": _index([f"{b}/loop.xml", f"{b}/loop2.xml"]),
        "/loop2.xml": _index([f"{b}/loop.xml"]),
        "/urls.txt": f"{b}/p/from-text-1\n{b}/p/from-text-2\nhttps://evil.example.net/p/t\n".encode(),
    })
    yield srv
    srv.stop()


def test_on_domain_and_reasons():
    allowed = ["example.com", "https://shop.example.es/"]
    assert on_domain("https://example.com/p/1", allowed)
    assert on_domain("https://www.example.com/p/1", allowed)
    assert on_domain("http://shop.example.es:8443/p", allowed)
    assert not on_domain("https://notexample.com/", allowed)
    assert not on_domain("https://example.com.evil.net/", allowed)
    assert url_problem("https://evil.net/p", allowed) == "other host evil.net"
    assert url_problem("http://127.0.0.1/", allowed) == "IP literal"
    assert url_problem("http://[::1]:8080/", allowed) == "IP literal"
    assert url_problem("http://2130706433/", allowed) == "IP literal"
    assert url_problem("http://0x7f.1/", allowed) == "IP literal"
    assert url_problem("javascript:alert(1)", allowed).startswith("non-http(s) scheme")
    assert url_problem("file:///etc/passwd", allowed).startswith("non-http(s) scheme")
    assert url_problem("https://example.com@evil.net/", allowed) == "other host evil.net"
    assert url_problem("https://u:p@example.com/", allowed) == "credentials in URL"
    assert url_problem("/relative", allowed) == "not an absolute URL"


def test_include_exclude_patterns():
    assert url_matches("https://a.com/p/shoe-1", include=["*/p/*"])
    assert not url_matches("https://a.com/blog/x", include=["*/p/*"])
    assert url_matches("https://a.com/p/shoe-1", include=[r"re:/p/[a-z-]+-\d+$"])
    assert not url_matches("https://a.com/p/shoe-1?ref=x", exclude=["*?*"])
    assert not url_matches("https://a.com/p/gift-card", include=["*/p/*"], exclude=["re:gift"])
    kept, dropped, filtered, truncated = filter_urls(
        ["https://a.com/p/1", "https://a.com/p/1#x", "https://b.com/p/2", "https://a.com/about",
         "https://a.com/p/3", "https://a.com/p/4"],
        allowed_domains=["a.com"], include=["*/p/*"], max_urls=2)
    assert kept == ["https://a.com/p/1", "https://a.com/p/3"]
    assert dropped == [("https://b.com/p/2", "other host b.com")]
    assert filtered == 1 and truncated


def test_robots_index_and_gzipped_children(server: _Server):
    b = server.base
    res = discover(b + "/", allowed_domains=["localhost"], include=["*/p/*"])
    assert isinstance(res, DiscoveryResult)
    assert res.urls == [f"{b}/p/nike-pegasus-41", f"{b}/p/adidas-ultraboost", f"{b}/p/asics-novablast-4",
                        f"http://www.localhost:{server.port}/p/sub-domain-ok", f"{b}/p/hoka-clifton-9"]
    assert res.sitemaps_read == 4     # index + 3 children; robots.txt not counted
    assert res.filtered_out == 1      # /about
    reasons = dict(res.dropped)
    assert reasons["https://cdn.other-shop.example/sitemap.xml"].endswith("other host cdn.other-shop.example")
    assert "IP literal" in reasons["http://169.254.169.254/latest/sitemap.xml"]
    assert "/cart" not in " ".join(server.hits)


def test_hostile_urls_are_dropped_with_reasons(server: _Server):
    b = server.base
    res = discover(b + "/hostile.xml", allowed_domains=["localhost"])
    assert res.urls == [f"{b}/p/fine"]
    reasons = dict(res.dropped)
    assert reasons["https://evil.example.net/p/x"] == "other host evil.example.net"
    assert reasons["http://127.0.0.1/admin"] == "IP literal"
    assert reasons["http://[::1]/x"] == "IP literal"
    assert reasons["http://2130706433/x"] == "IP literal"
    assert reasons["javascript:alert(1)"].startswith("non-http(s) scheme")
    assert reasons["ftp://localhost/file"].startswith("non-http(s) scheme")
    assert reasons[f"http://user:pw@localhost:{server.port}/p/y"] == "credentials in URL"
    assert reasons[f"http://localhost.evil.example.net:{server.port}/p/z"].startswith("other host")


def test_redirect_leaving_the_domain_is_refused(server: _Server):
    b = server.base
    res = discover(b + "/moved.xml", allowed_domains=["localhost"])
    assert res.urls == []
    assert any(u == f"{b}/moved.xml" and "redirect to https://evil.example.net/sitemap.xml refused" in r
               for u, r in res.dropped)
    res = discover(b + "/moved-ip.xml", allowed_domains=["localhost"])
    assert res.urls == [] and any("IP literal" in r for _, r in res.dropped)
    assert "/sitemaps/pages.xml" not in server.hits[-1:]     # the refused target was never fetched
    # a redirect inside the domain is followed
    res = discover(b + "/moved-ok.xml", allowed_domains=["localhost"])
    assert res.urls == [f"{b}/about", f"{b}/p/hoka-clifton-9"]


def test_gzip_bomb_refused_in_bounded_memory(server: _Server):
    cap = 10_000_000
    tracemalloc.start()
    try:
        with pytest.raises(SitemapTooLarge) as exc:
            discover(server.base + "/bomb.xml.gz", allowed_domains=["localhost"], max_bytes=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "bomb.xml.gz" in str(exc.value) and "10,000,000" in str(exc.value)
    assert peak < 4 * cap, peak            # never anywhere near the 200 MB the bomb inflates to


def test_bomb_inside_an_index_and_transport_gzip(server: _Server):
    with pytest.raises(SitemapTooLarge):
        discover(server.base + "/bomb-index.xml", allowed_domains=["localhost"], max_bytes=5_000_000)
    with pytest.raises(SitemapTooLarge):
        discover(server.base + "/transport-bomb.xml", allowed_domains=["localhost"], max_bytes=5_000_000)


def test_sitemap_count_cap_and_loops(server: _Server):
    b = server.base
    res = discover(b + "/sitemap_index.xml", allowed_domains=["localhost"], max_sitemaps=2)
    assert res.sitemaps_read == 2
    assert res.urls == [f"{b}/p/nike-pegasus-41", f"{b}/p/adidas-ultraboost"]
    assert sum("sitemap limit (2) reached" in r for _, r in res.dropped) == 2
    res = discover(b + "/loop.xml", allowed_domains=["localhost"])
    assert res.urls == [] and res.sitemaps_read <= 3


def test_plain_text_sitemap_and_max_urls(server: _Server):
    b = server.base
    res = discover(b + "/urls.txt", allowed_domains=["localhost"], max_urls=1)
    assert res.urls == [f"{b}/p/from-text-1"] and res.truncated


def test_custom_fetch_and_refused_start():
    calls: list[str] = []

    def fetch(url: str, limit: int) -> RawResponse:
        calls.append(url)
        if url.endswith("/robots.txt"):
            return RawResponse(404, {}, b"", url)
        if url.endswith("/sitemap.xml"):
            return RawResponse(200, {"Content-Type": "text/xml"}, _urlset(["https://shop.test/p/a"]), url)
        return RawResponse(404, {}, b"", url)

    res = discover("https://shop.test/", allowed_domains=["shop.test"], fetch=fetch)
    assert res.urls == ["https://shop.test/p/a"]
    assert calls[:2] == ["https://shop.test/robots.txt", "https://shop.test/sitemap.xml"]
    assert not any("sitemap_index.xml" in u for u, _ in res.dropped)   # guessed 404s are not noise
    with pytest.raises(SitemapError):
        discover("https://other.test/sitemap.xml", allowed_domains=["shop.test"], fetch=fetch)
