"""Listing targets: a category / offers / search page whose product cards are watched as an assortment.

Observer: crawls the listing (pagination followed up to `max_pages`; `fetch: browser` scrolls infinite
lists to the end) and records every card (url, name, price, regular price, badge) and their count:

    Observed("ok", data={"items": [...], "count", "pages", "complete", "truncated", "problem",
                         "promo_share", "absent": {url: {"passes": k, "item": {...}}}, "confirm_after"})

A pass is *complete* when every page it meant to read was read. When page 1 loads but a later page fails
(network error, HTTP error, bot wall), the pass is still `ok` (what it saw is true: new products, prices)
but `complete: false`, with `problem` saying which page failed. Page 1 failing is `failed` / `blocked`,
and a page 1 without any product card is `unextractable` (a layout change never empties a listing).

Removal is confirmed, not guessed: a product missing from a pass goes to `absent` with the number of
*complete* passes it has been missing from; an incomplete pass does not count. After `confirm_after`
complete passes (spec `confirm_removal_after`, default 2) it is reported `listing_item_removed`; if it
comes back before, nothing is reported. The observer reads the previous `ok` observation to carry
`absent` forward (the same one the differ compares with).

Changes: listing_item_added, listing_item_removed, listing_price_changed, listing_badge_appeared,
listing_badge_gone, listing_badge_changed, listing_promo_share_changed (share of cards on promotion,
between two complete passes, moved by at least PROMO_SHARE_CHANGE_PP percentage points).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from scrapers.blocked import detect_block
from scrapers.errors import FetchError
from scrapers.fetch import Page
from scrapers.listing import extract_listing, normalize_url
from scrapers.types import ListingItem, ListingSelectors
from tracker.diff import ChangeData, Rules, pct_change
from tracker.models import Observation
from tracker.pipeline import Checker, TargetSpec, register_observer
from tracker.report import SECTION_BUILDERS, ChangeRow, Formatter
from tracker.store import DIFFERS, Observed

KIND = "listing"
CONFIRM_REMOVAL_AFTER = 2      # complete passes a product must be missing from before it is "removed"
PROMO_SHARE_CHANGE_PP = 5      # percentage points


class _PageBlocked(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Crawl:
    items: dict[str, ListingItem] = field(default_factory=dict)
    pages: int = 0
    complete: bool = True
    truncated: bool = False
    problem: str | None = None
    via: str = "http"


async def crawl(fetch_page: Any, url: str, selectors: ListingSelectors | None, max_pages: int) -> Crawl:
    """Read a listing page by page. Page 1 failing raises (FetchError / _PageBlocked); a later page
    failing ends the crawl with `complete = False`."""
    out = Crawl()
    seen_pages: set[str] = set()
    host = urlsplit(url).hostname
    current: str | None = url
    while current:
        if out.pages >= max(1, max_pages):
            out.truncated = True
            break
        key = normalize_url(current, current) or current
        if key in seen_pages:
            break
        seen_pages.add(key)
        n = out.pages + 1
        try:
            page: Page = await fetch_page(current)
            block = detect_block(page.text, status=page.status, url=page.final_url, headers=page.headers)
            if block is not None:
                raise _PageBlocked(f"{block.kind}: {block.reason}")
            if page.status >= 400:
                raise FetchError(f"HTTP {page.status}", status=page.status)
        except (FetchError, _PageBlocked) as exc:
            if n == 1:
                raise
            out.complete = False
            out.problem = f"page {n} ({current}) could not be read: {exc.reason}"
            break
        listing = extract_listing(page.text, page.final_url, selectors)
        if n > 1 and not listing.items:
            # A page the previous one links to as "next" holds no card we can read: maybe the end, maybe a
            # page (e.g. a last page with a single card) the automatic reader does not see. Not a removal.
            out.complete = False
            out.problem = (f"page {n} ({current}): no product cards found"
                           + ("" if selectors and selectors.item else " (an `item` selector would help)"))
            break
        out.pages = n
        new = [i for i in listing.items if i.url not in out.items]
        if n > 1 and not new:
            break  # past the end (shops that repeat the last page for ?page=N+1)
        for item in new:
            out.items[item.url] = item
        nxt = listing.next_url
        if nxt and urlsplit(nxt).hostname != host:
            break
        current = nxt
    return out


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def item_json(item: ListingItem) -> dict[str, Any]:
    return {"url": item.url, "name": item.name, "price": _money(item.price),
            "regular_price": _money(item.regular_price), "currency": item.currency, "badge": item.badge}


def on_promotion(item: dict[str, Any]) -> bool:
    if item.get("badge"):
        return True
    price, regular = item.get("price"), item.get("regular_price")
    return bool(price and regular and Decimal(regular) > Decimal(price))


def _previous_ok(checker: Checker, target_id: int) -> dict[str, Any] | None:
    with checker.db.session() as session:
        row = session.scalars(select(Observation).where(Observation.target_id == target_id,
                                                        Observation.status == "ok")
                              .order_by(Observation.id.desc()).limit(1)).first()
        return dict(row.data or {}) if row is not None else None


def listing_data(result: Crawl, prev: dict[str, Any] | None, confirm_after: int) -> dict[str, Any]:
    """The observation's data, carrying the not-yet-confirmed removals forward from `prev`."""
    items = [item_json(i) for i in result.items.values()]
    seen = {i["url"] for i in items}
    absent: dict[str, dict[str, Any]] = {}
    if prev:
        prev_absent = prev.get("absent") or {}
        known = {u: a for u, a in prev_absent.items()}
        for item in prev.get("items") or []:
            known[item["url"]] = {"passes": 0, "item": item}
        for url, entry in known.items():
            if url in seen:
                continue
            passes = int(entry.get("passes", 0)) + (1 if result.complete else 0)
            if result.complete and passes >= confirm_after:
                continue  # confirmed removed: the differ reports it, and it is forgotten
            absent[url] = {"passes": passes, "item": entry.get("item") or {"url": url}}
    promo = sum(1 for i in items if on_promotion(i))
    return {"items": items, "count": len(items), "pages": result.pages, "complete": result.complete,
            "truncated": result.truncated, "problem": result.problem,
            "promo_share": round(promo / len(items), 4) if items else 0.0,
            "absent": dict(sorted(absent.items())), "confirm_after": confirm_after}


async def observe_listing(checker: Checker, target: TargetSpec) -> tuple[Observed, str | None]:
    assert target.url is not None
    spec = target.spec
    mode = spec.get("fetch") or "auto"
    sel = {k: v for k, v in (spec.get("selectors") or {}).items() if v}
    selectors = ListingSelectors(**sel) if sel else None
    max_pages = int(spec.get("max_pages") or 5)
    confirm_after = max(1, int(spec.get("confirm_removal_after") or CONFIRM_REMOVAL_AFTER))

    async def http_page(url: str) -> Page:
        return await checker.http.fetch(url, respect_robots=spec.get("respect_robots"))

    async def browser_page(url: str) -> Page:
        def ready(html: str) -> bool:
            return bool(extract_listing(html, url, selectors).items)

        return await checker.browser.fetch(url, context_key=target.rival or "default",
                                           wait_for=selectors.item if selectors and selectors.item else None,
                                           ready=ready, scroll=True)

    result: Crawl | None = None
    try:
        if mode in ("http", "auto"):
            try:
                result = await crawl(http_page, target.url, selectors, max_pages)
            except _PageBlocked as exc:
                if mode == "http" or not exc.reason.startswith("challenge"):
                    raise
            if mode == "auto" and result is not None and not result.items:
                result = None  # rendered by JavaScript? try the browser
        if result is None:
            result = await crawl(browser_page, target.url, selectors, max_pages)
            result.via = "browser"
    except FetchError as exc:
        return Observed("failed", exc.reason), mode
    except _PageBlocked as exc:
        return Observed("blocked", exc.reason), mode
    if not result.items:
        what = f"selector {selectors.item!r} matched nothing" if selectors and selectors.item \
            else "no product cards found on the page"
        return Observed("unextractable", what), result.via
    prev = await checker._in_db(lambda: _previous_ok(checker, target.id))
    return Observed("ok", data=listing_data(result, prev, confirm_after)), result.via


# ---------------------------------------------------------------------------------------------- diff

def _dec(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def diff_listing(prev: Observed | None, cur: Observed, rules: Rules = Rules()) -> list[ChangeData]:
    if prev is None:
        return []
    p, c = prev.data or {}, cur.data or {}
    known: dict[str, dict[str, Any]] = {u: a.get("item") or {"url": u} for u, a in (p.get("absent") or {}).items()}
    known.update({i["url"]: i for i in p.get("items") or []})
    cur_items = {i["url"]: i for i in c.get("items") or []}
    cur_absent = c.get("absent") or {}
    changes: list[ChangeData] = []
    for url, item in cur_items.items():
        if url not in known:
            changes.append(ChangeData("listing_item_added", {
                "url": url, "name": item.get("name"), "price": item.get("price"),
                "currency": item.get("currency"), "badge": item.get("badge")}))
    for url, item in known.items():
        if url not in cur_items and url not in cur_absent:
            changes.append(ChangeData("listing_item_removed", {
                "url": url, "name": item.get("name"), "price": item.get("price"),
                "currency": item.get("currency"), "passes": c.get("confirm_after")}))
    for url, item in cur_items.items():
        old = known.get(url)
        if old is None:
            continue
        base = {"url": url, "name": item.get("name") or old.get("name"), "currency": item.get("currency")
                or old.get("currency")}
        op, np_ = _dec(old.get("price")), _dec(item.get("price"))
        if op is not None and np_ is not None and op != np_:
            pct = pct_change(op, np_)
            if pct is None or abs(pct) >= rules.price_change_pct:
                changes.append(ChangeData("listing_price_changed", base | {
                    "old": format(op, "f"), "new": format(np_, "f"), "delta": format(np_ - op, "f"),
                    "pct": None if pct is None else format(pct, "f"),
                    "direction": "down" if np_ < op else "up"}))
        ob, nb = old.get("badge"), item.get("badge")
        if ob != nb:
            if not ob:
                changes.append(ChangeData("listing_badge_appeared", base | {"new": nb}))
            elif not nb:
                changes.append(ChangeData("listing_badge_gone", base | {"old": ob}))
            else:
                changes.append(ChangeData("listing_badge_changed", base | {"old": ob, "new": nb}))
    if p.get("complete", True) and c.get("complete", True):
        old_share, new_share = float(p.get("promo_share") or 0), float(c.get("promo_share") or 0)
        if abs(new_share - old_share) * 100 >= PROMO_SHARE_CHANGE_PP:
            changes.append(ChangeData("listing_promo_share_changed", {
                "old": old_share, "new": new_share, "count": c.get("count")}))
    return changes


# -------------------------------------------------------------------------------------------- report

KIND_LABELS = {
    "listing_item_added": "Added", "listing_item_removed": "Removed", "listing_price_changed": "Price",
    "listing_badge_appeared": "Badge appeared", "listing_badge_gone": "Badge gone",
    "listing_badge_changed": "Badge changed", "listing_promo_share_changed": "Share on promotion",
}


def _latest(session: Any, target_id: int) -> dict[str, Any]:
    row = session.scalars(select(Observation).where(Observation.target_id == target_id,
                                                    Observation.status == "ok")
                          .order_by(Observation.id.desc()).limit(1)).first()
    return dict(row.data or {}) if row is not None else {}


def build_section(session: Any, config: Any, fmt: Formatter, rows: list[ChangeRow]) -> dict[str, Any] | None:
    listings: dict[int, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for change, target, rival in rows:
        if change.kind not in KIND_LABELS:
            continue
        entry = listings.get(target.id)
        if entry is None:
            now = _latest(session, target.id)
            entry = listings[target.id] = {
                "name": target.name or target.url, "url": target.url, "rival": rival.name if rival else "",
                "count": now.get("count"), "complete": now.get("complete", True), "problem": now.get("problem"),
                "promo_share": f"{float(now.get('promo_share') or 0) * 100:.0f} %", "changes": []}
        d = change.data or {}
        cur = d.get("currency")
        row = {"kind": change.kind, "label": KIND_LABELS[change.kind], "name": d.get("name") or d.get("url") or "",
               "url": d.get("url"), "old": "", "new": "", "css": ""}
        if change.kind == "listing_item_added":
            row["new"] = fmt.money(d.get("price"), cur) if d.get("price") else ""
            if d.get("badge"):
                row["new"] += f" · {d['badge']}"
        elif change.kind == "listing_item_removed":
            row["old"] = fmt.money(d.get("price"), cur) if d.get("price") else ""
            row["new"] = "gone"
        elif change.kind == "listing_price_changed":
            row.update(old=fmt.money(d.get("old"), cur),
                       new=f"{fmt.money(d.get('new'), cur)} ({fmt.pct(d.get('pct'))})",
                       css="down" if d.get("direction") == "down" else "up")
        elif change.kind == "listing_promo_share_changed":
            row.update(name="(whole listing)", old=f"{float(d.get('old') or 0) * 100:.0f} %",
                       new=f"{float(d.get('new') or 0) * 100:.0f} %")
        else:
            row.update(old=d.get("old") or "", new=d.get("new") or "")
        entry["changes"].append(row)
        counts[change.kind] = counts.get(change.kind, 0) + 1
    if not listings:
        return None
    parts = []
    for kind, word in (("listing_item_added", "added"), ("listing_item_removed", "removed"),
                       ("listing_price_changed", "repriced")):
        if counts.get(kind):
            parts.append(f"{counts[kind]} {word}")
    badges = sum(counts.get(k, 0) for k in ("listing_badge_appeared", "listing_badge_gone", "listing_badge_changed"))
    if badges:
        parts.append(f"{badges} badge change{'s' if badges != 1 else ''}")
    summary = [f"Listings: {', '.join(parts)}"] if parts else [f"Listings: {sum(counts.values())} changes"]
    return {"title": "Listings", "html_template": "_listing.html.j2", "text_template": "_listing.txt.j2",
            "data": {"listings": sorted(listings.values(), key=lambda x: (x["rival"], x["name"] or ""))},
            "summary_lines": summary}


register_observer(KIND, observe_listing)
DIFFERS[KIND] = diff_listing
SECTION_BUILDERS[KIND] = build_section
