"""On-page SEO snapshot of one fetched page: title, description, H1s, canonical, robots, hreflang,
structured-data types and visible word count. Parsed with selectolax (lexbor)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import orjson
from selectolax.lexbor import LexborHTMLParser

from scrapers.serp import decode_html
from scrapers.types import SeoSnapshot

__all__ = ["extract_seo"]

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w", re.UNICODE)
# Directives whose value contains a colon, so they are not "<user-agent>: ..." prefixes.
_COLON_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
_OUR_AGENTS = {"googlebot", "robots", "*"}


def _clean(s: str | None) -> str | None:
    if s is None:
        return None
    s = _WS.sub(" ", s).strip()
    return s or None


def _header(headers: Mapping[str, str] | None, name: str) -> list[str]:
    if not headers:
        return []
    out: list[str] = []
    getall = getattr(headers, "getall", None) or getattr(headers, "get_list", None)
    if callable(getall):
        try:
            return [str(v) for v in getall(name, [])]
        except TypeError:
            pass
    for k, v in headers.items():
        if k.lower() == name.lower() and v is not None:
            out.append(str(v))
    return out


def _robots_directives(value: str) -> list[str]:
    out: list[str] = []
    agent_scope: str | None = None
    for token in value.split(","):
        token = _clean(token.lower()) or ""
        if not token:
            continue
        m = re.match(r"^([a-z0-9_*-]+)\s*:\s*(.*)$", token)
        if m and m.group(1) not in _COLON_DIRECTIVES:
            agent_scope = m.group(1)
            token = m.group(2).strip()
            if not token:
                continue
        if agent_scope is not None and agent_scope not in _OUR_AGENTS:
            continue  # e.g. "bingbot: noindex" does not concern us
        out.append(token)
    return out


def _schema_type(t: Any) -> list[str]:
    if isinstance(t, list):
        return [x for v in t for x in _schema_type(v)]
    if not isinstance(t, str) or not t.strip():
        return []
    t = t.strip()
    for prefix in ("http://schema.org/", "https://schema.org/", "schema:"):
        if t.startswith(prefix):
            t = t[len(prefix):]
    return [t]


def _jsonld_types(data: Any) -> list[str]:
    out: list[str] = []
    if isinstance(data, list):
        for item in data:
            out += _jsonld_types(item)
    elif isinstance(data, dict):
        out += _schema_type(data.get("@type"))
        graph = data.get("@graph")
        if isinstance(graph, (list, dict)):
            out += _jsonld_types(graph)
    return out


def extract_seo(
    html: str | bytes,
    *,
    url: str,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
    final_url: str | None = None,
) -> SeoSnapshot:
    page_url = final_url or url
    text = decode_html(html)
    tree = LexborHTMLParser(text or "<html></html>")

    base = page_url
    base_el = tree.css_first("base[href]")
    if base_el is not None and (base_el.attributes.get("href") or "").strip():
        base = urljoin(page_url, base_el.attributes["href"].strip())

    title_el = tree.css_first("title")
    title = _clean(title_el.text()) if title_el is not None else None

    description = None
    robots: list[str] = []
    for meta in tree.css("meta[name]"):
        name = (meta.attributes.get("name") or "").strip().lower()
        content = meta.attributes.get("content")
        if name == "description" and description is None:
            description = _clean(content)
        elif name in ("robots", "googlebot") and content:
            robots += _robots_directives(content)
    for value in _header(headers, "x-robots-tag"):
        robots += _robots_directives(value)
    robots_merged = ", ".join(dict.fromkeys(robots)) or None

    h1 = tuple(t for t in (_clean(n.text(separator=" ")) for n in tree.css("h1")) if t)

    canonical = None
    hreflang: set[tuple[str, str]] = set()
    for link in tree.css("link[rel][href]"):
        rels = (link.attributes.get("rel") or "").lower().split()
        href = (link.attributes.get("href") or "").strip()
        if not href:
            continue
        if "canonical" in rels and canonical is None:
            canonical = urljoin(base, href)
        if "alternate" in rels and link.attributes.get("hreflang"):
            hreflang.add((link.attributes["hreflang"].strip(), urljoin(base, href)))

    types: set[str] = set()
    for script in tree.css("script"):
        if (script.attributes.get("type") or "").strip().lower() != "application/ld+json":
            continue
        raw = (script.text() or "").strip()
        if not raw:
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # trailing commas / control characters are common; one lenient retry
                data = orjson.loads(re.sub(r",\s*([}\]])", r"\1", raw).replace("\n", " ").replace("\t", " "))
            except orjson.JSONDecodeError:
                continue
        types.update(_jsonld_types(data))
    for node in tree.css("[itemscope][itemtype]"):
        if node.attributes.get("itemprop") is not None:
            continue  # a property of another item, not a top-level entity
        for t in (node.attributes.get("itemtype") or "").split():
            types.update(_schema_type(t))

    word_count = 0
    body = tree.body
    if body is not None:
        for junk in body.css("script, style, noscript, template"):
            junk.decompose()
        word_count = sum(1 for w in body.text(separator=" ").split() if _WORD.search(w))

    return SeoSnapshot(
        status_code=status_code,
        final_url=page_url,
        title=title,
        meta_description=description,
        h1=h1,
        canonical=canonical,
        robots=robots_merged,
        hreflang=tuple(sorted(hreflang)),
        structured_data_types=tuple(sorted(types)),
        word_count=word_count,
    )
