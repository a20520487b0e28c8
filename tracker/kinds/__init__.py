"""Target kinds beyond product pages. Each module registers its observer (tracker.pipeline.OBSERVERS), its
differ (tracker.store.DIFFERS) and its report section (tracker.report.SECTION_BUILDERS) on import.

A kind's module is imported the first time a target of that kind is checked or a report is built
(`load`, `registered`), not at start-up: a pass over product pages never pays for the SERP, listing and SEO
modules and the report machinery they import. A new kind is a module here and its name in KINDS.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

T = TypeVar("T")

KINDS = ("listing", "serp", "seo")


def load(kind: str) -> bool:
    """Import the module of `kind` (registering it); False for a kind that has no module here."""
    if kind not in KINDS:
        return False
    importlib.import_module(f"tracker.kinds.{kind}")
    return True


def registered(registry: dict[str, T], kind: str) -> T | None:
    """`registry[kind]` (an observer, a differ...), importing the kind's module on first use."""
    entry = registry.get(kind)
    if entry is None and load(kind):
        entry = registry.get(kind)
    return entry
