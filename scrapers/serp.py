"""Search-engine result pages: build search URLs, parse ranked organic results and SERP features.

Engines are registered by name (like urlwatch's `__kind__` registry): a new engine is one subclass of
`Engine` with a `name`. `get_engine("google")` returns an instance; `ENGINES` maps names to classes.

Parsers rely on structure that survives markup changes: a result is a link that carries a heading
(`<a><h3>` / `<h3><a>` / `role=heading`) inside the results container, and it is *not* organic when
one of its ancestors is a unit that is not (ads, a carousel, a People-also-ask accordion, the featured
snippet block, the right rail, a sitelinks table, a unit that starts with its own level-2 heading).
Generated class names are only used as a second signal for features, never as the only way to find
results. Blocked pages (CAPTCHA, consent, "unusual traffic") raise `SerpBlocked`: a block is never
read as "not ranked".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote_plus, unquote, urlencode, urljoin, urlsplit

import lxml.html
import orjson
from lxml import etree

from scrapers.blocked import detect_block
from scrapers.types import Block, SerpPage, SerpResult

__all__ = [
    "ENGINES", "Engine", "GoogleEngine", "BingEngine", "DuckDuckGoEngine", "CustomEngine", "SerpApiEngine",
    "SerpBlocked", "get_engine", "register", "domain_of", "best_positions", "decode_html",
]

FEATURES = ("ads", "shopping", "local_pack", "featured_snippet", "people_also_ask", "video", "news",
            "knowledge_panel")


class SerpBlocked(Exception):
    """The engine served a CAPTCHA / consent / 'unusual traffic' page instead of results."""

    def __init__(self, block: Block):
        super().__init__(f"{block.kind}: {block.reason}")
        self.block = block


# --------------------------------------------------------------------------------------------------
# registry

ENGINES: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no engine name")
    ENGINES[cls.name] = cls
    return cls


def get_engine(name: str, **options: Any) -> Engine:
    try:
        cls = ENGINES[name.lower()]
    except KeyError:
        raise KeyError(f"unknown search engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None
    return cls(**options)


class Engine:
    """One search engine: how to ask it (`search_url`) and how to read its answer (`parse`)."""

    name: ClassVar[str] = ""
    base_url: str = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("name"):
            register(cls)

    def search_url(self, term: str, *, locale: str = "en-US", device: str = "desktop", page: int = 1,
                   per_page: int = 10) -> str:
        raise NotImplementedError

    def parse(self, html: str | bytes, *, base_url: str | None = None, offset: int = 0) -> SerpPage:
        raise NotImplementedError

    def check_blocked(self, html: str, *, url: str | None = None, status: int | None = None) -> None:
        block = detect_block(html, url=url, status=status)
        if block is not None:
            raise SerpBlocked(block)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------------------------------
# helpers

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([a-zA-Z0-9_-]+)""", re.I)


def decode_html(data: str | bytes) -> str:
    """Bytes -> text. UTF-8 when the bytes are valid UTF-8 (whatever the meta says), else the declared
    charset, else cp1252 (a superset of ISO-8859-1 that never fails)."""
    if isinstance(data, str):
        return data
    data = bytes(data)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    m = _META_CHARSET.search(data[:4096])
    if m:
        enc = m.group(1).decode("ascii").lower()
        if enc not in ("utf-8", "utf8"):
            try:
                return data.decode(enc)
            except (LookupError, UnicodeDecodeError):
                pass
    return data.decode("cp1252", errors="replace")


def _parse_doc(html: str | bytes) -> lxml.html.HtmlElement:
    text = decode_html(html)
    if not text.strip():
        return lxml.html.fromstring("<html><body></body></html>")
    try:
        return lxml.html.document_fromstring(text)
    except (etree.ParserError, ValueError):
        return lxml.html.fromstring("<html><body></body></html>")


def _text(el: Any) -> str:
    if el is None:
        return ""
    return " ".join("".join(el.itertext()).split())


def _classes(el: Any) -> set[str]:
    c = el.get("class")
    return set(c.split()) if c else set()


def _resolve_redirect(href: str, base_url: str | None) -> str:
    """Absolute target URL of a result link, unwrapping Google `/url?q=` and DuckDuckGo `/l/?uddg=`."""
    href = href.strip()
    if href.startswith("//"):
        href = "https:" + href
    parts = urlsplit(href)
    path = parts.path
    host = (parts.hostname or "").lower()
    if (path == "/url" or path.endswith("/url")) and (not host or "google." in host):
        q = parse_qs(parts.query)
        target = (q.get("q") or q.get("url") or [""])[0]
        if target.startswith(("http://", "https://")):
            return target
    if path.startswith("/l/") and (not host or "duckduckgo." in host):
        q = parse_qs(parts.query)
        target = (q.get("uddg") or [""])[0]
        if target:
            return unquote(target) if "%" in target[:12] else target
    if not parts.scheme and base_url:
        return urljoin(base_url, href)
    return href


def domain_of(url: str) -> str:
    """The host of `url`, lower-case, without `www.` (and without a port or trailing dot).

    Matching of a tracked domain is "that host or any subdomain of it" (see `_host_matches`), so no public
    suffix list is needed: `shop.example.co.uk` matches the tracked `example.co.uk`.
    """
    if "://" not in url:
        url = "http://" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    host = host.strip(".").lower()
    if host.startswith("www."):
        host = host[4:]
    return host


def _host_matches(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def best_positions(results: Iterable[SerpResult], domains: Iterable[str]) -> dict[str, tuple[int, str] | None]:
    """For each domain, the best (lowest) position of a result on that domain or a subdomain, and its URL."""
    wanted = {d: domain_of(d) for d in domains}
    out: dict[str, tuple[int, str] | None] = {d: None for d in wanted}
    for r in sorted(results, key=lambda r: r.position):
        host = domain_of(r.url)
        for d, nd in wanted.items():
            if out[d] is None and nd and _host_matches(host, nd):
                out[d] = (r.position, r.url)
    return out


def _lang_country(locale: str) -> tuple[str, str]:
    parts = re.split(r"[-_]", locale or "en-US")
    lang = parts[0].lower() or "en"
    country = parts[1].upper() if len(parts) > 1 else ""
    return lang, country


def _dedupe(items: Iterable[tuple[str, str, str]], offset: int) -> tuple[SerpResult, ...]:
    seen: set[str] = set()
    out: list[SerpResult] = []
    for url, title, snippet in items:
        key = url.split("#", 1)[0]
        if key in seen:
            continue
        seen.add(key)
        out.append(SerpResult(position=offset + len(out) + 1, url=url, title=title, snippet=snippet))
    return tuple(out)


def _is_web_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


# --------------------------------------------------------------------------------------------------
# Google

# Custom elements and attributes Google uses for units that are not organic results.
_G_EXCLUDED_TAGS = {"g-scrolling-carousel", "g-inner-card", "g-accordion-expander", "related-question-pair",
                    "g-expandable-container", "product-viewer-group", "g-tray-header", "table",
                    "block-component", "promo-throttler", "video-voyager", "inline-video", "g-section-with-header"}
_G_EXCLUDED_IDS = {"tads", "tadsb", "bottomads", "tvcap", "rhs", "rhscol", "taw", "botstuff", "extrares",
                   "appbar", "top_nav", "searchform", "foot", "footcnt", "lu_map", "bres", "brs"}
_G_EXCLUDED_CLASSES = {
    "related-question-pair", "kp-blk", "xpdopen", "ifM9O", "c2xzTb", "g-blk",  # PAA / featured snippet
    "commercial-unit-desktop-top", "commercial-unit-desktop-rhs", "commercial-unit-mobile-top",
    "cu-container", "pla-unit", "ads-ad", "ads-fr", "uEierd",  # ads / shopping
    "usJj9c", "HiHjCd", "nrgt", "mslg",  # sitelinks
    "kno-kp", "knowledge-panel",  # knowledge panel
    "rllt__", "VkpGBb",  # local pack
}
_G_EXCLUDED_ATTRS = ("data-initq", "data-text-ad", "data-pla", "data-rc_ludocid", "data-lat")
_HIDDEN_CSS_CLASS = re.compile(
    r"\.([A-Za-z][\w-]*)\{[^}]*(?:clip:rect\((?:1px|0)|display:none)[^}]*\}")
_VIDEO_HOSTS = ("youtube.com/watch", "youtu.be/", "vimeo.com/", "dailymotion.com/video", "tiktok.com/")


def _is_google_internal(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return True
    if re.match(r"^(www\.)?google\.[a-z.]+$", host) and parts.path.startswith(
            ("/search", "/maps", "/aclk", "/url", "/imgres", "/travel", "/preferences", "/setprefs", "/webhp")):
        return True
    return host.startswith(("maps.google.", "webcache.googleusercontent."))


def _heading_level(el: Any) -> int | None:
    tag = el.tag
    if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
        return int(tag[1])
    if el.get("role") == "heading":
        try:
            return int(el.get("aria-level") or 2)
        except ValueError:
            return 2
    return None


@register
class GoogleEngine(Engine):
    name: ClassVar[str] = "google"

    def __init__(self, base_url: str = "https://www.google.com"):
        self.base_url = base_url.rstrip("/")

    def search_url(self, term: str, *, locale: str = "en-US", device: str = "desktop", page: int = 1,
                   per_page: int = 10) -> str:
        lang, country = _lang_country(locale)
        params: dict[str, Any] = {"q": term, "hl": lang}
        if country:
            params["gl"] = country.lower()
        params["num"] = per_page
        if page > 1:
            params["start"] = (page - 1) * per_page
        params["pws"] = 0
        return f"{self.base_url}/search?{urlencode(params)}"

    # -- results ---------------------------------------------------------------------------------
    def parse(self, html: str | bytes, *, base_url: str | None = None, offset: int = 0) -> SerpPage:
        text = decode_html(html)
        self.check_blocked(text, url=base_url)
        doc = _parse_doc(text)
        base = base_url or self.base_url + "/search"
        root = self._results_root(doc)
        non_organic: list[str] = []
        results = _dedupe(self._organic(root, base, self._hidden_classes(doc), non_organic), offset)
        features = self._features(doc, root, non_organic)
        return SerpPage(results=results, features=frozenset(features), next_url=self._next_url(doc, base, offset),
                        no_results=not results and self._says_no_results(doc))

    @staticmethod
    def _results_root(doc: Any) -> Any:
        for rid in ("rso", "ires", "search", "center_col", "main"):
            found = doc.xpath(f'//*[@id="{rid}"]')
            if found:
                return found[0]
        return doc.find("body") if doc.find("body") is not None else doc

    def _candidates(self, root: Any) -> list[tuple[Any, Any]]:
        """(link, heading) pairs in document order: links carrying a heading, or headings wrapping a link."""
        out: list[tuple[Any, Any]] = []
        seen: set[Any] = set()
        for h in root.iter("h3", "div", "span", "a"):
            if h.tag == "a":
                continue
            if h.tag != "h3" and not (h.get("role") == "heading" and (h.get("aria-level") or "3") == "3"):
                continue
            link = None
            for anc in h.iterancestors():
                if anc.tag == "a" and anc.get("href"):
                    link = anc
                    break
                if anc is root:
                    break
            if link is None:
                inner = h.xpath(".//a[@href]")
                link = inner[0] if inner else None
            if link is None or link in seen:
                continue
            seen.add(link)
            out.append((link, h))
        return out

    def _excluded(self, link: Any, root: Any) -> bool:
        for anc in link.iterancestors():
            if anc is root:
                return False
            if anc.tag in _G_EXCLUDED_TAGS:
                return True
            if anc.get("id") in _G_EXCLUDED_IDS:
                return True
            if _classes(anc) & _G_EXCLUDED_CLASSES:
                return True
            for attr in _G_EXCLUDED_ATTRS:
                if anc.get(attr) is not None:
                    return True
        # Outside the results root (e.g. root fell back to the body): right rail / ads still excluded.
        return False

    @staticmethod
    def _hidden_classes(doc: Any) -> set[str]:
        """Classes the page's own CSS hides (screen-reader-only headings such as "Web results")."""
        css = " ".join(st.text or "" for st in doc.iter("style"))
        return set(_HIDDEN_CSS_CLASS.findall(css))

    def _in_titled_unit(self, link: Any, root: Any, hidden: set[str]) -> bool:
        """A unit that opens with its own visible level-2 heading ("Top stories", "Discussions and forums",
        "Videos") and lists links under it is a SERP feature, not a run of organic results. The nearest
        ancestor holding such a heading before the link decides: one heading = a titled unit; several
        headings = a section that holds several units (a knowledge-panel column), so no verdict."""
        for anc in link.iterancestors():
            if anc is root:
                return False
            heads = []
            before = True
            for el in anc.iter():
                if el is link:
                    before = False
                if not isinstance(el.tag, str):
                    continue
                lvl = _heading_level(el)
                if lvl is None or lvl > 2 or not _text(el) or el.xpath("ancestor::a"):
                    continue
                if _classes(el) & hidden or "display:none" in (el.get("style") or "").replace(" ", ""):
                    continue
                heads.append((el, before))
            if not heads:
                continue
            if not heads[0][1]:
                continue  # headings only after the link
            return len(heads) == 1
        return False

    def _organic(self, root: Any, base: str, hidden: set[str],
                 non_organic: list[str]) -> Iterable[tuple[str, str, str]]:
        for link, heading in self._candidates(root):
            href = link.get("href") or ""
            if href.startswith(("#", "javascript:")):
                continue
            if "/aclk" in href or "googleadservices." in href:
                continue
            url = _resolve_redirect(href, base)
            if not _is_web_url(url) or _is_google_internal(url):
                continue
            if self._excluded(link, root) or self._in_titled_unit(link, root, hidden):
                non_organic.append(url)
                continue
            title = _text(heading) or _text(link)
            yield url, title, self._snippet(link)

    @staticmethod
    def _snippet(link: Any) -> str:
        # The snippet is the longest text block in the result container that is not the title link.
        block = link
        for _ in range(6):
            parent = block.getparent()
            if parent is None:
                break
            block = parent
            if len(_text(block)) > len(_text(link)) + 40:
                break
        best = ""
        for el in block.iter("div", "span"):
            if el.xpath("ancestor-or-self::a") or el.xpath(".//a"):
                continue
            t = _text(el)
            if len(t) > len(best):
                best = t
        return best[:500]

    # -- features --------------------------------------------------------------------------------
    @staticmethod
    def _basic_html_features(doc: Any) -> set[str]:
        """Features of Google's basic (no-JavaScript) HTML, where units are plain top-level blocks of #main."""
        f: set[str] = set()
        for block in doc.xpath('//*[@id="main"]/div'):
            url_links = block.xpath('.//a[starts-with(@href, "/url?")]')
            headed = block.xpath('.//a[.//h3]')
            unit_heads = block.xpath('.//h2')
            if len(url_links) >= 2 and not block.xpath(".//h3") and not unit_heads:
                f.add("people_also_ask")  # questions that expand to answers quoting pages
            elif block.xpath('.//h3[not(ancestor::a)][not(.//a)]') and not headed:
                f.add("knowledge_panel")  # inline entity card with its own title
            elif not headed and not unit_heads and len(url_links) <= 1 and len(_text(block)) >= 80:
                f.add("knowledge_panel")  # inline fact card (e.g. nutrition facts)
        return f

    def _features(self, doc: Any, root: Any, non_organic: list[str] | None = None) -> set[str]:
        non_organic = non_organic or []
        f: set[str] = set()

        def has(xp: str) -> bool:
            return bool(doc.xpath(xp))

        if has('//*[@id="tads" or @id="tadsb" or @id="bottomads"]//a[@href]') or \
                has('//a[contains(@href, "/aclk?") or contains(@href, "googleadservices.com")]') or \
                has('//*[@data-text-ad]'):
            f.add("ads")
        if has('//*[contains(concat(" ", normalize-space(@class), " "), " pla-unit ") or '
               'contains(@class, "commercial-unit-") or contains(concat(" ", @class, " "), " cu-container ")'
               ' or @data-pla]') or has('//product-viewer-group'):
            f.add("shopping")
            f.add("ads")
        if has('//related-question-pair | //*[@data-initq] | '
               '//*[contains(concat(" ", normalize-space(@class), " "), " related-question-pair ")]'):
            f.add("people_also_ask")
        if has('//*[contains(concat(" ", normalize-space(@class), " "), " c2xzTb ")] | '
               '//*[@data-attrid="wa:/description"]//ancestor::block-component'):
            f.add("featured_snippet")
        if has('//a[contains(@href, "ludocid")][not(ancestor::*[@id="rhs"])] | '
               '//*[@data-lat and @data-lng][not(ancestor::*[@id="rhs"])] | '
               '//*[contains(concat(" ", normalize-space(@class), " "), " rllt__ ")] | '
               '//*[@data-rc_ludocid] | //*[@data-cid][not(ancestor::*[@id="rhs"])] | '
               '//*[@id="lu_map"][not(ancestor::*[@id="rhs"])] | //a[starts-with(@href, "/travel/hotels")]'):
            f.add("local_pack")
        if has('//*[@id="rhs"]//*[@data-attrid or contains(@class, "kp-") or contains(@class, "knowledge")] | '
               '//*[contains(concat(" ", normalize-space(@class), " "), " kp-wholepage ")] | '
               '//*[contains(concat(" ", normalize-space(@class), " "), " knowledge-panel ")]'):
            f.add("knowledge_panel")
        if not has('//*[@id="rso"]') and has('//a[starts-with(@href, "/url?")]'):
            f |= self._basic_html_features(doc)
        # Carousels of linked cards: videos when the cards point to video hosts, else news (Top stories).
        if len([u for u in non_organic if any(v in u for v in _VIDEO_HOSTS)]) >= 2:
            f.add("video")
        for unit in doc.xpath('//g-scrolling-carousel | //g-section-with-header | //video-voyager | '
                              '//*[@data-vid]/ancestor::*[1]'):
            if unit.xpath('ancestor::*[@id="rhs" or @id="tads" or @id="bottomads" or @id="tvcap"]'):
                continue
            if unit.xpath('.//a[contains(@href, "/aclk") or contains(@href, "googleadservices")] | '
                          './/*[contains(@class, "pla-")] | ancestor-or-self::*[contains(@class, "pla-")]'):
                continue
            hrefs = [_resolve_redirect(a.get("href") or "", None) for a in unit.iter("a")]
            hrefs = [h for h in hrefs if _is_web_url(h) and not _is_google_internal(h)]
            if not hrefs:
                continue
            n_video = sum(1 for h in hrefs if any(v in h for v in _VIDEO_HOSTS))
            if unit.tag == "video-voyager" or n_video >= 2 and n_video * 2 >= len(hrefs):
                f.add("video")
            elif len({domain_of(h) for h in hrefs}) >= 3 and not all("twitter.com" in h for h in hrefs) \
                    and unit.xpath('.//g-inner-card | .//*[@role="heading"]'):
                f.add("news")
        return f

    @staticmethod
    def _next_url(doc: Any, base: str, offset: int = 0) -> str | None:
        for xp in ('//a[@id="pnnext"]', '//a[@aria-label="Next page"]'):
            found = doc.xpath(xp)
            if found and found[-1].get("href"):
                return urljoin(base, found[-1].get("href"))
        # Otherwise the pagination link with the smallest `start` beyond this page's.
        current = offset
        q = parse_qs(urlsplit(base).query)
        if (q.get("start") or [""])[0].isdigit():
            current = int(q["start"][0])
        best: tuple[int, str] | None = None
        for a in doc.xpath('//a[contains(@href, "start=")]'):
            href = a.get("href") or ""
            parts = urlsplit(href)
            if not parts.path.endswith("/search"):
                continue
            start = (parse_qs(parts.query).get("start") or [""])[0]
            if start.isdigit() and int(start) > current and (best is None or int(start) < best[0]):
                best = (int(start), href)
        return urljoin(base, best[1]) if best else None

    @staticmethod
    def _says_no_results(doc: Any) -> bool:
        if doc.xpath('//*[@id="topstuff"]//*[contains(@class, "card-section")]'):
            return True
        text = _text(doc.find("body")).lower() if doc.find("body") is not None else ""
        return "did not match any documents" in text or "no results found for" in text


# --------------------------------------------------------------------------------------------------
# Shared: "a link carrying a heading" inside a results container

def _headed_links(root: Any, heading_tags: tuple[str, ...] = ("h2", "h3")) -> list[tuple[Any, Any]]:
    out: list[tuple[Any, Any]] = []
    seen: set[Any] = set()
    for h in root.iter(*heading_tags):
        link = next((a for a in h.iterancestors("a") if a.get("href")), None)
        if link is None:
            inner = h.xpath(".//a[@href]")
            link = inner[0] if inner else None
        if link is not None and link not in seen:
            seen.add(link)
            out.append((link, h))
    return out


def _has_ancestor(el: Any, stop: Any, *, ids: set[str] = frozenset(), classes: set[str] = frozenset()) -> bool:
    for anc in el.iterancestors():
        if anc is stop:
            return False
        if anc.get("id") in ids or _classes(anc) & classes:
            return True
    return False


def _bing_target(url: str) -> str:
    """Unwrap Bing's `bing.com/ck/a?...&u=a1<base64url>` click redirect."""
    parts = urlsplit(url)
    if (parts.hostname or "").endswith("bing.com") and parts.path.startswith("/ck/a"):
        import base64

        u = (parse_qs(parts.query).get("u") or [""])[0]
        if u.startswith("a1"):
            raw = u[2:]
            try:
                return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return url
    return url


# --------------------------------------------------------------------------------------------------
# Bing

@register
class BingEngine(Engine):
    name: ClassVar[str] = "bing"
    _NOT_ORGANIC = {"b_ad", "b_adTop", "b_adBottom", "b_ans", "b_pag", "b_rs", "b_adLastChild", "b_algoSlug",
                    "b_deep", "b_vList", "b_caption"}

    def __init__(self, base_url: str = "https://www.bing.com"):
        self.base_url = base_url.rstrip("/")

    def search_url(self, term: str, *, locale: str = "en-US", device: str = "desktop", page: int = 1,
                   per_page: int = 10) -> str:
        lang, country = _lang_country(locale)
        params: dict[str, Any] = {"q": term, "setlang": lang}
        if country:
            params["cc"] = country.lower()
            params["mkt"] = f"{lang}-{country}"
        params["count"] = per_page
        if page > 1:
            params["first"] = (page - 1) * per_page + 1
        return f"{self.base_url}/search?{urlencode(params)}"

    def parse(self, html: str | bytes, *, base_url: str | None = None, offset: int = 0) -> SerpPage:
        text = decode_html(html)
        self.check_blocked(text, url=base_url)
        doc = _parse_doc(text)
        base = base_url or self.base_url + "/search"
        found = doc.xpath('//*[@id="b_results"]')
        root = found[0] if found else (doc.find("body") if doc.find("body") is not None else doc)
        items: list[tuple[str, str, str]] = []
        blocks_seen: set[Any] = set()
        for link, h in _headed_links(root, ("h2",)):
            href = link.get("href") or ""
            if "/aclick" in href or "/aclk" in href:
                continue
            if _has_ancestor(link, root, ids={"b_context", "b_pole"}, classes=self._NOT_ORGANIC):
                continue
            block = link
            while block.getparent() is not None and block.getparent() is not root:
                block = block.getparent()
            if block in blocks_seen:
                continue  # a second headed link in one result (deep links)
            blocks_seen.add(block)
            url = _bing_target(urljoin(base, href))
            host = domain_of(url)
            if not _is_web_url(url) or (host.endswith("bing.com") and urlsplit(url).path.startswith(
                    ("/search", "/images", "/videos", "/news", "/maps", "/shop", "/aclick", "/ck/"))):
                continue
            snippet = ""
            for p in block.iter("p"):
                snippet = _text(p)
                if snippet:
                    break
            items.append((url, _text(h) or _text(link), snippet[:500]))
        results = _dedupe(items, offset)
        f: set[str] = set()

        def has(xp: str) -> bool:
            return bool(doc.xpath(xp))

        if has('//li[contains(concat(" ", normalize-space(@class), " "), " b_ad ")]//a | '
               '//a[contains(@href, "/aclick?")]'):
            f.add("ads")
        if has('//*[starts-with(@data-tag, "RelatedQnA")] | //*[@id="relatedQnAListDisplay"] | '
               '//*[contains(@class, "df_alaskcarousel")]'):
            f.add("people_also_ask")
        if has('//*[@id="lMapContainer"] | //*[@data-tag="common.MapControl"] | //*[contains(@class, "b_localAns")]'):
            f.add("local_pack")
        if has('//*[@id="serpvidans"] | //*[@id="b_results"]//a[contains(@href, "/videos/search")]'):
            f.add("video")
        if has('//*[@id="b_results"]//*[contains(@class, "b_nwsAns") or @id="newsans"]'):
            f.add("news")
        if has('//*[@id="b_results"]//*[contains(@class, "b_prodAns") or contains(@class, "pa_carousel")]'):
            f.add("shopping")
        if has('//*[@id="b_context"]//h2[not(ancestor::*[contains(@class, "b_ad") or contains(@class, "b_rs")])]'):
            f.add("knowledge_panel")
        nxt = doc.xpath('//a[contains(@class, "sb_pagN")] | //a[@title="Next page"]')
        next_url = urljoin(base, nxt[0].get("href")) if nxt and nxt[0].get("href") else None
        no_results = not results and has('//*[contains(@class, "b_no")]')
        return SerpPage(results=results, features=frozenset(f), next_url=next_url, no_results=no_results)


# --------------------------------------------------------------------------------------------------
# DuckDuckGo (html.duckduckgo.com, the no-JavaScript version)

@register
class DuckDuckGoEngine(Engine):
    name: ClassVar[str] = "duckduckgo"

    def __init__(self, base_url: str = "https://html.duckduckgo.com"):
        self.base_url = base_url.rstrip("/")

    def search_url(self, term: str, *, locale: str = "en-US", device: str = "desktop", page: int = 1,
                   per_page: int = 10) -> str:
        lang, country = _lang_country(locale)
        kl = f"{country.lower()}-{lang}" if country else "wt-wt"
        params: dict[str, Any] = {"q": term, "kl": kl}
        if page > 1:
            # html.duckduckgo.com pages hold a fixed number of results (per_page is what we assume).
            params["s"] = (page - 1) * per_page
            params["dc"] = (page - 1) * per_page + 1
        return f"{self.base_url}/html/?{urlencode(params)}"

    def parse(self, html: str | bytes, *, base_url: str | None = None, offset: int = 0) -> SerpPage:
        text = decode_html(html)
        self.check_blocked(text, url=base_url)
        doc = _parse_doc(text)
        base = base_url or self.base_url + "/html/"
        found = doc.xpath('//*[@id="links"] | //*[contains(concat(" ", normalize-space(@class), " "), " results ")]')
        root = found[0] if found else (doc.find("body") if doc.find("body") is not None else doc)
        items: list[tuple[str, str, str]] = []
        ads = False
        for link, h in _headed_links(root, ("h2", "h3")):
            href = link.get("href") or ""
            block = next((a for a in link.iterancestors() if "result" in _classes(a)), None)
            is_ad = "/y.js" in href or "ad_provider" in href or (
                block is not None and _classes(block) & {"result--ad", "result--ad--small"})
            if is_ad:
                ads = True
                continue
            url = _resolve_redirect(href, base)
            if not _is_web_url(url) or domain_of(url).endswith("duckduckgo.com"):
                continue
            snippet = ""
            if block is not None:
                sn = block.xpath('.//*[contains(@class, "result__snippet")]')
                snippet = _text(sn[0]) if sn else ""
            items.append((url, _text(h) or _text(link), snippet))
        if doc.xpath('//*[contains(@class, "result--ad")]'):
            ads = True
        results = _dedupe(items, offset)
        next_url = None
        for form in doc.xpath('//*[contains(@class, "nav-link")]//form'):
            fields = {i.get("name"): i.get("value") or "" for i in form.iter("input") if i.get("name")}
            if "s" in fields and fields.get("s", "0").isdigit() and int(fields["s"]) > offset:
                action = urljoin(base, form.get("action") or "/html/")
                next_url = f"{action}?{urlencode(fields)}"
        no_results = not results and bool(doc.xpath('//*[contains(@class, "no-results")]'))
        return SerpPage(results=results, features=frozenset({"ads"} if ads else set()), next_url=next_url,
                        no_results=no_results)


# --------------------------------------------------------------------------------------------------
# A marketplace's own search

class CustomEngine(Engine):
    """A site's own search: a URL template and CSS selectors for one result (and optionally its link,
    title and the next-page link). `{term}` is URL-encoded; `{page}` is 1-based, `{offset}` 0-based."""

    name: ClassVar[str] = "custom"

    def __init__(self, url_template: str, result: str, link: str | None = None, title: str | None = None,
                 next: str | None = None):  # noqa: A002 - the option's name in the config
        from lxml.cssselect import CSSSelector

        if "{term}" not in url_template:
            raise ValueError("url_template needs a {term} placeholder")
        self.url_template = url_template
        self.result, self.link, self.title, self.next = result, link, title, next
        self._result_sel = CSSSelector(result)
        self._link_sel = CSSSelector(link) if link else None
        self._title_sel = CSSSelector(title) if title else None
        self._next_sel = CSSSelector(next) if next else None

    def __repr__(self) -> str:
        return f"CustomEngine({self.url_template!r}, result={self.result!r})"

    def search_url(self, term: str, *, locale: str = "en-US", device: str = "desktop", page: int = 1,
                   per_page: int = 10) -> str:
        lang, country = _lang_country(locale)
        return self.url_template.format(term=quote_plus(term), page=page, offset=(page - 1) * per_page,
                                        per_page=per_page, lang=lang, country=country.lower(), locale=locale)

    def parse(self, html: str | bytes, *, base_url: str | None = None, offset: int = 0) -> SerpPage:
        text = decode_html(html)
        self.check_blocked(text, url=base_url)
        doc = _parse_doc(text)
        base = base_url or self.url_template.split("?", 1)[0]
        items: list[tuple[str, str, str]] = []
        for node in self._result_sel(doc):
            if self._link_sel is not None:
                links = self._link_sel(node)
            else:
                links = [node] if node.tag == "a" and node.get("href") else node.xpath(".//a[@href]")
            if not links or not links[0].get("href"):
                continue
            url = urljoin(base, links[0].get("href").strip())
            if not _is_web_url(url):
                continue
            t = self._title_sel(node) if self._title_sel is not None else []
            title = _text(t[0]) if t else (links[0].get("title") or _text(links[0]) or _text(node))
            items.append((url, title[:300], ""))
        results = _dedupe(items, offset)
        next_url = None
        if self._next_sel is not None:
            nxt = self._next_sel(doc)
            if nxt and nxt[0].get("href"):
                next_url = urljoin(base, nxt[0].get("href"))
        return SerpPage(results=results, next_url=next_url, no_results=not results)


# --------------------------------------------------------------------------------------------------
# SerpApi (JSON)

class SerpApiEngine(Engine):
    """Results from SerpApi's JSON API (https://serpapi.com/search-api). The key never appears in repr()."""

    name: ClassVar[str] = "serpapi"

    def __init__(self, api_key: str | None = None, base_url: str = "https://serpapi.com", engine: str = "google"):
        import os

        self._api_key = api_key or os.environ.get("SERPAPI_API_KEY") or os.environ.get("SERPAPI_KEY") or ""
        self.base_url = base_url.rstrip("/")
        self.engine = engine

    def __repr__(self) -> str:
        return f"SerpApiEngine(base_url={self.base_url!r}, engine={self.engine!r}, api_key=***)"

    __str__ = __repr__

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("SerpApiEngine holds a secret and is not picklable")

    def search_url(self, term: str, *, locale: str = "en-US", device: str = "desktop", page: int = 1,
                   per_page: int = 10) -> str:
        if not self._api_key:
            raise ValueError("SerpApi needs an API key (api_key= or SERPAPI_API_KEY)")
        lang, country = _lang_country(locale)
        params: dict[str, Any] = {"engine": self.engine, "q": term, "hl": lang}
        if country:
            params["gl"] = country.lower()
        params.update({"start": (page - 1) * per_page, "num": per_page,
                       "device": device if device in ("desktop", "mobile", "tablet") else "desktop",
                       "api_key": self._api_key})
        return f"{self.base_url}/search.json?{urlencode(params)}"

    @staticmethod
    def redact(text: str) -> str:
        return re.sub(r"(api_key=)[^&\s]+", r"\1***", text)

    def parse(self, html: str | bytes | Mapping[str, Any], *, base_url: str | None = None,
              offset: int = 0) -> SerpPage:
        if isinstance(html, Mapping):
            data = dict(html)
        else:
            try:
                data = orjson.loads(html if isinstance(html, (bytes, bytearray)) else html.encode("utf-8"))
            except orjson.JSONDecodeError as exc:
                raise ValueError("SerpApi answer is not JSON") from exc
        if not isinstance(data, dict):
            raise ValueError("SerpApi answer is not a JSON object")
        if data.get("error"):
            err = str(data["error"])
            if "hasn't returned any results" in err or "no results" in err.lower():
                return SerpPage(no_results=True)
            raise ValueError(f"SerpApi error: {self.redact(err)}")
        items: list[tuple[str, str, str]] = []
        organic = sorted(data.get("organic_results") or [], key=lambda r: r.get("position") or 0)
        for r in organic:
            link = r.get("link")
            if isinstance(link, str) and _is_web_url(link):
                items.append((link, str(r.get("title") or ""), str(r.get("snippet") or "")))
        results = _dedupe(items, offset)
        f: set[str] = set()
        if data.get("ads") or data.get("top_ads") or data.get("bottom_ads"):
            f.add("ads")
        if data.get("shopping_results") or data.get("inline_shopping_results") or data.get("immersive_products"):
            f.add("shopping")
            f.add("ads")
        if data.get("local_results") or data.get("local_map"):
            f.add("local_pack")
        if isinstance(data.get("answer_box"), dict) and data["answer_box"].get("link"):
            f.add("featured_snippet")
        if data.get("related_questions"):
            f.add("people_also_ask")
        if data.get("inline_videos") or data.get("videos") or data.get("short_videos"):
            f.add("video")
        if data.get("top_stories") or data.get("news_results"):
            f.add("news")
        if data.get("knowledge_graph"):
            f.add("knowledge_panel")
        pag = data.get("serpapi_pagination") or data.get("pagination") or {}
        nxt = pag.get("next") or pag.get("next_link")
        next_url = self.redact(nxt) if isinstance(nxt, str) else None
        info = data.get("search_information") or {}
        no_results = not results and (info.get("organic_results_state") == "Fully empty")
        return SerpPage(results=results, features=frozenset(f), next_url=next_url, no_results=no_results)
