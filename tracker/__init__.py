"""Rivalwatch: competitor price, promotion, stock and SEO tracking on a schedule."""

from tracker.errors import (
    ConfigError,
    DatabaseError,
    DeliveryError,
    FetchError,
    TrackerError,
)

__all__ = ["TrackerError", "ConfigError", "DatabaseError", "DeliveryError", "FetchError"]
__version__ = "0.1.0"
