"""Sitemap discovery: which product URLs does a rival publish?

`discover(start_url, allowed_domains=...)` reads the `Sitemap:` lines of robots.txt (parsed with Protego)
or the sitemap given as `start_url`, then sitemap indexes, gzipped sitemaps, plain-text and RSS/Atom
sitemaps through ultimate-sitemap-parser (`usp`), with a web client of our own that:

* caps every document at `max_bytes` of **decompressed** data: the gzip stream is inflated with a bounded
  output buffer, so a gzip bomb stops after `max_bytes` with `SitemapTooLarge`, in bounded memory;
* follows redirects itself and refuses those that leave the allowed domains (or go to an IP literal,
  another scheme...);
* reads at most `max_sitemaps` sitemap documents (robots.txt not counted).

Everything a sitemap says is rival-controlled: page and child-sitemap URLs are kept only when they are
http(s) on one of `allowed_domains` (a domain allows its subdomains: ``example.com`` allows
``www.example.com``). IP literals (``127.0.0.1``, ``[::1]``, ``2130706433``), other hosts, other schemes and
URLs with credentials are dropped and reported in `DiscoveryResult.dropped` as ``(url, reason)``.

`include` / `exclude` patterns are matched against the whole URL: a pattern starting with ``re:`` is a
Python regular expression (searched anywhere in the URL), anything else is a shell-style glob matched
against the full URL (``*/p/*``, ``*.html``), case-sensitively. A URL is kept when it matches at least one
include pattern (or there are none) and no exclude pattern.

Synchronous, like usp: the caller runs it in a thread (`asyncio.to_thread(discover, ...)`).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import re
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote_plus, urljoin, urlsplit

from protego import Protego
from usp.fetch_parse import SitemapFetcher
from usp.objects.sitemap import AbstractSitemap, InvalidSitemap
from usp.web_client.abstract_client import (
    AbstractWebClient,
    AbstractWebClientResponse,
    AbstractWebClientSuccessResponse,
    WebClientErrorResponse,
)

from scrapers.errors import FetchError
from scrapers.listing import normalize_url

__all__ = [
    "DiscoveryResult", "RawResponse", "SitemapError", "SitemapTooLarge", "discover", "on_domain",
    "url_problem", "url_matches", "filter_urls", "urllib_fetch",
]

log = logging.getLogger(__name__)

USER_AGENT = "Rivalwatch/0.1 (+sitemap discovery)"
_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5


class SitemapError(FetchError):
    """Discovery could not read the rival's sitemaps."""


class SitemapTooLarge(SitemapError):
    """A sitemap (after decompression) is larger than the cap: a misconfiguration or a gzip bomb."""

    def __init__(self, url: str, limit: int, *, compressed: bool):
        what = "decompresses to" if compressed else "is"
        super().__init__(f"sitemap {url} {what} more than {limit:,} bytes; refused (raise max_bytes if "
                         f"this sitemap is genuine)")
        self.url = url
        self.limit = limit


@dataclass(frozen=True)
class DiscoveryResult:
    urls: list[str]                                   # product URLs kept, in sitemap order, deduplicated
    dropped: list[tuple[str, str]]                    # (url, reason): off-domain, IP literal, redirects...
    sitemaps_read: int                                # sitemap documents fetched (robots.txt not counted)
    filtered_out: int = 0                             # on-domain URLs rejected by include / exclude
    truncated: bool = False                           # max_urls reached: more URLs were available
    sitemap_urls: list[str] = field(default_factory=list)   # the sitemaps read, in order


@dataclass(frozen=True)
class RawResponse:
    """What a `fetch` callable returns. It must NOT follow redirects (return the 3xx with its Location
    header) and must not read more than `limit + 1` body bytes. `body` is as sent (Content-Encoding not
    undone: `discover` inflates gzip itself, under the cap)."""

    status: int
    headers: Mapping[str, str]        # header names in any case
    body: bytes
    url: str


Fetch = Callable[[str, int], RawResponse]


# --------------------------------------------------------------------------------------------- URL policy

def _domain_of(entry: str) -> str:
    entry = entry.strip().lower()
    if "://" in entry:
        entry = urlsplit(entry).hostname or ""
    entry = entry.split("/", 1)[0].split(":", 1)[0] if not entry.startswith("[") else entry
    return entry.lstrip("*").strip(".")


def _is_ip_literal(host: str) -> bool:
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        pass
    # forms browsers and libc accept too: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
    return re.fullmatch(r"(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}\.?", h, re.I) is not None


def url_problem(url: str, allowed_domains: Sequence[str]) -> str | None:
    """Why `url` must not be followed (None when it is fine): "non-http(s) scheme", "IP literal",
    "other host", "credentials in URL", "malformed URL"."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return "malformed URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"non-http(s) scheme {parts.scheme.lower()!r}" if parts.scheme else "not an absolute URL"
    if not host:
        return "malformed URL"
    host = host.lower().rstrip(".")
    if _is_ip_literal(host):
        return "IP literal"
    if not any((dom := _domain_of(entry)) and (host == dom or host.endswith("." + dom))
               for entry in allowed_domains):
        return f"other host {host}"
    if parts.username is not None or parts.password is not None:
        return "credentials in URL"
    return None


def on_domain(url: str, allowed_domains: Sequence[str]) -> bool:
    """True when `url` is http(s) on one of `allowed_domains` (or a subdomain), not an IP literal."""
    return url_problem(url, allowed_domains) is None


def _compile(patterns: Sequence[str]) -> list[Callable[[str], bool]]:
    out: list[Callable[[str], bool]] = []
    for p in patterns:
        if p.startswith("re:"):
            rx = re.compile(p[3:])
            out.append(lambda u, rx=rx: rx.search(u) is not None)
        else:
            rx = re.compile(fnmatch.translate(p))
            out.append(lambda u, rx=rx: rx.match(u) is not None)
    return out


def url_matches(url: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Include / exclude filter (glob on the full URL, or ``re:`` + regex searched in it)."""
    inc, exc = _compile(include), _compile(exclude)
    return (not inc or any(f(url) for f in inc)) and not any(f(url) for f in exc)


def filter_urls(urls: Iterable[str], *, allowed_domains: Sequence[str], include: Sequence[str] = (),
                exclude: Sequence[str] = (), max_urls: int = 5000, base: str | None = None
                ) -> tuple[list[str], list[tuple[str, str]], int, bool]:
    """The same policy `discover` applies, for URLs found elsewhere (listing pages):
    `(kept, dropped, filtered_out, truncated)`."""
    inc, exc = _compile(include), _compile(exclude)
    kept: list[str] = []
    seen: set[str] = set()
    dropped: list[tuple[str, str]] = []
    filtered = 0
    for raw in urls:
        raw = (raw or "").strip()
        if not raw:
            continue
        if base and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", raw):
            raw = urljoin(base, raw)
        problem = url_problem(raw, allowed_domains)
        if problem:
            dropped.append((raw, problem))
            log.info("discovery: dropped %s (%s)", raw, problem)
            continue
        url = normalize_url(raw, raw) or raw
        if url in seen:
            continue
        if (inc and not any(f(url) for f in inc)) or any(f(url) for f in exc):
            filtered += 1
            continue
        if len(kept) >= max_urls:
            return kept, dropped, filtered, True
        seen.add(url)
        kept.append(url)
    return kept, dropped, filtered, False


# --------------------------------------------------------------------------------------------- fetching

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def urllib_fetch(url: str, limit: int, *, timeout: float = 30.0, user_agent: str = USER_AGENT) -> RawResponse:
    """Default `fetch`: stdlib urllib, no redirects followed, at most `limit + 1` body bytes read."""
    opener = urllib.request.build_opener(_NoRedirect())
    req = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept-Encoding": "gzip",
                                               "Accept": "application/xml,text/xml,text/plain,*/*;q=0.5"})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return RawResponse(resp.status, dict(resp.headers.items()), resp.read(limit + 1), resp.geturl())
    except urllib.error.HTTPError as e:
        body = b""
        try:
            body = e.read(min(limit + 1, 65536)) if e.fp else b""
        except OSError:
            pass
        return RawResponse(e.code, dict(e.headers.items()) if e.headers else {}, body, url)


def _is_gzip_path(url: str) -> bool:
    return unquote_plus(urlsplit(url).path).lower().endswith(".gz")


def _inflate(data: bytes, limit: int, url: str, *, keep: bool) -> bytes:
    """gunzip `data` (multi-member too) with at most `limit` bytes of output, else `SitemapTooLarge`.

    The output is produced `max_length` bytes at a time, so a bomb never allocates more than the cap;
    with `keep=False` the output is only counted (constant memory)."""
    out = bytearray()
    total = 0
    rest = data
    chunk = 1 << 20
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        buf = rest
        while buf:
            piece = d.decompress(buf, chunk)
            total += len(piece)
            if total > limit:
                raise SitemapTooLarge(url, limit, compressed=True)
            if keep:
                out += piece
            buf = d.unconsumed_tail
            if d.eof:
                break
        if not d.eof:
            # flush what is left of a truncated stream
            piece = d.flush(chunk)
            total += len(piece)
            if total > limit:
                raise SitemapTooLarge(url, limit, compressed=True)
            if keep:
                out += piece
            break
        rest = d.unused_data.lstrip(b"\x00")
        if rest[:2] != b"\x1f\x8b":
            break
    return bytes(out)


class _Response(AbstractWebClientSuccessResponse):
    def __init__(self, url: str, status: int, headers: Mapping[str, str], data: bytes):
        self._url, self._status, self._data = url, status, data
        self._headers = {k.lower(): v for k, v in headers.items()}

    def status_code(self) -> int:
        return self._status

    def status_message(self) -> str:
        try:
            return HTTPStatus(self._status).phrase
        except ValueError:
            return ""

    def header(self, case_insensitive_name: str) -> str | None:
        return self._headers.get(case_insensitive_name.lower())

    def raw_data(self) -> bytes:
        return self._data

    def url(self) -> str:
        return self._url


class _GuardedClient(AbstractWebClient):
    """usp web client enforcing the domain policy, the redirect policy, the size cap and the count cap."""

    def __init__(self, fetch: Fetch, *, allowed_domains: Sequence[str], max_bytes: int, max_sitemaps: int):
        self.fetch = fetch
        self.allowed = allowed_domains
        self.max_bytes = max_bytes
        self.max_sitemaps = max_sitemaps
        self.sitemaps_read = 0
        self.sitemap_urls: list[str] = []
        self.dropped: list[tuple[str, str]] = []
        self.fatal: SitemapError | None = None
        self.quiet: set[str] = set()       # guessed URLs whose 404 is not worth reporting

    def set_max_response_data_length(self, max_response_data_length: int | None) -> None:
        pass  # our own cap (max_bytes, on decompressed data) applies, not usp's

    def drop(self, url: str, reason: str) -> None:
        log.warning("discovery: dropped %s (%s)", url, reason)
        self.dropped.append((url, reason))

    def get_document(self, url: str) -> tuple[str, int, Mapping[str, str], bytes]:
        """(final_url, status, headers, decompressed-transport body); raises SitemapError on policy."""
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self.fetch(current, self.max_bytes)
            headers = {k.lower(): v for k, v in resp.headers.items()}
            if resp.status in _REDIRECTS:
                location = headers.get("location")
                if not location:
                    raise SitemapError(f"{current}: redirect without Location", status=resp.status)
                target = urljoin(current, location)
                problem = url_problem(target, self.allowed)
                if problem:
                    raise SitemapError(f"redirect to {target} refused ({problem})", status=resp.status)
                current = target
                continue
            body = resp.body
            if len(body) > self.max_bytes:
                raise SitemapTooLarge(current, self.max_bytes, compressed=False)
            if "gzip" in (headers.get("content-encoding") or "").lower():
                body = _inflate(body, self.max_bytes, current, keep=True)
                headers.pop("content-encoding", None)
            return current, resp.status, headers, body
        raise SitemapError(f"{url}: more than {_MAX_REDIRECTS} redirects")

    def get(self, url: str) -> AbstractWebClientResponse:
        if self.fatal is not None:
            return WebClientErrorResponse(f"aborted: {self.fatal}", retryable=False)
        problem = url_problem(url, self.allowed)
        if problem:
            self.drop(url, f"sitemap {problem}")
            return WebClientErrorResponse(problem, retryable=False)
        if self.sitemaps_read >= self.max_sitemaps:
            self.drop(url, f"sitemap limit ({self.max_sitemaps}) reached")
            return WebClientErrorResponse("sitemap limit reached", retryable=False)
        self.sitemaps_read += 1
        try:
            final, status, headers, body = self.get_document(url)
            if not 200 <= status < 300:
                if url not in self.quiet:
                    self.drop(url, f"sitemap unreadable: HTTP {status}")
                return WebClientErrorResponse(f"HTTP {status}", retryable=False)
            if body[:2] == b"\x1f\x8b":
                if _is_gzip_path(final) or "gzip" in (headers.get("content-type") or "").lower():
                    _inflate(body, self.max_bytes, final, keep=False)   # usp inflates it, now known small
                else:
                    body = _inflate(body, self.max_bytes, final, keep=True)
            self.sitemap_urls.append(final)
            return _Response(final, status, headers, body)
        except SitemapTooLarge as e:
            self.fatal = e
            self.drop(url, str(e))
            raise
        except SitemapError as e:
            self.drop(url, str(e))
            return WebClientErrorResponse(str(e), retryable=False)
        except (OSError, ValueError) as e:   # network errors, timeouts, bad URLs
            self.drop(url, f"sitemap unreadable: {e}")
            return WebClientErrorResponse(str(e), retryable=False)


# --------------------------------------------------------------------------------------------- discover

_SITEMAPISH = re.compile(r"(sitemap|\.xml(\.gz)?$|\.txt$|\.gz$|/feed/?$|\.rss$)", re.I)


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


def _leaf_sitemaps(sm: AbstractSitemap) -> Iterable[AbstractSitemap]:
    subs = sm.sub_sitemaps
    if not subs:
        yield sm
    for s in subs:
        yield from _leaf_sitemaps(s)


def discover(start_url: str, *, allowed_domains: Sequence[str], include: Sequence[str] = (),
             exclude: Sequence[str] = (), max_urls: int = 5000, max_sitemaps: int = 50,
             max_bytes: int = 50_000_000, fetch: Fetch | None = None) -> DiscoveryResult:
    """Product URLs from a rival's sitemaps.

    `start_url` is either a sitemap (a path with "sitemap", ``.xml``, ``.xml.gz``, ``.txt``) read directly,
    or any page of the site: then its robots.txt ``Sitemap:`` lines are read, falling back to
    ``/sitemap.xml`` and ``/sitemap_index.xml`` when robots.txt names none.

    `max_bytes` caps each document after decompression, `max_sitemaps` the number of sitemap documents,
    `max_urls` the URLs returned. `fetch(url, limit) -> RawResponse` replaces the HTTP client (default:
    `urllib_fetch`). Raises `SitemapTooLarge` on an oversized / bomb sitemap and `SitemapError` when the
    start URL itself is refused.
    """
    problem = url_problem(start_url, allowed_domains)
    if problem:
        raise SitemapError(f"start URL {start_url} refused: {problem}")
    client = _GuardedClient(fetch or urllib_fetch, allowed_domains=allowed_domains, max_bytes=max_bytes,
                            max_sitemaps=max_sitemaps)

    sitemap_urls: list[str] = []
    if _SITEMAPISH.search(urlsplit(start_url).path):
        sitemap_urls = [start_url]
    else:
        robots_url = _origin(start_url) + "/robots.txt"
        try:
            final, status, _, body = client.get_document(robots_url)
            if body[:2] == b"\x1f\x8b":
                body = _inflate(body, max_bytes, final, keep=True)
            if 200 <= status < 300:
                robots = Protego.parse(body.decode("utf-8", errors="replace"))
                for sm in robots.sitemaps:
                    sm_url = urljoin(final, sm.strip())
                    p = url_problem(sm_url, allowed_domains)
                    if p:
                        client.drop(sm_url, f"robots.txt sitemap {p}")
                    elif sm_url not in sitemap_urls:
                        sitemap_urls.append(sm_url)
        except SitemapTooLarge:
            raise
        except SitemapError as e:
            client.drop(robots_url, str(e))
        except (OSError, ValueError) as e:
            client.drop(robots_url, f"robots.txt unreadable: {e}")
        if not sitemap_urls:
            for path in ("/sitemap.xml", "/sitemap_index.xml"):
                guess = _origin(start_url) + path
                client.quiet.add(guess)
                sitemap_urls.append(guess)

    def allow_child(url: str, level: int, parents: set[str]) -> bool:
        p = url_problem(url, allowed_domains)
        if p:
            client.drop(url, f"child sitemap {p}")
            return False
        return client.fatal is None

    trees: list[AbstractSitemap] = []
    for sm_url in sitemap_urls:
        if client.fatal is not None:
            break
        tree = SitemapFetcher(url=sm_url, recursion_level=0, web_client=client,
                              recurse_callback=allow_child).sitemap()
        trees.append(tree)
    if client.fatal is not None:
        raise client.fatal

    def page_urls() -> Iterable[str]:
        for tree in trees:
            for leaf in _leaf_sitemaps(tree):
                if isinstance(leaf, InvalidSitemap):
                    continue
                for page in leaf.pages:
                    if page.url:
                        yield urljoin(leaf.url, page.url.strip()) if "://" not in page.url else page.url

    kept, dropped, filtered, truncated = filter_urls(
        page_urls(), allowed_domains=allowed_domains, include=include, exclude=exclude, max_urls=max_urls)
    return DiscoveryResult(urls=kept, dropped=client.dropped + dropped, sitemaps_read=client.sitemaps_read,
                           filtered_out=filtered, truncated=truncated, sitemap_urls=client.sitemap_urls)
