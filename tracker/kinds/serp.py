"""Ranking targets: one search term on one engine, locale and device, read down to `depth` results.

Observer: builds the engine (`scrapers.serp`), runs the query page by page (pagination followed until
`depth` results), politely (one query at a time per engine in this process, a random pause of
`serp.delay_s` between requests to one engine), and records

    Observed("ok", rank=<own domain's best position or None>, data={
        "engine", "depth",
        "results":  [[position, url, title], ...]         organic only (ads, carousels... excluded)
        "features": ["ads", "shopping", ...]             SERP features present
        "positions": {domain: [position, url] | None}    best position of own domain and each rival's
        "visibility": {domain: score 0..1}               CTR-weighted (scrapers.visibility)
        "labels": {domain: rival name | "own site"}, "own_domain"})

Snippets are not stored: they change between identical rankings and would turn every check into a new
observation span (`tracker serp` prints them). A CAPTCHA / consent / "unusual traffic" page is
`blocked` - never "not in the top 100" - and a page that lists no organic result without saying "no
results" is `unextractable` (a layout the parser does not know), also never a rank loss.

Where the engine lives (tests point it at 127.0.0.1):
  * google / bing / duckduckgo: `$TRACKER_ENGINE_BASE_<NAME>` (e.g. TRACKER_ENGINE_BASE_GOOGLE=http://127.0.0.1:8080)
  * serpapi: `serp.serpapi_url` in the config (or $TRACKER_ENGINE_BASE_SERPAPI); key: `serp.api_key` or
    $SERPAPI_API_KEY
  * custom engines: `engines: {name: {url_template, result, link, title, next}}` in the config.
How pages are fetched: google/bing/duckduckgo through Chromium (Playwright), custom engines and SerpApi
over HTTP; `fetch: http|browser` in the target spec or $TRACKER_SERP_FETCH overrides it. Politeness: one
query at a time per engine (serp.concurrency_per_engine) and a random pause of serp.delay_s before every
request to an engine (not for SerpApi, an API with its own limits). The gates live in this process.

Differ: per tracked domain (own + rivals) rank_up / rank_down (moves of at least `rank_change`, default 1),
entered_top / left_top (crossing the top `top_n`, default 10), and new_top_result (a new #1 URL).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scrapers.blocked import detect_block
from scrapers.errors import FetchError
from scrapers.fetch import Page
from scrapers.serp import (
    CustomEngine,
    Engine,
    SerpApiEngine,
    SerpBlocked,
    best_positions,
    domain_of,
    get_engine,
)
from scrapers.types import SerpResult
from scrapers.visibility import share_of_voice, visibility
from tracker.diff import ChangeData, Rules
from tracker.pipeline import Checker, TargetSpec, register_observer
from tracker.report import SECTION_BUILDERS, ChangeRow, Formatter
from tracker.store import DIFFERS, Observed

KIND = "serp"
RANK_CHANGE = 1          # smallest move (in positions) reported as rank_up / rank_down
TOP_N = 10               # entered_top / left_top are about this many first results
PER_PAGE = 10
BROWSER_ENGINES = frozenset({"google", "bing", "duckduckgo"})
OWN_LABEL = "own site"

LABELS = {"rank_up": "Up", "rank_down": "Down", "entered_top": "Entered top {n}", "left_top": "Left top {n}",
          "new_top_result": "New #1"}


class Unextractable(Exception):
    """The result page loaded but no organic result could be read and it does not say 'no results'."""


# ------------------------------------------------------------------------------------------- engines

def engine_for(spec: dict[str, Any], config: Any = None) -> Engine:
    """The engine a keyword spec names, with its base URL from the environment / config (see above)."""
    name = str(spec.get("engine") or "google").lower()
    custom = spec.get("custom_engine")
    if custom:
        return CustomEngine(**{k: v for k, v in custom.items() if v is not None})
    if config is not None and name in getattr(config, "engines", {}):
        return CustomEngine(**config.engines[name].model_dump(exclude_none=True))
    base = os.environ.get(f"TRACKER_ENGINE_BASE_{name.upper()}")
    if name == "serpapi":
        serp = getattr(config, "serp", None)
        key = serp.api_key.get_secret_value() if serp is not None and serp.api_key else None
        return SerpApiEngine(api_key=key, base_url=base or (serp.serpapi_url if serp else "https://serpapi.com"))
    return get_engine(name, **({"base_url": base} if base else {}))


def fetch_mode(spec: dict[str, Any]) -> str:
    mode = spec.get("fetch") or os.environ.get("TRACKER_SERP_FETCH")
    if mode in ("http", "browser"):
        return mode
    engine = str(spec.get("engine") or "google").lower()
    return "browser" if engine in BROWSER_ENGINES and not spec.get("custom_engine") else "http"


class _EngineGate:
    """One engine's politeness inside this process: `concurrency` queries at once, a random pause
    between two requests to it."""

    def __init__(self, concurrency: int):
        self.queries = asyncio.Semaphore(concurrency)
        self.lock = asyncio.Lock()
        self.next_start = 0.0

    async def turn(self, delay_s: tuple[float, float]) -> None:
        async with self.lock:
            wait = self.next_start - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            low, high = delay_s
            self.next_start = time.monotonic() + random.uniform(low, max(low, high))


_GATES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _EngineGate]]" = \
    weakref.WeakKeyDictionary()


def engine_gate(name: str, concurrency: int) -> _EngineGate:
    gates = _GATES.setdefault(asyncio.get_running_loop(), {})
    if name not in gates:
        gates[name] = _EngineGate(concurrency)
    return gates[name]


# ------------------------------------------------------------------------------------------- a query

@dataclass
class SerpOutcome:
    results: list[SerpResult] = field(default_factory=list)
    features: set[str] = field(default_factory=set)
    pages: int = 0
    no_results: bool = False


def _same_origin(url: str, page_url: str) -> str:
    """A next-page link stays on the engine we are querying: saved and proxied pages often carry
    absolute links to the engine's public host (www.google.com), which is not where we asked."""
    target, here = urlsplit(url), urlsplit(page_url)
    if target.netloc and here.netloc and target.netloc != here.netloc:
        return urlunsplit((here.scheme, here.netloc, target.path, target.query, ""))
    return url


def _url_key(url: str) -> str:
    return url.split("#", 1)[0]


async def run_query(engine: Engine, fetch_page: Callable[[str], Awaitable[Page]], term: str, *,
                    locale: str = "en-US", device: str = "desktop", depth: int = 10,
                    before_request: Callable[[], Awaitable[None]] | None = None) -> SerpOutcome:
    """Run one search down to `depth` organic results. Raises SerpBlocked, FetchError, Unextractable."""
    out = SerpOutcome()
    seen: set[str] = set()
    url: str | None = engine.search_url(term, locale=locale, device=device, page=1, per_page=PER_PAGE)
    while url and len(out.results) < depth:
        if before_request is not None:
            await before_request()
        page = await fetch_page(url)
        out.pages += 1
        is_api = isinstance(engine, SerpApiEngine)
        if not is_api:
            block = detect_block(page.text, status=page.status, url=page.final_url, headers=page.headers)
            if block is not None:
                raise SerpBlocked(block)
        if page.status >= 400:
            if is_api:
                try:
                    engine.parse(page.text)
                except ValueError as exc:
                    raise FetchError(f"HTTP {page.status}: {exc}") from None
            raise FetchError(f"HTTP {page.status} from the search engine")
        try:
            parsed = engine.parse(page.text, base_url=None if is_api else page.final_url, offset=len(out.results))
        except ValueError as exc:  # SerpApi error answers, a non-JSON answer
            raise FetchError(SerpApiEngine.redact(str(exc))) from None
        out.features |= set(parsed.features)
        if out.pages == 1 and not parsed.results:
            if parsed.no_results:
                out.no_results = True
                break
            raise Unextractable("no organic result found on the page, and it does not say 'no results' "
                                "(an unknown layout?)")
        new = [r for r in parsed.results if _url_key(r.url) not in seen]
        if not new:
            break
        for r in new:
            seen.add(_url_key(r.url))
            out.results.append(SerpResult(len(out.results) + 1, r.url, r.title, r.snippet))
        next_page = out.pages + 1
        if is_api:
            url = engine.search_url(term, locale=locale, device=device, page=next_page, per_page=PER_PAGE) \
                if parsed.next_url else None
        elif parsed.next_url:
            url = _same_origin(parsed.next_url, page.final_url)
        elif isinstance(engine, CustomEngine) and ("{page}" in engine.url_template
                                                   or "{offset}" in engine.url_template):
            url = engine.search_url(term, locale=locale, device=device, page=next_page, per_page=PER_PAGE)
        else:
            url = None
    del out.results[depth:]
    return out


def tracked_domains(spec: dict[str, Any]) -> dict[str, str]:
    """{domain: label} for the own domain and each rival's domain."""
    labels: dict[str, str] = {}
    own = domain_of(spec["own_domain"]) if spec.get("own_domain") else None
    for rival, dom in (spec.get("domains") or {}).items():
        if dom:
            labels.setdefault(domain_of(dom), rival)
    if own:
        labels[own] = f"{labels[own]} ({OWN_LABEL})" if own in labels else OWN_LABEL
    return labels


def observation(outcome: SerpOutcome, spec: dict[str, Any], engine_name: str) -> Observed:
    labels = tracked_domains(spec)
    positions = best_positions(outcome.results, labels)
    own = domain_of(spec["own_domain"]) if spec.get("own_domain") else None
    vis = visibility({d: (p[0] if p else None) for d, p in positions.items()}) if positions else {}
    data: dict[str, Any] = {
        "engine": engine_name, "depth": int(spec.get("depth") or 10),
        "results": [[r.position, r.url, r.title] for r in outcome.results],
        "features": sorted(outcome.features),
        "positions": {d: ([p[0], p[1]] if p else None) for d, p in positions.items()},
        "visibility": {d: round(v, 4) for d, v in vis.items()},
        "labels": labels, "own_domain": own,
    }
    for key in ("rank_change", "top_n"):
        if spec.get(key) is not None:
            data[key] = int(spec[key])
    rank = positions[own][0] if own and positions.get(own) else None
    return Observed("ok", rank=rank, data=data)


async def observe_serp(checker: Checker, target: TargetSpec) -> tuple[Observed, str | None]:
    spec = target.spec
    try:
        engine = engine_for(spec, checker.config)
    except (KeyError, ValueError, TypeError) as exc:
        return Observed("failed", f"search engine: {exc}"), None
    name = str(spec.get("engine") or "google").lower()
    mode = fetch_mode(spec)
    is_api = isinstance(engine, SerpApiEngine)

    async def fetch_page(url: str) -> Page:
        if mode == "browser":
            return await checker.browser.fetch(url, context_key=f"serp:{name}",
                                               device=spec.get("device") or "desktop")
        return await checker.http.fetch(url, respect_robots=False if is_api else spec.get("respect_robots"))

    serp_cfg = checker.config.serp
    gate = engine_gate(name, serp_cfg.concurrency_per_engine)
    try:
        async with gate.queries:
            outcome = await run_query(engine, fetch_page, spec.get("term") or target.name or "",
                                      locale=spec.get("locale", "en-US"), device=spec.get("device", "desktop"),
                                      depth=int(spec.get("depth") or 10),
                                      # SerpApi is a paid API with its own limits: no pause needed
                                      before_request=None if is_api else lambda: gate.turn(tuple(serp_cfg.delay_s)))
    except SerpBlocked as exc:
        return Observed("blocked", str(exc)), mode
    except FetchError as exc:
        return Observed("failed", scrub(exc.reason, engine)), mode
    except ValueError as exc:  # e.g. SerpApi without a key
        return Observed("failed", scrub(str(exc), engine)), mode
    except Unextractable as exc:
        return Observed("unextractable", str(exc)), mode
    return observation(outcome, spec, name), mode


def scrub(text: str, engine: Engine) -> str:
    """A reason that is stored and mailed never carries the API key (even when an answer echoes it)."""
    text = SerpApiEngine.redact(text)
    key = getattr(engine, "_api_key", "")
    return text.replace(key, "***") if key else text


# ---------------------------------------------------------------------------------------------- diff

def _pos(value: Any) -> int | None:
    return int(value[0]) if value else None


def diff_serp(prev: Observed | None, cur: Observed, rules: Rules = Rules()) -> list[ChangeData]:
    if prev is None:
        return []
    old_data, new_data = prev.data or {}, cur.data or {}
    step = int(new_data.get("rank_change") or RANK_CHANGE)
    top = int(new_data.get("top_n") or TOP_N)
    old_pos, new_pos = old_data.get("positions") or {}, new_data.get("positions") or {}
    labels = new_data.get("labels") or {}
    depth = new_data.get("depth")
    changes: list[ChangeData] = []
    for domain in new_pos:
        if domain not in old_pos:
            continue  # newly tracked domain: no history to compare with
        old, new = _pos(old_pos[domain]), _pos(new_pos[domain])
        if old == new:
            continue
        url = new_pos[domain][1] if new_pos[domain] else (old_pos[domain][1] if old_pos[domain] else None)
        base = {"domain": domain, "label": labels.get(domain, domain), "old": old, "new": new, "url": url,
                "own": domain == new_data.get("own_domain"), "depth": depth, "top_n": top}
        was_top, is_top = old is not None and old <= top, new is not None and new <= top
        if is_top and not was_top:
            changes.append(ChangeData("entered_top", base))
        elif was_top and not is_top:
            changes.append(ChangeData("left_top", base))
        elif old is None or new is None or abs(new - old) >= step:
            better = new is not None and (old is None or new < old)
            changes.append(ChangeData("rank_up" if better else "rank_down", base))
    old_results, new_results = old_data.get("results") or [], new_data.get("results") or []
    if old_results and new_results and _url_key(old_results[0][1]) != _url_key(new_results[0][1]):
        dom = domain_of(new_results[0][1])
        changes.append(ChangeData("new_top_result", {
            "old_url": old_results[0][1], "new_url": new_results[0][1], "title": new_results[0][2],
            "domain": dom, "label": labels.get(dom, dom), "own": dom == new_data.get("own_domain")}))
    return changes


# -------------------------------------------------------------------------------------------- report

def _latest_two(session: Any, target_ids: list[int]) -> dict[int, list[Any]]:
    from sqlalchemy import select

    from tracker.models import Observation

    out: dict[int, list[Any]] = {}
    for tid in target_ids:
        out[tid] = list(session.scalars(
            select(Observation).where(Observation.target_id == tid, Observation.status == "ok")
            .order_by(Observation.id.desc()).limit(2)))
    return out


def _show_pos(pos: int | None, depth: Any = None) -> str:
    return f"#{pos}" if pos is not None else (f">{depth}" if depth else "–")


def build_section(session: Any, config: Any, fmt: Formatter, rows: list[ChangeRow]) -> dict[str, Any] | None:
    from sqlalchemy import select

    from tracker.models import Target

    moves: list[dict[str, Any]] = []
    new_ones: list[str] = []
    for change, target, _rival in rows:
        d = change.data or {}
        term = target.name or (target.spec or {}).get("term") or target.key
        engine = (target.spec or {}).get("engine", "")
        if change.kind == "new_top_result":
            moves.append({"term": term, "engine": engine, "who": d.get("label") or d.get("domain", ""),
                          "label": LABELS["new_top_result"], "old": d.get("old_url") or "",
                          "new": d.get("new_url") or "",
                          "url": d.get("new_url"), "css": "down" if d.get("own") else "", "own": bool(d.get("own"))})
            if d.get("own"):
                new_ones.append(term)
            continue
        if change.kind not in LABELS:
            continue
        direction = "up" if change.kind in ("rank_up", "entered_top") else "down"
        label = LABELS[change.kind].format(n=d.get("top_n", TOP_N))
        moves.append({"term": term, "engine": engine, "who": d.get("label") or d.get("domain", ""), "label": label,
                      "old": _show_pos(d.get("old"), d.get("depth")), "new": _show_pos(d.get("new"), d.get("depth")),
                      "url": d.get("url"), "css": "down" if direction == "up" else "up", "own": bool(d.get("own"))})
    if not moves:
        return None
    moves.sort(key=lambda m: (not m["own"], m["term"], m["who"]))

    # Own vs rivals per keyword, and the visibility trend, over every active keyword.
    targets = list(session.scalars(select(Target).where(Target.kind == KIND, Target.active.is_(True))
                                   .order_by(Target.id)))
    history = _latest_two(session, [t.id for t in targets])
    columns: dict[str, str] = {}
    now_table: dict[str, dict[str, int | None]] = {}
    before_table: dict[str, dict[str, int | None]] = {}
    keywords = []
    for t in targets:
        obs = history.get(t.id) or []
        if not obs:
            continue
        cur = obs[0].data or {}
        prev = (obs[1].data or {}) if len(obs) > 1 else cur
        labels = cur.get("labels") or {}
        own = cur.get("own_domain")
        for dom in sorted(labels, key=lambda x: (x != own, labels[x])):
            columns.setdefault(dom, labels[dom])
        key = f"{t.id}"
        now_table[key] = {d: _pos(p) for d, p in (cur.get("positions") or {}).items()}
        before_table[key] = {d: _pos(p) for d, p in (prev.get("positions") or {}).items()}
        cells = []
        for dom in columns:
            p_now, p_before = now_table[key].get(dom), before_table[key].get(dom)
            delta = ""
            if p_now is not None and p_before is not None and p_now != p_before:
                delta = f"▲{p_before - p_now}" if p_now < p_before else f"▼{p_now - p_before}"
            elif p_now is not None and p_before is None and len(obs) > 1:
                delta = "new"
            cells.append({"domain": dom, "pos": _show_pos(p_now), "delta": delta})
        spec = t.spec or {}
        keywords.append({"term": t.name or spec.get("term", ""),
                         "where": f"{spec.get('engine', '')} {spec.get('locale', '')} {spec.get('device', '')}".strip(),
                         "cells": cells, "features": ", ".join(cur.get("features") or [])})
    for k in keywords:  # columns discovered later: pad earlier rows
        have = {c["domain"] for c in k["cells"]}
        k["cells"] += [{"domain": d, "pos": "–", "delta": ""} for d in columns if d not in have]
        order = list(columns)
        k["cells"].sort(key=lambda c: order.index(c["domain"]))
    vis_now = visibility(now_table) if now_table else {}
    vis_before = visibility(before_table) if before_table else {}
    sov = share_of_voice(now_table) if now_table else {}
    trend = []
    for dom, label in columns.items():
        now_v, before_v = vis_now.get(dom, 0.0), vis_before.get(dom, 0.0)
        diff = (now_v - before_v) * 100
        trend.append({"who": label, "domain": dom, "now": f"{now_v * 100:.1f} %", "before": f"{before_v * 100:.1f} %",
                      "delta": f"{diff:+.1f}" if abs(diff) >= 0.05 else "±0",
                      "share": f"{sov.get(dom, 0.0) * 100:.0f} %",
                      "css": "down" if diff > 0.05 else "up" if diff < -0.05 else ""})
    # The own site's winners and losers are the report's own summary line (tracker.report._keyword_lines).
    summary = []
    rival_moves = sum(1 for m in moves if not m["own"] and m["label"] != LABELS["new_top_result"])
    if rival_moves:
        up = sum(1 for m in moves if not m["own"] and m["css"] == "down" and m["label"] != LABELS["new_top_result"])
        summary.append(f"Rival rankings: {rival_moves} movement{'s' if rival_moves != 1 else ''} "
                       f"({up} up, {rival_moves - up} down)")
    if new_ones:
        summary.append("Own site is the new #1 for: " + ", ".join(f"“{t}”" for t in sorted(set(new_ones))))
    return {"title": "Rankings", "html_template": "_serp.html.j2", "text_template": "_serp.txt.j2",
            "data": {"moves": moves, "columns": [{"domain": d, "label": lbl} for d, lbl in columns.items()],
                     "keywords": keywords, "trend": trend},
            "summary_lines": summary}


# ------------------------------------------------------------------------------- CLI helpers (tracker serp)

def _as_json(outcome: SerpOutcome, engine: str, domains: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "engine": engine, "pages": outcome.pages, "no_results": outcome.no_results,
        "results": [{"position": r.position, "url": r.url, "title": r.title, "snippet": r.snippet}
                    for r in outcome.results],
        "features": sorted(outcome.features)}
    if domains:
        positions = best_positions(outcome.results, domains)
        data["positions"] = {d: ({"position": p[0], "url": p[1]} if p else None) for d, p in positions.items()}
    return data


def parse_saved(raw: bytes, engine_name: str, *, base_url: str | None = None, config: Any = None,
                domains: list[str] | None = None) -> dict[str, Any]:
    """`tracker serp FILE`: parse a saved result page (SerpApi: a saved JSON answer). Raises SerpBlocked."""
    engine = engine_for({"engine": engine_name}, config)
    page = engine.parse(raw, base_url=base_url)
    outcome = SerpOutcome(results=list(page.results), features=set(page.features), pages=1,
                          no_results=page.no_results)
    return _as_json(outcome, engine_name, domains)


async def search_now(config: Any, term: str, *, engine_name: str, locale: str = "en-US", device: str = "desktop",
                     depth: int = 10, fetch: str | None = None, domains: list[str] | None = None
                     ) -> dict[str, Any]:
    """`tracker serp TERM`: run one live query now (no database). Raises SerpBlocked / FetchError."""
    from scrapers.browser import BrowserFetcher
    from scrapers.fetch import HttpFetcher, Politeness

    spec = {"engine": engine_name, "fetch": fetch}
    engine = engine_for(spec, config)
    mode = fetch_mode(spec)
    is_api = isinstance(engine, SerpApiEngine)
    http_cfg = config.http
    async with HttpFetcher(user_agent=http_cfg.user_agent, timeout_s=http_cfg.timeout_s, max_bytes=http_cfg.max_bytes,
                           retries=http_cfg.retries, politeness=Politeness(1, 0),
                           respect_robots=http_cfg.respect_robots and not is_api) as http, \
            BrowserFetcher(executable=config.browser.executable, timeout_s=config.browser.timeout_s) as browser:
        async def fetch_page(url: str) -> Page:
            if mode == "browser":
                return await browser.fetch(url, context_key=f"serp:{engine_name}", device=device)
            return await http.fetch(url)

        gate = engine_gate(engine_name, 1)
        outcome = await run_query(engine, fetch_page, term, locale=locale, device=device, depth=depth,
                                  before_request=lambda: gate.turn(tuple(config.serp.delay_s)))
    return _as_json(outcome, engine_name, domains)


register_observer(KIND, observe_serp)
DIFFERS[KIND] = diff_serp
SECTION_BUILDERS[KIND] = build_section
