"""Target kinds beyond product pages. Each module registers its observer (tracker.pipeline.OBSERVERS)
and its differ (tracker.store.DIFFERS) on import; add a module here and import it below."""

import importlib

for _name in ("listing", "serp", "seo"):
    try:
        importlib.import_module(f"tracker.kinds.{_name}")
    except ModuleNotFoundError as exc:  # a kind whose module is not written yet
        if exc.name != f"tracker.kinds.{_name}":
            raise
