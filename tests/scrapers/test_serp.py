"""SERP parsers against the labelled saved result pages (tests/data/serp-pages/labels.json)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from scrapers.serp import (
    ENGINES, CustomEngine, Engine, SerpApiEngine, SerpBlocked, best_positions, decode_html, domain_of, get_engine,
)
from scrapers.types import SerpResult

SERP_DIR = Path(__file__).resolve().parents[1] / "data" / "serp-pages"
LABELS = json.loads((SERP_DIR / "labels.json").read_text(encoding="utf-8"))
RESULT_PAGES = sorted(n for n, lab in LABELS.items() if not lab["blocked"])
BLOCKED_PAGES = sorted(n for n, lab in LABELS.items() if lab["blocked"])
FEATURES = ("ads", "shopping", "people_also_ask", "featured_snippet", "local_pack", "video", "news",
            "knowledge_panel")

_cache: dict[str, object] = {}


def _parsed(name: str):
    if name not in _cache:
        lab = LABELS[name]
        _cache[name] = get_engine(lab["engine"]).parse((SERP_DIR / name).read_bytes())
    return _cache[name]


@pytest.mark.parametrize("name", RESULT_PAGES)
def test_organic_urls_match_labels_in_order(name):
    lab = LABELS[name]
    page = _parsed(name)
    got = [r.url for r in page.results]
    assert got[: len(lab["organic"])] == lab["organic"]
    assert len(got) == lab["organic_count_on_page"]
    assert [r.position for r in page.results] == list(range(1, len(got) + 1))
    assert all(r.title for r in page.results)


@pytest.mark.parametrize(("name", "feature"), [(n, f) for n in RESULT_PAGES for f in FEATURES])
def test_serp_feature_matches_label(name, feature):
    assert (feature in _parsed(name).features) == LABELS[name]["features"][feature]


@pytest.mark.parametrize("name", [n for n in RESULT_PAGES if LABELS[n].get("featured_snippet_url")])
def test_featured_snippet_source_is_not_double_counted_unless_repeated(name):
    # 2018-2019 pages repeat the snippet's page as an ordinary result; 2023 pages do not.
    urls = [r.url for r in _parsed(name).results]
    assert (LABELS[name]["featured_snippet_url"] in urls) == (LABELS[name]["featured_snippet_url"] in LABELS[name]["organic"])


def test_organic_results_have_snippets_on_most_results():
    page = _parsed("google-en-us-2023-desktop-featured-snippet.html")
    assert sum(1 for r in page.results if len(r.snippet) > 30) >= 7


@pytest.mark.parametrize("name", BLOCKED_PAGES)
def test_google_sorry_and_challenge_pages_are_blocked_not_a_rank_loss(name):
    with pytest.raises(SerpBlocked) as exc:
        get_engine("google").parse((SERP_DIR / name).read_bytes())
    assert exc.value.block.kind in ("captcha", "challenge")


def test_consent_redirect_is_blocked():
    with pytest.raises(SerpBlocked):
        get_engine("google").parse("<html><head><title>Before you continue to Google</title></head>"
                                   "<body><form action='https://consent.google.com/save'></form></body></html>")


def test_cp1252_bytes_under_utf8_meta_are_decoded():
    raw = (SERP_DIR / "google-pt-pt-2020-nojs-coffee.html").read_bytes()
    text = decode_html(raw)
    assert "Cafés" in text and "\ufffd" not in text
    titles = " ".join(r.title for r in _parsed("google-pt-pt-2020-nojs-coffee.html").results)
    assert "Fábrica" in titles


def test_positions_continue_from_offset_and_next_page_is_found():
    page = get_engine("google").parse((SERP_DIR / "google-fr-fr-2018-desktop-foo-bar-page2.html").read_bytes(),
                                      offset=10)
    assert page.results[0].position == 11
    assert page.next_url and "start=20" in page.next_url
    assert get_engine("google").parse((SERP_DIR / "google-en-us-2023-desktop-hotels-nyc.html").read_bytes()).next_url


def test_bing_next_page_and_ddg_next_form():
    bing = get_engine("bing").parse((SERP_DIR / "bing-en-es-2021-nojs-coffee.html").read_bytes())
    assert bing.next_url and "first=5" in bing.next_url
    ddg = get_engine("duckduckgo").parse((SERP_DIR / "ddg-html-2025-foo.html").read_bytes())
    q = parse_qs(urlsplit(ddg.next_url).query)
    assert q["s"] == ["10"] and q["q"] == ["foo"]


def test_redirect_links_are_resolved_and_duplicates_keep_first_position():
    html = """<html><body><div id="rso">
    <div class="g"><a href="/url?q=https://a.example/x&amp;sa=U"><h3>A</h3></a><span>snippet a</span></div>
    <div class="g"><a href="https://b.example/"><h3>B</h3></a></div>
    <div class="g"><a href="/url?q=https://a.example/x&amp;sa=U&amp;ved=2"><h3>A again</h3></a></div>
    <div class="g"><a href="https://www.googleadservices.com/pagead/aclk?x"><h3>Ad</h3></a></div>
    </div></body></html>"""
    page = get_engine("google").parse(html)
    assert [(r.position, r.url) for r in page.results] == [(1, "https://a.example/x"), (2, "https://b.example/")]
    ddg = get_engine("duckduckgo").parse(
        '<div class="results"><div class="result"><h2 class="result__title"><a class="result__a" '
        'href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fc.example%2Fp%3Fa%3D1&amp;rut=x">C</a></h2></div>'
        '<div class="result result--ad"><h2><a href="https://duckduckgo.com/y.js?ad_provider=x">Ad</a></h2></div>'
        '</div>')
    assert [r.url for r in ddg.results] == ["https://c.example/p?a=1"]
    assert "ads" in ddg.features


def test_empty_result_page_says_no_results():
    page = get_engine("google").parse(
        "<html><body><div id='topstuff'><div class='card-section'><p>Your search - <b>qwzx</b> - did not match "
        "any documents.</p></div></div><div id='rso'></div></body></html>")
    assert page.results == () and page.no_results


@pytest.mark.parametrize(
    ("engine", "kwargs", "expect"),
    [
        ("google", dict(locale="de-DE", device="desktop", page=3, per_page=10),
         {"q": ["laufschuhe herren"], "hl": ["de"], "gl": ["de"], "start": ["20"], "num": ["10"]}),
        ("bing", dict(locale="en-GB", device="desktop", page=2, per_page=10),
         {"q": ["laufschuhe herren"], "setlang": ["en"], "cc": ["gb"], "first": ["11"]}),
        ("duckduckgo", dict(locale="fr-FR", device="desktop", page=2, per_page=10),
         {"q": ["laufschuhe herren"], "kl": ["fr-fr"], "s": ["10"]}),
    ],
)
def test_search_urls_carry_locale_and_paging(engine, kwargs, expect):
    url = get_engine(engine).search_url("laufschuhe herren", **kwargs)
    q = parse_qs(urlsplit(url).query)
    for k, v in expect.items():
        assert q[k] == v
    if engine == "duckduckgo":
        assert urlsplit(url).hostname == "html.duckduckgo.com"


def test_registry_a_new_engine_is_one_class():
    class Qwant(Engine):
        name = "qwant-test"

        def search_url(self, term, *, locale="en-US", device="desktop", page=1, per_page=10):
            return f"https://qwant.example/?q={term}"

    try:
        assert ENGINES["qwant-test"] is Qwant
        assert isinstance(get_engine("qwant-test"), Qwant)
    finally:
        ENGINES.pop("qwant-test", None)
    assert {"google", "bing", "duckduckgo", "custom", "serpapi"} <= set(ENGINES)
    with pytest.raises(KeyError):
        get_engine("altavista")


def test_custom_marketplace_engine_ranks_products():
    eng = CustomEngine("https://shop.example/search?q={term}&page={page}", result="li.product",
                       link="a.title", title="a.title", next="a.next")
    assert eng.search_url("red shoes", page=2) == "https://shop.example/search?q=red+shoes&page=2"
    html = """<ul><li class="product"><a class="img" href="/p/9"><img></a><a class="title" href="/p/1">Shoe 1</a></li>
    <li class="product"><a class="title" href="/p/2">Shoe 2</a></li><li class="product"><a class="title" href="/p/1">dup</a></li>
    </ul><a class="next" href="/search?q=red+shoes&page=3">next</a>"""
    page = eng.parse(html, base_url="https://shop.example/search?q=red+shoes&page=2", offset=24)
    assert [(r.position, r.url, r.title) for r in page.results] == [
        (25, "https://shop.example/p/1", "Shoe 1"), (26, "https://shop.example/p/2", "Shoe 2")]
    assert page.next_url == "https://shop.example/search?q=red+shoes&page=3"
    assert get_engine("custom", url_template="https://m.example/s?k={term}", result="div.r").parse("<p>x</p>").no_results


SERPAPI_JSON = {
    "search_metadata": {"status": "Success"},
    "ads": [{"position": 1, "link": "https://ad.example/"}],
    "shopping_results": [{"title": "x"}],
    "local_results": {"places": [{"title": "Cafe"}]},
    "answer_box": {"type": "organic_result", "link": "https://fs.example/"},
    "related_questions": [{"question": "why?"}],
    "inline_videos": [{"link": "https://www.youtube.com/watch?v=1"}],
    "organic_results": [
        {"position": 2, "link": "https://www.rival.example/b", "title": "B", "snippet": "sb"},
        {"position": 1, "link": "https://shop.own.example/a", "title": "A", "snippet": "sa"},
        {"position": 3, "link": "https://www.rival.example/c", "title": "C"},
    ],
    "serpapi_pagination": {"next": "https://serpapi.com/search.json?engine=google&q=x&start=10"},
}


def test_serpapi_json_is_read_and_the_key_never_leaks():
    eng = SerpApiEngine(api_key="SECRET123")
    url = eng.search_url("coffee beans", locale="en-GB", device="mobile", page=2, per_page=10)
    q = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/search.json"
    assert q["engine"] == ["google"] and q["hl"] == ["en"] and q["gl"] == ["gb"] and q["start"] == ["10"]
    assert q["device"] == ["mobile"] and q["api_key"] == ["SECRET123"]
    assert "SECRET123" not in repr(eng) and "SECRET123" not in str(eng)
    with pytest.raises(TypeError):
        pickle.dumps(eng)
    page = eng.parse(orjson.dumps(SERPAPI_JSON))
    assert [(r.position, r.url) for r in page.results] == [
        (1, "https://shop.own.example/a"), (2, "https://www.rival.example/b"), (3, "https://www.rival.example/c")]
    assert page.features == {"ads", "shopping", "local_pack", "featured_snippet", "people_also_ask", "video"}
    assert page.next_url.endswith("start=10")
    with pytest.raises(ValueError) as exc:
        eng.parse(orjson.dumps({"error": "Invalid API key: api_key=SECRET123"}))
    assert "SECRET123" not in str(exc.value)
    assert eng.parse(orjson.dumps({"error": "Google hasn't returned any results for this query."})).no_results


def test_serpapi_key_from_environment(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", "ENVKEY")
    assert "api_key=ENVKEY" in get_engine("serpapi").search_url("x")


@pytest.mark.parametrize(
    ("url", "domain"),
    [("https://www.Example.co.uk:443/x", "example.co.uk"), ("http://shop.example.com/p", "shop.example.com"),
     ("example.org", "example.org"), ("https://xn--bcher-kva.example/", "xn--bcher-kva.example")],
)
def test_domain_of_strips_www_and_port(url, domain):
    assert domain_of(url) == domain


def test_best_positions_match_domain_or_any_subdomain_only():
    results = [SerpResult(1, "https://notexample.com/", "x"), SerpResult(2, "https://shop.example.com/a", "a"),
               SerpResult(3, "https://www.example.com/b", "b"), SerpResult(4, "https://rival.net/", "r")]
    assert best_positions(results, ["example.com", "www.rival.net", "absent.org"]) == {
        "example.com": (2, "https://shop.example.com/a"), "www.rival.net": (4, "https://rival.net/"),
        "absent.org": None}


def test_best_positions_on_a_real_page():
    page = _parsed("google-en-us-2023-desktop-dell-xps-13-buy.html")
    best = best_positions(page.results, ["dell.com", "bestbuy.com", "amazon.com", "apple.com"])
    assert best["dell.com"][0] == 1 and best["bestbuy.com"][0] == 4 and best["amazon.com"][0] == 8
    assert best["apple.com"] is None
