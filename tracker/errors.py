"""The exceptions Rivalwatch raises; each message tells the user what happened and what to do."""

from __future__ import annotations

from scrapers.errors import FetchError

__all__ = ["TrackerError", "ConfigError", "DatabaseError", "DeliveryError", "FetchError"]


class TrackerError(Exception):
    """Base class: anything the CLI turns into a clear one-line message instead of a traceback."""


class ConfigError(TrackerError):
    """The YAML configuration is invalid; `problems` holds one `file:line:col: path: message` per error."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class DatabaseError(TrackerError):
    """The database cannot be reached or is not in a usable state."""


class DeliveryError(TrackerError):
    """A report could not be delivered (SMTP down, refused, timed out); it stays in the outbox."""
