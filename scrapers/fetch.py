"""Getting pages over plain HTTP, politely: aiohttp, per-domain limits, robots.txt, size cap, retries.

Why aiohttp and not httpx: on this 2-core machine an httpx AsyncClient fetched 2,000 local pages in 6.2 s
where aiohttp took 0.9 s (shared/MEASURED.md, re-measured by bench/throughput.py); the fetch loop is the
hot path of every check, so it uses the faster client. httpx stays for one-off synchronous calls.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from protego import Protego

from scrapers.errors import FetchError

TEXT_TYPES = ("text/", "application/xhtml", "application/xml", "application/json", "application/ld+json")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


@dataclass(frozen=True)
class Page:
    """A fetched page: where we asked, where we ended up, what came back."""

    url: str
    final_url: str
    status: int
    headers: Mapping[str, str]
    text: str
    via: str = "http"            # http | browser
    elapsed_s: float = 0.0


@dataclass
class Politeness:
    """Per-domain limits: at most `concurrency` requests in flight and `delay_s` between request starts."""

    concurrency: int = 2
    delay_s: float = 1.0
    jitter: float = 0.25         # +/- share of delay_s, so requests to one site do not tick like a clock


@dataclass
class _DomainGate:
    semaphore: asyncio.Semaphore
    next_start: float = 0.0      # monotonic time before which no request may start
    cool_down_until: float = 0.0


def domain_key(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def decode_body(body: bytes, content_type: str | None) -> str:
    """Bytes to text: the header's charset, else the page's <meta charset>, else UTF-8 (lenient)."""
    charset = None
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'")
    if not charset:
        m = _META_CHARSET.search(body[:4096])
        charset = m.group(1).decode("ascii", "ignore") if m else "utf-8"
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        # Pages often lie about their charset: keep UTF-8 when it decodes, else cp1252 (never fails).
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body.decode("cp1252", errors="replace")


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Read a body until EOF or until `limit` bytes. (`StreamReader.read(n)` returns as soon as *some*
    bytes are buffered, often one 64 KB chunk, so a single call silently truncates bigger pages and lets
    a chunked 20 MB page through the size cap.)"""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(min(limit - size, 1 << 18))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _cert_problem(exc: aiohttp.ClientConnectorCertificateError) -> str:
    err = exc.certificate_error
    return str(getattr(err, "verify_message", None) or getattr(err, "reason", None) or err)


class HttpFetcher:
    """Async HTTP fetcher shared by all checks of a process. Use as `async with HttpFetcher(...) as f`."""

    kind = "http"

    def __init__(self, *, user_agent: str, timeout_s: float = 20, max_bytes: int = 5_000_000,
                 retries: int = 2, politeness: Politeness | None = None, verify_tls: bool = True,
                 max_connections: int = 64, respect_robots: bool = True,
                 limiter: Any | None = None):
        self.user_agent = user_agent
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10))
        self.max_bytes = max_bytes
        self.retries = retries
        self.politeness = politeness or Politeness()
        self.verify_tls = verify_tls
        self.max_connections = max_connections
        self.respect_robots = respect_robots
        # An optional shared limiter (e.g. Redis-backed, across machines) replaces the in-process gates.
        self.limiter = limiter
        self._gates: dict[str, _DomainGate] = {}
        self._robots: dict[str, Protego | None] = {}
        self._robots_locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "HttpFetcher":
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0,
                                         ssl=None if self.verify_tls else False, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout, auto_decompress=True,
            headers={"User-Agent": self.user_agent,
                     "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
                     "Accept-Language": "en;q=0.8,*;q=0.5"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- politeness ---------------------------------------------------------------------------------------

    def _gate(self, domain: str) -> _DomainGate:
        gate = self._gates.get(domain)
        if gate is None:
            gate = self._gates[domain] = _DomainGate(asyncio.Semaphore(self.politeness.concurrency))
        return gate

    async def _wait_turn(self, gate: _DomainGate) -> None:
        # Claiming a start time never awaits, so it needs no lock: on one event loop no other request of
        # the domain can run between reading and moving `next_start`.
        now = time.monotonic()
        start = max(now, gate.next_start, gate.cool_down_until)
        delay = self.politeness.delay_s
        if delay:
            delay *= 1 + random.uniform(-self.politeness.jitter, self.politeness.jitter)
        gate.next_start = start + delay
        if start > now:
            await asyncio.sleep(start - now)

    def cool_down(self, url: str, seconds: float) -> None:
        """Pause all requests to this URL's domain (after a 429 / Retry-After)."""
        gate = self._gate(domain_key(url))
        gate.cool_down_until = max(gate.cool_down_until, time.monotonic() + seconds)

    # -- robots.txt ---------------------------------------------------------------------------------------

    async def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            lock = self._robots_locks.setdefault(origin, asyncio.Lock())
            async with lock:
                if origin not in self._robots:
                    self._robots[origin] = await self._load_robots(origin)
        robots = self._robots[origin]
        return robots is None or robots.can_fetch(url, self.user_agent)

    async def _load_robots(self, origin: str) -> Protego | None:
        # robots.txt is a request to the site like any other: it waits for its turn in the domain's limits.
        domain = domain_key(origin)
        if self.limiter is not None:
            async with self.limiter.slot(domain):
                return await self._get_robots(origin)
        gate = self._gate(domain)
        async with gate.semaphore:
            await self._wait_turn(gate)
            return await self._get_robots(origin)

    async def _get_robots(self, origin: str) -> Protego | None:
        assert self._session is not None
        try:
            async with self._session.get(origin + "/robots.txt", allow_redirects=True) as resp:
                if resp.status >= 400:
                    return None  # no robots.txt (or an error page): everything is allowed
                body = await read_capped(resp.content, 500_000)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
        return Protego.parse(body.decode("utf-8", errors="replace"))

    # -- fetching -----------------------------------------------------------------------------------------

    async def fetch(self, url: str, *, respect_robots: bool | None = None) -> Page:
        """GET a page, with retries and backoff on timeouts, 5xx and 429. Raises FetchError."""
        if self._session is None:
            raise RuntimeError("HttpFetcher used outside `async with`")
        robots = self.respect_robots if respect_robots is None else respect_robots
        if robots and not await self.allowed(url):
            raise FetchError(f"robots.txt disallows {url} (set respect_robots: false for this rival to override)")
        # The first attempt runs directly; the retry machinery is built only once it failed retryably.
        try:
            return await self._fetch_once(url)
        except FetchError as exc:
            if not exc.retryable or self.retries < 1:
                raise
            first = exc
        return await self._retry(url, first)

    async def _retry(self, url: str, first: FetchError) -> Page:
        """Attempts 2.. after a retryable first failure: tenacity replays `first` as its attempt 1, so the
        stop, wait (backoff, Retry-After) and retry rules are exactly those of a retry loop from the start.
        tenacity is imported here, on the first retry: a pass whose pages all answer never loads it."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, FetchError) and e.retryable),
            reraise=True,
        )
        replayed = False
        async for attempt in retrying:
            with attempt:
                if not replayed:
                    replayed = True
                    raise first
                return await self._fetch_once(url)
        raise AssertionError("unreachable")

    @staticmethod
    def _wait(state: Any) -> float:
        from tenacity import wait_exponential_jitter

        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_exponential_jitter(initial=1, max=30)(state)
        if isinstance(exc, FetchError) and exc.retry_after is not None:
            return max(backoff, min(exc.retry_after, 300))
        return backoff

    async def _fetch_once(self, url: str) -> Page:
        assert self._session is not None
        domain = domain_key(url)
        started = time.monotonic()
        if self.limiter is not None:
            async with self.limiter.slot(domain):
                return await self._request(url, started)
        gate = self._gate(domain)
        async with gate.semaphore:
            await self._wait_turn(gate)
            return await self._request(url, started)

    async def _request(self, url: str, started: float) -> Page:
        assert self._session is not None
        try:
            async with self._session.get(url, allow_redirects=True, max_redirects=10) as resp:
                if resp.status == 429 or resp.status == 503:
                    wait = retry_after_seconds(resp.headers.get("Retry-After"))
                    if wait is not None:
                        self.cool_down(url, min(wait, 3600))
                        if self.limiter is not None:
                            await self.limiter.cool_down(domain_key(url), min(wait, 3600))
                    raise FetchError(f"HTTP {resp.status} from {urlsplit(url).hostname}"
                                     + (f" (Retry-After {wait:.0f}s)" if wait is not None else ""),
                                     retryable=True, retry_after=wait, status=resp.status)
                if resp.status >= 500:
                    raise FetchError(f"HTTP {resp.status} server error", retryable=True, status=resp.status)
                ctype = resp.headers.get("Content-Type", "")
                if ctype and not ctype.lower().startswith(TEXT_TYPES):
                    raise FetchError(f"not a web page: Content-Type {ctype.split(';')[0]}", status=resp.status)
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise FetchError(f"page is {int(length):,} bytes, over the {self.max_bytes:,}-byte cap",
                                     status=resp.status)
                body = await read_capped(resp.content, self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise FetchError(f"page is over the {self.max_bytes:,}-byte cap", status=resp.status)
                # resp.headers (a read-only, case-insensitive multidict) outlives the response: no copy
                return Page(url=url, final_url=str(resp.url), status=resp.status, headers=resp.headers,
                            text=decode_body(body, ctype), via="http", elapsed_s=time.monotonic() - started)
        except FetchError:
            raise
        except aiohttp.TooManyRedirects:
            raise FetchError("too many redirects (a redirect loop?)") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FetchError(f"TLS certificate of {exc.host} not trusted: {_cert_problem(exc)} (set "
                             f"http.verify_tls: false only for a site you know)") from None
        except aiohttp.ClientSSLError as exc:
            raise FetchError(f"TLS handshake with {exc.host} failed: {exc.os_error}") from None
        except aiohttp.ClientConnectorDNSError as exc:
            raise FetchError(f"DNS lookup failed for {exc.host}", retryable=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise FetchError(f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}",
                             retryable=True) from None
        except asyncio.TimeoutError:
            raise FetchError(f"timed out after {self.timeout.total:.0f}s", retryable=True) from None
        except aiohttp.ClientPayloadError as exc:
            raise FetchError(f"broken response body: {exc}", retryable=True) from None
        except aiohttp.InvalidURL:
            raise FetchError(f"invalid URL {url!r}") from None
        except aiohttp.ClientError as exc:
            raise FetchError(f"HTTP error: {exc.__class__.__name__}: {exc}", retryable=True) from None
