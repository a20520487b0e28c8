"""Exceptions raised by fetchers. Extractors never raise on bad pages: they return empty values."""

from __future__ import annotations


class FetchError(Exception):
    """A page could not be fetched: network error, HTTP error status, size cap, robots.txt, timeout.

    `retryable` says whether trying again later may help (timeouts, 5xx, 429); `retry_after` carries a
    server's Retry-After in seconds when it sent one.
    """

    def __init__(self, reason: str, *, retryable: bool = False, retry_after: float | None = None,
                 status: int | None = None):
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(reason)
