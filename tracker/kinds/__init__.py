"""Target kinds beyond product pages. Each module registers its observer (tracker.pipeline.OBSERVERS), its
differ (tracker.store.DIFFERS) and its report section (tracker.report.SECTION_BUILDERS) on import.

A kind's module is imported the first time a target of that kind is checked or a report is built
(`load`/`load_all`), not at start-up: a pass over product pages never pays for the SERP, listing and SEO
modules and the report machinery they import. A new kind is a module here and its name in KINDS.
"""

from __future__ import annotations

import importlib

KINDS = ("listing", "serp", "seo")


def load(kind: str) -> bool:
    """Import the module of `kind` (registering it); False for a kind that has no module here."""
    if kind not in KINDS:
        return False
    importlib.import_module(f"tracker.kinds.{kind}")
    return True


def load_all() -> None:
    for kind in KINDS:
        load(kind)
