"""Misbehaving servers for the fault tests, all on 127.0.0.1.

* `FaultShop`: an aiohttp shop whose page `/t/<name>` is a normal product page while `modes[name]` is
  "ok" and misbehaves the way `<name>` says otherwise (500, 429 + Retry-After, a hang, a trickle of
  bytes, a redirect loop, 20 MB, a PDF, a CAPTCHA, a consent wall, a layout without a price, ...). Every
  request is timed (`hits[name]`), so tests can assert how often and how far apart it was retried.
* `RawServer`: a raw TCP server that accepts and then resets the connection or answers garbage.
* `refused_url` / `dns_fail_url`: nothing listens there / the name does not resolve.
* `tls_shop`: an HTTPS shop with a self-signed certificate.

Each server runs in its own thread with its own event loop, so the code under test (its own loop,
or a subprocess) talks to it over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import ThreadServer

MB = 1 << 20


def ServerThread(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> ThreadServer:
    """The shared fixture server (tests/conftest.py), on 127.0.0.1, optionally over TLS."""
    return ThreadServer(app, ssl_context=ssl_context)


def product_html(name: str, price: str, currency: str = "EUR") -> str:
    ld = {"@context": "https://schema.org", "@type": "Product", "name": name, "sku": name.lower(),
          "offers": {"@type": "Offer", "price": price, "priceCurrency": currency,
                     "availability": "https://schema.org/InStock"}}
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{name}</title>'
            f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body>'
            f'<h1>{name}</h1><span class="price">{price} €</span><button>Add to cart</button>'
            + "".join(f'<a href="/c/{i}">Category {i}</a>' for i in range(20)) + "</body></html>")


CAPTCHA_PAGE = """<!DOCTYPE html><html><head><title>Are you a robot?</title></head><body>
<h1>Please verify you are a human</h1><div class="g-recaptcha" data-sitekey="x"></div>
<script src="https://www.google.com/recaptcha/api.js"></script></body></html>"""

CONSENT_PAGE = """<!DOCTYPE html><html><head><title>Your privacy choices</title></head><body>
<div id="consent-wall"><h2>We value your privacy</h2><p>We and our partners use cookies to give you the best
experience. Choose Accept all to agree or Manage options.</p><button>Accept all</button>
<button>Manage options</button></div></body></html>"""

# The shop redesigned its product page: the product is still there, the price element is gone.
LAYOUT_CHANGED_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Kettle</title></head>
<body><h1>Kettle</h1><div class="pdp-v2"><p>Stainless steel kettle, 1.7 litres, 2200 W.</p>
<p>Reviews: many happy customers.</p></div></body></html>"""


@dataclass
class FaultShop:
    server: ServerThread | None = None
    modes: dict[str, str] = field(default_factory=lambda: defaultdict(lambda: "fault"))
    prices: dict[str, str] = field(default_factory=lambda: defaultdict(lambda: "19.99"))
    hits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    fail_times: dict[str, int] = field(default_factory=dict)   # name -> misbehave this many times, then ok

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def page_url(self, name: str) -> str:
        return f"{self.url}/t/{name}"

    def gaps(self, name: str) -> list[float]:
        t = self.hits[name]
        return [b - a for a, b in zip(t, t[1:])]


async def _misbehave(kind: str, request: web.Request) -> web.StreamResponse:
    if kind == "500":
        return web.Response(status=500, text="<h1>Internal Server Error</h1>", content_type="text/html")
    if kind == "503":
        return web.Response(status=503, text="<h1>Service Unavailable</h1><p>Down for maintenance, "
                            "back soon. Price: 0,00 €</p>", content_type="text/html")
    if kind == "429":
        return web.Response(status=429, text="slow down", headers={"Retry-After": "2"})
    if kind == "404":
        return web.Response(status=404, text="<h1>Not found</h1><p>0.00 €</p>", content_type="text/html")
    if kind == "timeout":
        await asyncio.sleep(3)  # the client gives up after http.timeout_s (1 s in these tests)
        return web.Response(text="too late")
    if kind == "trickle":  # headers at once, then one byte every 0.2 s: each read succeeds, the page never ends
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        try:
            for _ in range(25):
                await resp.write(b" ")
                await asyncio.sleep(0.2)
        except (ConnectionError, RuntimeError):
            pass
        return resp
    if kind == "redirect_loop":
        name = request.match_info["name"]
        hop = int(request.query.get("hop", "0")) + 1
        raise web.HTTPFound(f"/t/{name}?hop={hop % 2}")
    if kind == "huge":  # 20 MB, announced in Content-Length
        return web.Response(body=b"<html><body>" + b"x" * (20 * MB) + b"</body></html>",
                            content_type="text/html")
    if kind == "huge_chunked":  # 20 MB, chunked: no Content-Length to refuse it up front
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        chunk = b"<p>" + b"y" * (256 * 1024 - 7) + b"</p>"
        try:
            for _ in range(80):
                await resp.write(chunk)
        except (ConnectionError, RuntimeError):
            return resp
        await resp.write_eof()
        return resp
    if kind == "pdf":
        return web.Response(body=b"%PDF-1.4\n" + b"0" * 1000, content_type="application/pdf")
    if kind == "captcha":
        return web.Response(text=CAPTCHA_PAGE, content_type="text/html")
    if kind == "consent":
        return web.Response(text=CONSENT_PAGE, content_type="text/html")
    if kind == "layout":
        return web.Response(text=LAYOUT_CHANGED_PAGE, content_type="text/html")
    if kind == "empty":
        return web.Response(body=b"", content_type="text/html")
    if kind == "truncated":  # promises 50 KB, sends 1 KB, hangs up
        resp = web.StreamResponse(headers={"Content-Type": "text/html", "Content-Length": "50000"})
        await resp.prepare(request)
        await resp.write(b"<html><body>" + b"z" * 1000)
        request.transport.close()  # type: ignore[union-attr]
        return resp
    raise web.HTTPBadRequest(text=f"unknown fault {kind}")


def make_fault_shop() -> FaultShop:
    state = FaultShop()
    app = web.Application()

    async def target(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        state.hits[name].append(time.monotonic())
        mode = state.modes[name]
        left = state.fail_times.get(name)
        if left is not None:
            if left <= 0:
                mode = "ok"
            else:
                state.fail_times[name] = left - 1
        if mode == "ok":
            return web.Response(text=product_html("Kettle", state.prices[name]),
                                content_type="text/html")
        return await _misbehave(name.split("-")[0], request)

    async def robots(_request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    app.router.add_get("/t/{name}", target)
    app.router.add_get("/robots.txt", robots)
    state.server = ServerThread(app).start()
    return state


@pytest.fixture
def fault_shop() -> Iterator[FaultShop]:
    shop = make_fault_shop()
    yield shop
    assert shop.server is not None
    shop.server.stop()


@pytest.fixture
def serve_app() -> Iterator[callable]:  # type: ignore[valid-type]
    """serve_app(app) -> a started ServerThread, stopped after the test."""
    servers: list[ServerThread] = []

    def start(app: web.Application) -> ServerThread:
        servers.append(ServerThread(app).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


class RawServer:
    """A TCP server speaking no HTTP: `reset` closes every connection at once (RST), `garbage` answers
    with bytes that are not an HTTP response."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            try:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                if self.behaviour == "garbage":
                    conn.sendall(b"\x00\x01SSH-2.0-OpenSSH_9.6 not http at all\r\n\r\n\xff\xfe")
                else:  # reset: SO_LINGER 0 turns close() into a RST
                    import struct

                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/t/raw"


@pytest.fixture
def raw_server() -> Iterator[callable]:  # type: ignore[valid-type]
    servers: list[RawServer] = []

    def start(behaviour: str) -> RawServer:
        servers.append(RawServer(behaviour))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refused_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/t/refused"


@pytest.fixture
def dns_fail_url() -> str:
    return "http://shop.no-such-rival.invalid/t/dns"  # .invalid never resolves (RFC 6761)


# -- TLS -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_shop(self_signed) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    cert, key = self_signed
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=product_html("Kettle", "24.50"), content_type="text/html")

    async def robots(_request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nAllow: /\n")

    app.router.add_get("/t/{name}", page)
    app.router.add_get("/robots.txt", robots)
    server = ServerThread(app, ssl_context=ctx).start()
    yield server
    server.stop()


# -- a TCP proxy that can be cut (a database that goes away mid-run) -------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a backend. `cut()` closes every connection and refuses new ones
    (the database "goes away"); `restore()` accepts again."""

    def __init__(self, backend: tuple[str, int]):
        self.backend = backend
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.up = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.backend, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(None)
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self._stop = True
        self.listener.close()


@pytest.fixture
def make_proxy() -> Iterator[callable]:  # type: ignore[valid-type]
    """make_proxy((host, port)) -> a started CuttableProxy, closed after the test."""
    proxies: list[CuttableProxy] = []

    def make(backend: tuple[str, int]) -> CuttableProxy:
        proxies.append(CuttableProxy(backend))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()
