"""On-page SEO targets: a page's title, description, H1s, canonical, robots, hreflang, structured data.

Observer: one plain HTTP GET (redirects followed), then `scrapers.seo.extract_seo`. The HTTP status IS an
SEO fact: a 404/410 (or any 4xx) is an `ok` observation whose `status_code` says so, and a redirect shows
as a new `final_url`. A network failure (timeout, refused connection, 5xx/429 after retries) is `failed`,
and a bot wall is `blocked`: neither says anything about the page's SEO.

Differ: one `seo_changed` change per field that changed, with old/new and, for the text fields (title,
meta description, H1), a unified diff (difflib) that the report shows as a readable text diff.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict
from typing import Any

import orjson

from scrapers.blocked import detect_block
from scrapers.errors import FetchError
from scrapers.seo import extract_seo
from tracker.diff import ChangeData, Rules
from tracker.pipeline import Checker, TargetSpec, register_observer
from tracker.report import SECTION_BUILDERS, ChangeRow, Formatter
from tracker.store import DIFFERS, Observed

KIND = "seo"
#: The fields compared, in report order, with their labels.
FIELDS: dict[str, str] = {
    "status_code": "HTTP status", "final_url": "Final URL (after redirects)", "title": "Title",
    "meta_description": "Meta description", "h1": "H1", "canonical": "Canonical", "robots": "Robots",
    "hreflang": "hreflang", "structured_data_types": "Structured data", "word_count": "Word count",
}
TEXT_FIELDS = ("title", "meta_description", "h1")
#: A word count that moves less than this share (%) is page noise (a date, a price), not an SEO change.
WORD_COUNT_CHANGE_PCT = 20


def jsonable(value: Any) -> Any:
    """Plain JSON types (tuples -> lists), exactly what the database gives back, so that a fresh
    observation compares equal to the stored one."""
    return orjson.loads(orjson.dumps(value, default=lambda v: format(v, "f") if hasattr(v, "as_tuple")
                                     else list(v)))


async def observe_seo(checker: Checker, target: TargetSpec) -> tuple[Observed, str | None]:
    assert target.url is not None
    try:
        page = await checker.http.fetch(target.url, respect_robots=target.spec.get("respect_robots"))
    except FetchError as exc:
        return Observed("failed", exc.reason), "http"
    block = detect_block(page.text, status=page.status, url=page.final_url, headers=page.headers)
    if block is not None:
        return Observed("blocked", f"{block.kind}: {block.reason}"), "http"
    snapshot = extract_seo(page.text, url=target.url, status_code=page.status, headers=page.headers,
                           final_url=page.final_url)
    return Observed("ok", title=snapshot.title, data=jsonable(asdict(snapshot))), "http"


# ------------------------------------------------------------------------------------------------ diff

def _lines(field: str, value: Any) -> list[str]:
    if value is None:
        return []
    if field == "h1":
        return [str(v) for v in value]
    return [str(value)]


def text_diff(field: str, old: Any, new: Any) -> str:
    """A unified diff of a text field, without the file headers (one line per H1)."""
    lines = difflib.unified_diff(_lines(field, old), _lines(field, new), lineterm="", n=1)
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


def _word_count_moved(old: Any, new: Any) -> bool:
    if not isinstance(old, int) or not isinstance(new, int):
        return old != new
    if old == 0:
        return new != 0
    return abs(new - old) * 100 >= WORD_COUNT_CHANGE_PCT * old


def diff_seo(prev: Observed | None, cur: Observed, rules: Rules = Rules()) -> list[ChangeData]:
    """One `seo_changed` per changed field. No previous observation: nothing to compare."""
    if prev is None:
        return []
    old_data, new_data = jsonable(prev.data or {}), jsonable(cur.data or {})
    changes = []
    for field in FIELDS:
        old, new = old_data.get(field), new_data.get(field)
        if old == new:
            continue
        if field == "word_count" and not _word_count_moved(old, new):
            continue
        data: dict[str, Any] = {"field": field, "old": old, "new": new}
        if field in TEXT_FIELDS:
            data["diff"] = text_diff(field, old, new)
        changes.append(ChangeData("seo_changed", data))
    return changes


# ---------------------------------------------------------------------------------------------- report

def _show(field: str, value: Any) -> str:
    if value is None or value == []:
        return "(none)"
    if field == "h1":
        return " | ".join(value)
    if field == "hreflang":
        return ", ".join(f"{lang} → {href}" for lang, href in value)
    if field == "structured_data_types":
        return ", ".join(value)
    return str(value)


def build_section(session: Any, config: Any, fmt: Formatter, rows: list[ChangeRow]) -> dict[str, Any] | None:
    pages: dict[int, dict[str, Any]] = {}
    n = 0
    for change, target, rival in rows:
        if change.kind != "seo_changed":
            continue
        page = pages.setdefault(target.id, {"url": target.url or target.key, "rival": rival.name if rival else "",
                                            "changes": []})
        field = change.data.get("field", "")
        old, new = change.data.get("old"), change.data.get("new")
        diff_lines = [{"sign": line[:1], "text": line} for line in (change.data.get("diff") or "").splitlines()
                      if not line.startswith("@@")]
        page["changes"].append({"field": field, "label": FIELDS.get(field, field), "old": _show(field, old),
                                "new": _show(field, new), "diff": diff_lines,
                                "when": fmt.when(change.detected_at)})
        n += 1
    if not n:
        return None
    lost = sum(1 for p in pages.values() for c in p["changes"]
               if c["field"] == "status_code" and not str(c["new"]).startswith(("2", "3")))
    summary = [f"{n} SEO field change{'s' if n != 1 else ''} on {len(pages)} page{'s' if len(pages) != 1 else ''}"]
    if lost:
        summary.append(f"{lost} tracked page{'s' if lost != 1 else ''} now answer with an HTTP error")
    return {"title": "On-page SEO", "html_template": "_seo.html.j2", "text_template": "_seo.txt.j2",
            "data": {"pages": sorted(pages.values(), key=lambda p: (p["rival"], p["url"]))},
            "summary_lines": summary}


register_observer(KIND, observe_seo)
DIFFERS[KIND] = diff_seo
SECTION_BUILDERS[KIND] = build_section
