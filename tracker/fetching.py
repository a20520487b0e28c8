"""One-off fetches outside a pass (for `tracker extract URL` and `tracker serp TERM`)."""

from __future__ import annotations

from scrapers.browser import BrowserFetcher
from scrapers.fetch import HttpFetcher, Page, Politeness
from tracker.config import HttpConfig

DEFAULT_HTTP = HttpConfig()


async def fetch_one(url: str, *, browser: bool = False, http: HttpConfig = DEFAULT_HTTP) -> Page:
    """Fetch one page now (robots.txt respected; FetchError on failure)."""
    if browser:
        async with BrowserFetcher() as fetcher:
            return await fetcher.fetch(url)
    async with HttpFetcher(user_agent=http.user_agent, timeout_s=http.timeout_s, max_bytes=http.max_bytes,
                           retries=http.retries, politeness=Politeness(1, 0),
                           respect_robots=http.respect_robots) as fetcher:
        return await fetcher.fetch(url)
