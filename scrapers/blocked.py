"""Bot-wall detection: is this fetched page a CAPTCHA / JS challenge / consent wall instead of content?

`detect_block` runs on every fetched page in the hot loop, so it is built as a cascade:

1. the HTTP status, the URL and a few response headers (free);
2. plain substring checks on a lower-cased *head* of the document (the first 16 KB; the whole document
   when it is small) and on its <title>: vendor markers that only appear on interstitials
   (Cloudflare `_cf_chl_opt`, Sucuri `sucuri_cloudproxy_js`, DataDome `captcha-delivery.com`, ...),
   never markers that protected *normal* pages also carry (Cloudflare's injected
   `/cdn-cgi/challenge-platform/scripts/jsd/main.js`, PerimeterX's `client.px-cdn.net` sensor,
   Incapsula's `_Incapsula_Resource` script, a newsletter form's reCAPTCHA);
3. only when a weak signal fires on a *small* page (a consent/cookie title or form, a bare 403 page):
   one selectolax parse to count the visible words, because a consent wall replaces the content while
   a cookie banner sits next to it.

Interstitials are small: Google's /sorry page is 3-5 KB, Cloudflare's 7-25 KB, DataDome/Akamai/Incapsula
under 2 KB. Real pages are larger, and their tell-tale strings, if any, sit in the <head>.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from scrapers.types import Block

__all__ = ["detect_block", "is_blocked"]

HEAD_CHARS = 16_384        # how much of a big document is inspected
SMALL_PAGE = 65_536        # documents up to this size are inspected whole
FEW_LINKS = 15             # consent walls and interstitials carry fewer links than this
TINY_CONTENT_WORDS = 60    # a "page" with fewer visible words than this has no content to speak of

# Vendor markers that only appear on interstitials, grouped under a cheap trigger substring: every
# `in` test scans the page (~3 us per 10 KB), so a normal page pays for the triggers only and the
# specific markers are looked at when their trigger is present. Groups are in priority order.
_STRONG_GROUPS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("captcha", (
        ('id="captcha-form"', "captcha", "Google 'unusual traffic' CAPTCHA"),
        ("cf_captcha_kind", "captcha", "Cloudflare CAPTCHA"),
        ("/cdn-cgi/l/chk_captcha", "captcha", "Cloudflare CAPTCHA"),
        ("cf_chl_captcha_tk", "captcha", "Cloudflare CAPTCHA"),
        ("cf-captcha-container", "captcha", "Cloudflare CAPTCHA"),
        ("captcha-delivery.com", "captcha", "DataDome CAPTCHA"),
        ('id="px-captcha"', "captcha", "PerimeterX 'Press & Hold' CAPTCHA"),
        ("_pxcaptcha", "captcha", "PerimeterX CAPTCHA"),
        ("px-captcha-error", "captcha", "PerimeterX CAPTCHA"),
        ("/errors/validatecaptcha", "captcha", "Amazon 'Robot Check' CAPTCHA"),
    )),
    ("unusual traffic", (
        ("our systems have detected unusual traffic", "captcha", "Google 'unusual traffic' CAPTCHA"),
    )),
    ("anomaly", (
        ("anomaly-modal", "captcha", "DuckDuckGo anomaly CAPTCHA"),
        ("duckduckgo.com/anomaly.js", "captcha", "DuckDuckGo anomaly CAPTCHA"),
    )),
    ("chl", (
        ("_cf_chl_opt", "challenge", "Cloudflare JS challenge"),
        ("jschl_vc", "challenge", "Cloudflare JS challenge"),
        ("jschl-answer", "challenge", "Cloudflare JS challenge"),
    )),
    ("challenge", (
        ("cf-challenge-running", "challenge", "Cloudflare JS challenge"),
        ('id="challenge-form"', "challenge", "Interstitial challenge form"),
        ("/_sec/cp_challenge/", "challenge", "Akamai Bot Manager challenge"),
        ("sec-if-cpt-container", "challenge", "Akamai Bot Manager challenge"),
        ("please solve the challenge below to continue", "captcha", "Bing CAPTCHA"),
    )),
    ("sucuri", (
        ("sucuri_cloudproxy_js", "challenge", "Sucuri CloudProxy JS challenge"),
        ("sucuri website firewall - access denied", "access_denied", "Sucuri firewall: access denied"),
        ("cloudproxy@sucuri.net", "access_denied", "Sucuri firewall: access denied"),
    )),
    ("consent.google", (
        ("consent.google.com/save", "consent", "Google consent page ('Before you continue')"),
    )),
)

# (substring of the lower-cased <title>, kind, reason)
_TITLE_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("just a moment", "challenge", "Cloudflare JS challenge"),
    ("attention required! | cloudflare", "captcha", "Cloudflare CAPTCHA"),
    ("please wait... | cloudflare", "challenge", "Cloudflare JS challenge"),
    ("| cloudflare", "access_denied", "Cloudflare block page"),
    ("used cloudflare to restrict access", "access_denied", "Cloudflare block page"),
    ("ddos-guard", "challenge", "DDoS-Guard challenge"),
    ("robot check", "captcha", "Amazon 'Robot Check' CAPTCHA"),
    ("before you continue", "consent", "Google consent page ('Before you continue')"),
    ("bevor sie zu google", "consent", "Google consent page ('Before you continue')"),
    ("avant d'accéder à google", "consent", "Google consent page ('Before you continue')"),
    ("access to this page has been denied", "captcha", "PerimeterX block page"),
    ("sucuri website firewall", "access_denied", "Sucuri firewall: access denied"),
    ("you are being redirected...", "challenge", "JS redirect challenge"),
    ("too many requests", "rate_limit", "Rate limited (Too Many Requests)"),
    ("rate limit", "rate_limit", "Rate limited"),
    ("access denied", "access_denied", "Access denied"),
    ("request rejected", "access_denied", "Request rejected (WAF)"),
    ("request unsuccessful", "access_denied", "Request unsuccessful (WAF)"),
    ("are you a robot", "captcha", "CAPTCHA ('are you a robot')"),
    ("are you a human", "captcha", "CAPTCHA ('are you a human')"),
    ("verify you are human", "captcha", "CAPTCHA ('verify you are human')"),
    ("human verification", "captcha", "CAPTCHA (human verification)"),
    ("security check", "captcha", "CAPTCHA (security check)"),
    ("captcha", "captcha", "CAPTCHA page"),
    ("pardon our interruption", "challenge", "Bot challenge ('Pardon our interruption')"),
    ("one more step", "captcha", "CAPTCHA ('one more step')"),
)

# Titles that are only a signal on a page with little content (weak: a real page may say "cookies").
_CONSENT_WORDS = ("cookie", "consent", "privacy", "datenschutz", "einwilligung", "before you continue",
                  "your choices", "gdpr", "rgpd", "tcf")

# Phrases found on tiny access-denied / rate-limit pages without a telling title (checked under 8 KB).
TINY_PAGE = 8_192
_TINY_PAGE_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("incapsula incident id", "access_denied", "Imperva/Incapsula: request blocked"),
    ("_incapsula_resource", "challenge", "Imperva/Incapsula challenge"),
    ("errors.edgesuite.net", "access_denied", "Akamai 'Access Denied'"),
    ("cf-error-details", "access_denied", "Cloudflare error / block page"),
    ("sorry, we just need to make sure you're not a robot", "captcha", "Amazon 'Robot Check' CAPTCHA"),
    ("too many requests", "rate_limit", "Rate limited (Too Many Requests)"),
    ("rate limit exceeded", "rate_limit", "Rate limited"),
    ("you have been blocked", "access_denied", "Access denied ('you have been blocked')"),
    ("you don't have permission to access", "access_denied", "Access denied"),
    ("request blocked", "access_denied", "Request blocked (WAF)"),
    ("access denied", "access_denied", "Access denied"),
)
# CAPTCHA widgets: a CAPTCHA *page* when there is nothing else on the page (a form may use them).
_CAPTCHA_WIDGETS = ("g-recaptcha", "h-captcha", "cf-turnstile", "recaptcha/api.js", "hcaptcha.com/1/api.js")

_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title", re.S)


def _title(low: str) -> str:
    i = low.find("<title")
    if i == -1:
        return ""
    m = _TITLE_RE.match(low, i)
    return m.group(1).strip() if m else ""


def _header(headers: Mapping[str, str] | None, name: str) -> str:
    if not headers:
        return ""
    v = headers.get(name)
    if v is None:
        # Case-insensitive fallback for plain dicts.
        for k, val in headers.items():
            if k.lower() == name:
                v = val
                break
    return (v or "").lower()


def _from_url(url: str) -> Block | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    path = parts.path.lower()
    if host.startswith("consent.") and ("google." in host or "youtube." in host):
        return Block("consent", "Google consent page ('Before you continue')")
    if "google." in host and path.startswith("/sorry"):
        return Block("captcha", "Google 'unusual traffic' CAPTCHA")
    if host.startswith(("consent.", "guce.")) and "yahoo." in host:
        return Block("consent", "Yahoo consent wall")
    if host.startswith("myprivacy.") or "cookiewall" in path or "/privacy-gate" in path:
        return Block("consent", "Consent wall (redirected to a consent page)")
    if host.endswith("captcha-delivery.com"):
        return Block("captcha", "DataDome CAPTCHA")
    if "/errors/validatecaptcha" in path:
        return Block("captcha", "Amazon 'Robot Check' CAPTCHA")
    if "/cdn-cgi/challenge-platform/h/" in path or "__cf_chl_" in (parts.query or ""):
        return Block("challenge", "Cloudflare JS challenge")
    return None


_OVERLAY_SELECTOR = (
    '[id*="cookie" i], [class*="cookie" i], [id*="consent" i], [class*="consent" i], '
    '[id*="gdpr" i], [class*="gdpr" i], [id*="onetrust" i], [id*="didomi" i], [id*="usercentrics" i], '
    '[class*="cmp-" i], [id^="cmp" i], [id^="sp_message" i], [role="dialog"], [aria-modal="true"], dialog'
)
_CONSENT_TEXT = ("cookie", "consent", "privacy", "datenschutz", "einwilligung", "confidentialité",
                 "privacidad", "partners", "before you continue")
_HUMAN_CHECK_TEXT = ("robot", "human", "verif", "security check", "captcha", "unusual", "automated")


# What a consent wall asks the visitor to do, in the languages of the consent words above.
_CONSENT_CHOICES = ("accept", "agree", "allow", "reject", "decline", "refuse", "akzept", "zustimm", "ablehn",
                    "aceptar", "acepto", "rechazar", "accepter", "refuser", "accetta", "rifiuta", "aceitar",
                    "recusar", "accepteren", "weigeren")


def _body_stats(html: str) -> tuple[str, int]:
    """(visible body text, lower-cased; visible word count outside consent overlays/dialogs)."""
    from selectolax.lexbor import LexborHTMLParser  # lazy: only on the rare slow path

    body = LexborHTMLParser(html).body
    if body is None:
        return "", 0
    for node in body.css("script, style, noscript, template, svg"):
        node.decompose()
    text = body.text(separator=" ").lower()
    for node in body.css(_OVERLAY_SELECTOR):
        node.decompose()
    return text, len(body.text(separator=" ").split())


def detect_block(
    html: str | bytes,
    *,
    status: int | None = None,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Block | None:
    """Return why `html` is a bot wall / CAPTCHA / consent page, or None when it is real content."""
    # 1. transport-level signals
    if url:
        b = _from_url(url)
        if b is not None:
            return b
    if headers:
        mitigated = _header(headers, "cf-mitigated")
        if mitigated == "challenge":
            return Block("challenge", "Cloudflare challenge (cf-mitigated header)")
        if _header(headers, "x-sucuri-block"):
            return Block("access_denied", "Sucuri firewall: access denied")
        if _header(headers, "x-amzn-waf-action") in ("captcha", "challenge"):
            return Block("captcha", "AWS WAF CAPTCHA")
    if status == 429:
        return Block("rate_limit", "HTTP 429 Too Many Requests")

    if isinstance(html, (bytes, bytearray, memoryview)):
        html = bytes(html[: SMALL_PAGE + 1] if len(html) > SMALL_PAGE else html).decode("utf-8", "replace")
    if not html:
        if status in (403, 503):
            return Block("access_denied", f"HTTP {status} with an empty body")
        return None

    n = len(html)
    small = n <= SMALL_PAGE
    low = html.lower() if small else html[:HEAD_CHARS].lower()

    # 2a. strong vendor markers
    captcha_seen = False
    for trigger, markers in _STRONG_GROUPS:
        if trigger not in low:
            continue
        if trigger == "captcha":
            captcha_seen = True
        for marker, kind, reason in markers:
            if marker in low:
                if kind == "consent" and not small and " - " in _title(low):
                    # A results page ("query - Google Search") may carry the consent form as an overlay.
                    continue
                return Block(kind, reason)

    # 2b. the title
    title = _title(low)
    if title:
        for marker, kind, reason in _TITLE_MARKERS:
            if marker in title:
                if "cloudflare" in marker and "you have been blocked" in low:
                    return Block("access_denied", "Cloudflare: 'Sorry, you have been blocked'")
                if kind in ("access_denied", "rate_limit", "captcha") and not small:
                    # A big page titled "Access denied ..." or "captcha keychain" is likely real content.
                    break
                return Block(kind, reason)

    server = _header(headers, "server") if headers else ""
    if status in (403, 503) and small:
        if "cloudflare" in server:
            return Block("access_denied", f"Cloudflare block page (HTTP {status})")
        if "akamaighost" in server:
            return Block("access_denied", f"Akamai 'Access Denied' (HTTP {status})")
        if headers and (_header(headers, "x-datadome") or _header(headers, "x-dd-b")):
            return Block("captcha", "DataDome block page")

    if not small:
        return None

    # 3. weak signals on small pages: confirm with the amount of visible content
    weak: tuple[str, str] | None = None
    if n <= TINY_PAGE:
        for marker, kind, reason in _TINY_PAGE_MARKERS:
            if marker in low:
                weak = (kind, reason)
                break
    if weak is None and captcha_seen and n < 32_768 and any(w in low for w in _CAPTCHA_WIDGETS):
        weak = ("captcha", "CAPTCHA page (a CAPTCHA widget and no content)")
    body_at = low.find("<body")
    body = low[body_at:] if body_at != -1 else ""  # no <body> in view: a truncated head, no wall to see
    if weak is None and (
        any(w in title for w in _CONSENT_WORDS)
        or (("cookie" in body or "consent" in body)
            and ("accept" in body or "agree" in body or "akzept" in body or "zustimm" in body)
            and body.count("<a ") < FEW_LINKS)
    ):
        # A consent wall is a form and a handful of links; a real page with a cookie banner has
        # navigation, product links, a footer. Only the few-links case is worth a parse.
        weak = ("consent", "Consent / cookie wall replaces the content")
    if weak is None and status in (403, 503):
        weak = ("access_denied", f"HTTP {status} page without content")
    if weak is None:
        return None
    text, words = _body_stats(html)
    if words < TINY_CONTENT_WORDS:
        kind = weak[0]
        if kind == "consent" and not (any(w in text for w in _CONSENT_TEXT)
                                      and any(w in text for w in _CONSENT_CHOICES)):
            # A wall asks the visitor to choose; "cookie" alone (an empty page, a product named after
            # document.cookie) is not one.
            pass
        elif kind == "captcha" and not any(w in text for w in _HUMAN_CHECK_TEXT):
            pass  # a CAPTCHA widget in a short form, without any "prove you are human" text
        else:
            return Block(*weak)
    if status == 403:
        return Block("access_denied", "HTTP 403 Forbidden")
    return None


def is_blocked(html: str | bytes, **kw) -> bool:
    return detect_block(html, **kw) is not None
