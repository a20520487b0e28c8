"""Fixtures of the scale-out tests: real Redis (own database number, flushed per test), real PostgreSQL,
fixture shops on distinct loopback hosts (127.0.0.2..6 are distinct hosts on Linux), worker and
dispatcher processes started as a user starts them (`python -m tracker.cli worker ...`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from aiohttp import web

from tests.conftest import ThreadServer



def fixture_server(app: web.Application, host: str) -> ThreadServer:
    """The shared fixture server (tests/conftest.py) on one loopback host, with a deep accept queue."""
    return ThreadServer(app, host, backlog=1024)


REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 9
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")

# Short timings so a dead worker is noticed in seconds (production defaults: 60 s, 600 s, 30 s).
FAST_ENV = {
    "TRACKER_QUEUE_HEARTBEAT_TIMEOUT_S": "2",
    "TRACKER_QUEUE_MAINTENANCE_CHANCE": "1000000",
    "TRACKER_QUEUE_TICK_S": "0.2",
    "TRACKER_QUEUE_LEASE_TTL_S": "3",
    "TRACKER_QUEUE_RESEND_AFTER_S": "30",
}


def redis_available(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    if not redis_available(url):
        pytest.fail("Redis is not reachable at 127.0.0.1:6379 (.ci/run starts it)")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(autouse=True)
def _fast_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TRACKER_BROKER_URL", raising=False)


# ------------------------------------------------------------------------------------------------------
# Fixture shops on several hosts, counting concurrent requests per host

@dataclass
class Host:
    """One shop on its own loopback address: product pages, a JavaScript page, concurrency counters."""

    ip: str
    delay_s: float = 0.02
    prices: dict[str, str] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    hold: dict[str, float] = field(default_factory=dict)      # slug -> seconds to stall its price API
    started: dict[str, threading.Event] = field(default_factory=lambda: defaultdict(threading.Event))
    server: ThreadServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def _enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def app(self) -> web.Application:
        import asyncio

        app = web.Application()

        async def product(request: web.Request) -> web.Response:
            slug = request.match_info["slug"]
            self._enter()
            try:
                self.hits[slug] += 1
                self.started[slug].set()
                await asyncio.sleep(self.delay_s)
                price = self.prices.get(slug, "10.00")
                ld = {"@context": "https://schema.org", "@type": "Product", "name": f"Item {slug}", "sku": slug,
                      "offers": {"@type": "Offer", "price": price, "priceCurrency": "EUR",
                                 "availability": "https://schema.org/InStock"}}
                body = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Item {slug}</title>'
                        f'<script type="application/ld+json">{json.dumps(ld)}</script></head><body>'
                        f'<h1>Item {slug}</h1><span class="price">{price} €</span>'
                        f'<button>Add to cart</button></body></html>')
                return web.Response(text=body, content_type="text/html")
            finally:
                self._leave()

        async def js_page(request: web.Request) -> web.Response:
            slug = request.match_info["slug"]
            self._enter()
            try:
                self.hits[f"js:{slug}"] += 1
                body = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>JS {slug}</title></head>'
                        f'<body><h1>JS item {slug}</h1><div id="price"></div><button>Add to cart</button>'
                        f'<script>fetch("/api/{slug}").then(r => r.json()).then(d => {{'
                        f'document.getElementById("price").innerHTML = '
                        f'\'<span class="price">\' + d.price + " €</span>"; }});</script></body></html>')
                return web.Response(text=body, content_type="text/html")
            finally:
                self._leave()

        async def api(request: web.Request) -> web.Response:
            slug = request.match_info["slug"]
            self.hits[f"api:{slug}"] += 1
            self.started[f"api:{slug}"].set()
            stall = self.hold.pop(slug, 0.0)
            if stall:
                await asyncio.sleep(stall)
            return web.json_response({"price": self.prices.get(slug, "10.00")})

        app.router.add_get("/p/{slug}", product)
        app.router.add_get("/js/{slug}", js_page)
        app.router.add_get("/api/{slug}", api)
        return app


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started = []
    for ip in HOSTS:
        host = Host(ip)
        host.server = fixture_server(host.app(), ip).start()
        started.append(host)
    yield started
    for host in started:
        host.server.stop()  # type: ignore[union-attr]


def write_config(path: Path, *, database: str, broker: str, products: list[tuple[str, str, str]],
                 concurrency: int = 2, delay_s: float = 0.0, extra: str = "") -> Path:
    """products: (rival, url, fetch). One rival per host."""
    rivals: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rival, url, fetch in products:
        rivals[rival].append((url, fetch))
    lines = [f"database: {database}", "timezone: UTC",
             "queue:", f"  broker: {broker}",
             "http:", f"  per_domain_concurrency: {concurrency}", f"  per_domain_delay_s: {delay_s}",
             "  retries: 0", "  timeout_s: 10", "  respect_robots: false",
             "browser:", "  executable: /usr/bin/chromium", "  concurrency: 2", "  timeout_s: 20",
             "schedules:", "  prices: null", "  report: null"]
    lines += extra.splitlines()
    lines.append("rivals:")
    for rival, items in rivals.items():
        lines.append(f"  - name: {rival}")
        lines.append("    products:")
        for url, fetch in items:
            lines.append(f'      - {{url: "{url}", fetch: {fetch}}}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------
# Processes

class Procs:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        proc = subprocess.Popen([sys.executable, "-m", "tracker.cli", *args], cwd=REPO, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = self.tmp_path / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def worker(self, config: Path, *, queues: str = "http,browser,serp,notify", threads: int = 8,
               name: str = "worker", env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start("worker", "--config", str(config), "--queues", queues, "--threads", str(threads),
                          name=name, env=env)

    @staticmethod
    def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """SIGKILL the whole process group: the worker and its Chromium, as if the machine died."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(proc)

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop_all()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def workers_ready(redis_url: str, n: int) -> Callable[[], bool]:
    client = redis.Redis.from_url(redis_url)
    return lambda: client.hlen("rivalwatch:workers") >= n


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free port (never the machine's shared one), to kill and restart."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.dir = tmp_path / "redis"
        self.dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_available(self.url), 10, "redis-server to start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()
