"""Shared fixtures: real databases (SQLite file, a fresh PostgreSQL database), a fixture shop on
127.0.0.1 served from a background thread, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message

import psycopg
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    yield from _pg_database()


@pytest.fixture
def pg_url2() -> Iterator[str]:
    """A second fresh PostgreSQL database, for tests that compare two."""
    yield from _pg_database()


def _pg_database() -> Iterator[str]:
    if not _pg_available():
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 (.ci/run starts it)")
    name = f"tracker_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Run the test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tracker.db'}"
    return request.getfixturevalue("pg_url")


class ThreadServer:
    """An aiohttp app served on a loopback address from its own thread and event loop (usable from sync
    tests, subprocesses and other event loops alike), optionally over TLS."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", *, ssl_context=None,  # type: ignore[no-untyped-def]
                 backlog: int = 128):
        self.app = app
        self.host = host
        self.ssl_context = ssl_context
        self.backlog = backlog
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, 0, ssl_context=self.ssl_context, backlog=self.backlog)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def start(self) -> "ThreadServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"


@dataclass
class FixtureShop:
    """A shop whose product pages (JSON-LD + HTML) change when a test edits `products`."""

    products: dict[str, dict] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    server: ThreadServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def page(self, slug: str) -> str | None:
        p = self.products.get(slug)
        if p is None:
            return None
        avail = "InStock" if p.get("in_stock", True) else "OutOfStock"
        offers = {"@type": "Offer", "price": p["price"], "priceCurrency": p.get("currency", "EUR"),
                  "availability": f"https://schema.org/{avail}"}
        import json

        extra = {}
        if p.get("rating"):
            extra["aggregateRating"] = {"@type": "AggregateRating", "ratingValue": p["rating"],
                                        "reviewCount": p.get("reviews", 0)}

        badge = f'<span class="badge">{p["badge"]}</span>' if p.get("badge") else ""
        buy = "<button>Add to cart</button>" if avail == "InStock" else "<p class=\"stock\">Out of stock</p>"
        was = f'<del class="was">{p["regular"]} €</del>' if p.get("regular") else ""
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{p["name"]}</title>'
                f'<script type="application/ld+json">{json.dumps({"@context": "https://schema.org", "@type": "Product", "name": p["name"], "sku": slug, "offers": offers, **extra})}</script>'
                f'</head><body><h1>{p["name"]}</h1>{badge}{was}<span class="price">{p["price"]} €</span>'
                f'{buy}</body></html>')


@pytest.fixture
def shop() -> Iterator[FixtureShop]:
    state = FixtureShop()
    app = web.Application()

    async def product(request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        state.hits.append(slug)
        body = state.page(slug)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(text=body, content_type="text/html")

    async def robots(_request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /private/\n")

    app.router.add_get("/p/{slug}", product)
    app.router.add_get("/robots.txt", robots)
    state.server = ThreadServer(app).start()
    yield state
    state.server.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content, policy=policy.default))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: _Collect

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 that accepts and keeps every message."""
    handler = _Collect()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


@pytest.fixture
def write_config(tmp_path) -> Callable[[str], "object"]:  # type: ignore[no-untyped-def]
    from pathlib import Path

    def write(text: str, name: str = "tracker.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
