"""Bot-wall detection: real blocked pages are caught, real content pages (products, SERPs) are not."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from scrapers.blocked import detect_block, is_blocked

DATA = Path(__file__).resolve().parents[1] / "data"
SERP_DIR = DATA / "serp-pages"
LABELS = json.loads((SERP_DIR / "labels.json").read_text(encoding="utf-8"))
BLOCKED = sorted(name for name, lab in LABELS.items() if lab["blocked"])
RESULT_PAGES = sorted(name for name, lab in LABELS.items() if not lab["blocked"])
PRODUCT_PAGES = sorted((DATA / "product-pages" / "html").glob("*.html.gz"))


def _read(name: str) -> str:
    return (SERP_DIR / name).read_bytes().decode("utf-8", "replace")


@pytest.mark.parametrize("name", BLOCKED)
def test_real_blocked_page_is_detected_with_its_kind(name):
    block = detect_block(_read(name))
    assert block is not None, name
    assert block.kind == LABELS[name]["kind"]
    assert block.reason


def test_google_sorry_page_is_blocked_not_a_rank_loss():
    block = detect_block(_read("blocked-google-sorry-2020.html"), status=429)
    assert block is not None and block.kind in ("captcha", "rate_limit")
    block = detect_block(_read("blocked-google-sorry-fr-2018.html"), status=200)
    assert block is not None and "unusual traffic" in block.reason


def test_blocked_page_given_as_bytes_is_detected():
    assert detect_block((SERP_DIR / "blocked-cloudflare-js-challenge-2020.html").read_bytes()).kind == "challenge"


@pytest.mark.parametrize("name", RESULT_PAGES)
def test_real_result_page_is_not_blocked(name):
    assert detect_block(_read(name), status=200) is None


@pytest.mark.parametrize("path", PRODUCT_PAGES, ids=lambda p: p.name.split(".")[0][:40])
def test_real_product_page_is_not_blocked(path):
    html = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    assert detect_block(html) is None
    assert detect_block(html, status=200, headers={"Server": "cloudflare"}) is None
    # The start of the page alone (what a truncated read would give) is not a wall either.
    assert detect_block(html[:10_240]) is None


_PRODUCT_BODY = """
<header><nav>{nav}</nav></header>
<main><h1>Acme Espresso Machine X200</h1>
<p class="price">€ 249,00</p><p>In stock. Ships in 24 hours. Free returns within 30 days.</p>
<p>The X200 brews barista-quality espresso with a 15-bar pump, a steam wand for milk foam and a
removable 1.8 litre water tank. Stainless steel body, cup warmer, two filters included.</p>
<ul><li>15 bar pump</li><li>1450 W</li><li>Water tank 1.8 l</li><li>Weight 4.2 kg</li></ul>
</main>
"""
_NAV = "".join(f'<a href="/c/{i}">Category {i}</a>' for i in range(20))


def _pad(html: str, size: int = 10_240) -> str:
    filler = "<p>" + " ".join(["Lorem ipsum dolor sit amet consectetur."] * 4) + "</p>\n"
    body_end = html.index("</body>")
    while len(html) < size:
        html = html[:body_end] + filler + html[body_end:]
    return html


def test_product_page_with_recaptcha_newsletter_form_is_not_blocked():
    html = _pad(f"""<!doctype html><html><head><title>Acme Espresso Machine X200 | Shop</title>
<script src="https://www.google.com/recaptcha/api.js" async defer></script></head><body>
{_PRODUCT_BODY.format(nav=_NAV)}
<footer><form action="/newsletter" method="post"><input name="email">
<div class="g-recaptcha" data-sitekey="6LfwuyUTAAAAAOAmoS0fdqijC2PbbdH4kjq62Y1b"></div>
<button>Subscribe</button></form><p>Protected by reCAPTCHA, the Google Privacy Policy applies.</p></footer>
</body></html>""")
    assert detect_block(html, status=200) is None


def test_small_product_page_with_recaptcha_and_few_links_is_not_blocked():
    html = f"""<html><head><title>X200</title><script src="https://www.google.com/recaptcha/api.js"></script>
</head><body>{_PRODUCT_BODY.format(nav='')}<div class="g-recaptcha" data-sitekey="k"></div></body></html>"""
    assert detect_block(html) is None


def test_product_page_with_cookie_banner_overlay_is_not_blocked():
    html = _pad(f"""<!doctype html><html><head><title>Acme Espresso Machine X200</title></head><body>
<div id="onetrust-banner-sdk" role="dialog" aria-modal="true"><p>We use cookies to improve your experience.
By clicking "Accept all cookies" you agree to the storing of cookies on your device.</p>
<button id="onetrust-accept-btn-handler">Accept all cookies</button><button>Cookie settings</button></div>
{_PRODUCT_BODY.format(nav='<a href="/">Home</a>')}
</body></html>""")
    assert detect_block(html, status=200) is None


def test_cookie_wall_that_replaces_the_content_is_consent():
    html = """<!doctype html><html><head><title>Cookies on Example News</title></head><body>
<div class="cookiewall"><h1>We value your privacy</h1><p>We and our partners use cookies.
To continue to Example News you must accept cookies.</p><form method="post" action="/consent">
<button name="accept">Accept and continue</button></form><a href="/privacy">Privacy policy</a></div>
</body></html>"""
    block = detect_block(html, status=200)
    assert block is not None and block.kind == "consent"


def test_google_before_you_continue_consent_page_is_consent():
    html = """<html lang="en"><head><title>Before you continue to Google Search</title></head><body>
<form action="https://consent.google.com/save" method="POST"><input type="hidden" name="set_eom" value="true">
<button>Reject all</button><button>Accept all</button></form></body></html>"""
    assert detect_block(html).kind == "consent"
    assert detect_block("<html></html>", url="https://consent.google.com/ml?continue=https://www.google.com/search?q=x").kind == "consent"


@pytest.mark.parametrize(
    ("html", "kwargs", "kind"),
    [
        # Amazon robot check
        ("<html><head><title>Robot Check</title></head><body><form action=\"/errors/validateCaptcha\">"
         "<h4>Type the characters you see in this image:</h4></form></body></html>", {}, "captcha"),
        # DataDome
        ("<html><head><title>example.com</title></head><body><script>var dd={'rt':'c','cid':'AHrl',"
         "'host':'geo.captcha-delivery.com'}</script><script src=\"https://ct.captcha-delivery.com/c.js\">"
         "</script></body></html>", {"status": 403}, "captcha"),
        # PerimeterX
        ("<html><head><title>Access to this page has been denied</title></head><body>"
         "<div id=\"px-captcha\"></div><p>Press &amp; Hold to confirm you are a human</p></body></html>",
         {"status": 403}, "captcha"),
        # Akamai
        ("<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY><H1>Access Denied</H1>You don't have permission "
         "to access \"http://www.shop.example/\" on this server.<P>Reference #18.1234.5678<P>"
         "https://errors.edgesuite.net/18.1234</BODY></HTML>", {"status": 403}, "access_denied"),
        # Imperva / Incapsula
        ("<html><head><META NAME=\"robots\" CONTENT=\"noindex,nofollow\"><script src=\"/_Incapsula_Resource?"
         "SWJIYLWA=5074a744e2e3d891814e9a2dace20bd4\"></script></head><body><iframe id=\"main-iframe\" "
         "src=\"/_Incapsula_Resource?CWUDNSAI=9\">Request unsuccessful. Incapsula incident ID: 1-2</iframe>"
         "</body></html>", {}, "access_denied"),
        # Cloudflare 1020 block
        ("<html><head><title>Attention Required! | Cloudflare</title></head><body><div id=\"cf-error-details\">"
         "<h1>Sorry, you have been blocked</h1></div></body></html>", {"status": 403}, "access_denied"),
        # Rate limits
        ("<html><body>slow down</body></html>", {"status": 429}, "rate_limit"),
        ("<html><head><title>429 Too Many Requests</title></head><body><h1>Too Many Requests</h1></body></html>",
         {}, "rate_limit"),
        # bare WAF 403
        ("<html><head><title>403 Forbidden</title></head><body><h1>Request blocked</h1></body></html>",
         {"status": 403}, "access_denied"),
        # DuckDuckGo anomaly
        ("<html><body><div class=\"anomaly-modal__title\">Unfortunately, bots use DuckDuckGo too.</div>"
         "<form id=\"challenge-form\" action=\"//duckduckgo.com/anomaly.js?sv=html\"></form></body></html>",
         {}, "captcha"),
    ],
    ids=["amazon", "datadome", "perimeterx", "akamai", "incapsula", "cloudflare-1020", "429", "429-page",
         "403-waf", "ddg-anomaly"],
)
def test_vendor_wall_is_detected(html, kwargs, kind):
    assert detect_block(html, **kwargs) == detect_block(html.encode(), **kwargs)
    block = detect_block(html, **kwargs)
    assert block is not None and block.kind == kind


def test_generic_captcha_page_with_nothing_else_is_captcha():
    html = """<html><head><title>example.com</title></head><body><h2>Please verify you are a human</h2>
<form method="post"><div class="h-captcha" data-sitekey="x"></div></form></body></html>"""
    assert detect_block(html).kind == "captcha"


def test_challenge_header_and_urls_are_enough():
    assert detect_block("<html></html>", headers={"cf-mitigated": "challenge"}).kind == "challenge"
    assert detect_block("", url="https://www.google.com/sorry/index?continue=x").kind == "captcha"
    assert not is_blocked("<html><head><title>Shop</title></head><body>ok</body></html>",
                          url="https://shop.example/sorry-we-are-closed")


def test_product_named_after_document_cookie_is_not_a_consent_wall():
    name = "Mug &lt;script&gt;alert(document.cookie)&lt;/script&gt;"
    page = (f"<html><head><title>{name}</title></head><body><h1>{name}</h1>"
            "<span class=price>9.99 €</span><button>Add to cart</button></body></html>")
    assert detect_block(page) is None


def test_small_page_asking_to_accept_cookies_is_a_consent_wall():
    page = ("<html><head><title>Cookie settings</title></head><body><h2>We value your privacy</h2>"
            "<p>We use cookies.</p><button>Accept all</button><button>Reject all</button></body></html>")
    assert detect_block(page).kind == "consent"
