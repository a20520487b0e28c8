"""The Chromium fetcher: system browser found first, mobile emulation, waiting for the value."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from scrapers.browser import BrowserFetcher, find_chromium, launch_args
from tests.conftest import ThreadServer

PAGE = """<html><head><meta name="viewport" content="width=device-width, initial-scale=1"></head><body><div id="out"></div><script>
setTimeout(function () {
  document.getElementById('out').textContent = 'width=' + window.innerWidth + ' ua=' + navigator.userAgent;
}, 50);
</script></body></html>"""


def html_server(html: str) -> ThreadServer:
    """A started server on 127.0.0.1 answering `/` with `html`."""
    app = web.Application()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", page)
    return ThreadServer(app).start()


@pytest.fixture
def page_server():
    server = html_server(PAGE)
    yield server
    server.stop()


def test_a_system_chromium_is_found_and_launched_with_the_quiet_flags(monkeypatch):
    monkeypatch.delenv("TRACKER_CHROMIUM", raising=False)
    assert find_chromium() is not None  # Debian's chromium here (make setup installs it)
    args = launch_args()
    for flag in ("--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"):
        assert flag in args


def _renderer_disabled_features(args: list[str]) -> set[str]:
    """The features a renderer of a Chromium launched by Playwright with `args` runs without."""
    import psutil
    from playwright.async_api import async_playwright

    async def run() -> set[str]:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=find_chromium(), args=args)
            try:
                page = await browser.new_page()
                await page.goto("about:blank")
                for proc in psutil.Process().children(recursive=True):
                    cmdline = proc.cmdline()
                    if "--type=renderer" in cmdline:
                        for arg in cmdline:
                            if arg.startswith("--disable-features="):
                                return set(arg.split("=", 1)[1].split(","))
                return set()
            finally:
                await browser.close()

    return asyncio.run(run())


@pytest.mark.slow
def test_the_spare_renderer_is_off_and_playwrights_disabled_features_still_apply():
    # Our --disable-features replaces Playwright's (Chromium keeps the last switch): ours must repeat it.
    playwright_own = _renderer_disabled_features([])
    ours = _renderer_disabled_features(launch_args())
    assert "SpareRendererForSitePerProcess" in ours
    assert playwright_own and playwright_own <= ours, f"add to PLAYWRIGHT_DISABLED_FEATURES: {playwright_own - ours}"


@pytest.mark.slow
def test_mobile_keywords_are_fetched_by_an_emulated_phone(page_server):
    async def run() -> tuple[str, str]:
        async with BrowserFetcher(concurrency=2) as browser:
            ready = lambda html: '<div id="out">width=' in html  # noqa: E731 - the script has run
            mobile = await browser.fetch(page_server.url + "/", device="mobile", ready=ready)
            desktop = await browser.fetch(page_server.url + "/", ready=ready)
            return mobile.text, desktop.text

    mobile, desktop = asyncio.run(run())
    mobile = mobile.split('<div id="out">')[1].split("</div>")[0]
    desktop = desktop.split('<div id="out">')[1].split("</div>")[0]
    mobile_width = int(mobile.split("width=")[1].split()[0])
    desktop_width = int(desktop.split("width=")[1].split()[0])
    assert mobile_width < 500 and "Mobile" in mobile
    assert desktop_width >= 1000 and "Mobile" not in desktop


# A product page that is gone, and a JS challenge (HTTP 403) that clears itself and shows the product.
GONE = "<html><head><title>Page not found</title></head><body><h1>Sorry, this page does not exist</h1></body></html>"
CHALLENGE = """<html><head><title>Just a moment...</title></head><body><div id="challenge-form">Checking your
browser</div><script>setTimeout(function () { document.body.innerHTML = '<h1>Kettle</h1><p id="pri' + 'ce">19.99</p>';
document.title = 'Kettle'; }, 1000);</script></body></html>"""

# ... and one that clears the way Cloudflare's do: a cookie, then the page loaded again (now HTTP 200).
RELOADING = """<html><head><title>Just a moment...</title></head><body><div id="challenge-form">Checking your
browser</div><script>setTimeout(function () { document.cookie = 'cleared=1; path=/'; location.reload(); }, 500);
</script></body></html>"""
PRODUCT = '<html><head><title>Kettle</title></head><body><h1>Kettle</h1><p id="price">19.99</p></body></html>'


@pytest.fixture
def error_pages():
    app = web.Application()

    async def gone(_request: web.Request) -> web.Response:
        return web.Response(text=GONE, status=404, content_type="text/html")

    async def challenge(_request: web.Request) -> web.Response:
        return web.Response(text=CHALLENGE, status=403, content_type="text/html")

    async def reloading(request: web.Request) -> web.Response:
        if request.cookies.get("cleared") == "1":
            return web.Response(text=PRODUCT, content_type="text/html")
        return web.Response(text=RELOADING, status=403, content_type="text/html", headers={"cf-mitigated": "challenge"})

    app.router.add_get("/gone", gone)
    app.router.add_get("/challenge", challenge)
    app.router.add_get("/reloading", reloading)
    server = ThreadServer(app).start()
    yield server
    server.stop()


def test_an_error_page_is_not_waited_on_but_a_js_challenge_is(error_pages):
    """A 404 never grows a price: it is read once, not polled until the timeout (a dropped product in a
    browser-fetched shop used to hold a page for the whole 30 s); a 403 JS challenge is waited on."""
    polls = {"gone": 0, "challenge": 0}

    def ready(name: str):  # type: ignore[no-untyped-def]
        def check(html: str) -> bool:
            polls[name] += 1
            return 'id="price"' in html
        return check

    async def run() -> tuple:
        async with BrowserFetcher(concurrency=2, timeout_s=30) as browser:
            gone = await browser.fetch(error_pages.url + "/gone", ready=ready("gone"))
            by_selector = await browser.fetch(error_pages.url + "/gone", wait_for="#price")
            challenge = await browser.fetch(error_pages.url + "/challenge", ready=ready("challenge"))
            reloading = await browser.fetch(error_pages.url + "/reloading", ready=ready("reloading"))
            reloading_selector = await browser.fetch(error_pages.url + "/reloading", context_key="other",
                                                     wait_for="#price")
            return gone, by_selector, challenge, reloading, reloading_selector

    polls["reloading"] = 0
    gone, by_selector, challenge, reloading, reloading_selector = asyncio.run(run())
    assert gone.status == 404 and "does not exist" in gone.text
    assert polls["gone"] == 1
    assert by_selector.status == 404 and by_selector.elapsed_s < 29  # no wait for a selector that never comes
    assert challenge.status == 403 and '<p id="price">19.99</p>' in challenge.text
    assert polls["challenge"] > 1
    # the challenge reloaded the page: what is returned is the page shown at the end, its status and headers
    for page in (reloading, reloading_selector):
        assert page.status == 200 and page.text == PRODUCT and "cf-mitigated" not in page.headers
    assert polls["reloading"] > 1
    from decimal import Decimal

    from tracker.pipeline import observe_page

    observed = observe_page(reloading)
    assert (observed.status, observed.price) == ("ok", Decimal("19.99"))
    assert observe_page(challenge).status == "blocked"  # cleared in place, but served as HTTP 403
    assert observe_page(gone).reason == "HTTP 404"


# -- scheduling pages across rivals (a stand-in browser: no Chromium) ------------------------------------------


class FakeResponse:
    status = 200
    headers = {"content-type": "text/html"}


class FakePage:
    def __init__(self, log: dict, key: str):
        self.log, self.key, self.url, self.closed, self.loads = log, key, "about:blank", False, 0
        log["pages"].append(self)

    async def goto(self, url: str, **_kw: object) -> FakeResponse:
        if "fail" in url:
            from playwright.async_api import Error as PlaywrightError
            raise PlaywrightError("net::ERR_CONNECTION_REFUSED")
        assert not self.closed
        self.url = url
        self.loads += 1
        self.log["live"][self.key] = self.log["live"].get(self.key, 0) + 1
        self.log["peak"][self.key] = max(self.log["peak"].get(self.key, 0), self.log["live"][self.key])
        self.log["order"].append(self.key)
        await asyncio.sleep(0.01)
        self.log["live"][self.key] -= 1
        return FakeResponse()

    async def content(self) -> str:
        return f"<html>{self.url}</html>"

    async def close(self) -> None:
        self.closed = True


class FakeContext:
    def __init__(self, log: dict, key: str):
        self.log, self.key = log, key

    async def new_page(self) -> FakePage:
        self.log["opened"].append(self.key)
        await asyncio.sleep(0.005)
        return FakePage(self.log, self.key)

    async def close(self) -> None:
        pass


def fake_fetcher(concurrency: int) -> tuple[BrowserFetcher, dict]:
    log: dict = {"opened": [], "order": [], "live": {}, "peak": {}, "pages": []}
    fetcher = BrowserFetcher(concurrency=concurrency)

    async def start() -> None:
        fetcher._browser = object()

    async def context(key: str, device: str = "desktop") -> FakeContext:
        return FakeContext(log, key)

    fetcher._start = start  # type: ignore[method-assign]
    fetcher._context = context  # type: ignore[method-assign]
    return fetcher, log


async def _pass(fetcher: BrowserFetcher, targets: list[tuple[str, str]]) -> list[str]:
    async def one(rival: str, url: str) -> str:
        return (await fetcher.fetch(url, context_key=rival)).text

    return await asyncio.gather(*(one(r, u) for r, u in targets))


def test_pages_are_spread_over_the_waiting_rivals_and_reused_not_reopened():
    # A pass's targets arrive grouped by rival: served first come, first served, each rival in turn
    # would take all 8 pages and open 8 new ones (64 page openings); spread, each rival keeps its page.
    fetcher, log = fake_fetcher(8)
    targets = [(f"rival-{r}", f"http://shop{r}.example/p/{i}") for r in range(8) for i in range(12)]

    async def run() -> list[str]:
        async with fetcher:
            texts = await _pass(fetcher, targets)
            assert fetcher._open_pages <= 8 and fetcher._in_use == 0
            return texts

    texts = asyncio.run(run())
    assert texts == [f"<html>{u}</html>" for _, u in targets]
    assert sorted(log["order"][:8]) == [f"rival-{r}" for r in range(8)]   # one page per rival at first
    assert len(log["opened"]) == 8 and fetcher.stats["reused"] == 96 - 8
    assert max(log["peak"].values()) == 1


def test_one_rival_uses_every_page_and_a_finished_rivals_pages_move_on():
    fetcher, log = fake_fetcher(4)
    targets = [("big", f"http://big.example/p/{i}") for i in range(30)] + \
              [("small", f"http://small.example/p/{i}") for i in range(3)]

    async def run() -> None:
        async with fetcher:
            await _pass(fetcher, targets)
            assert fetcher._open_pages <= 4

    asyncio.run(run())
    # 2 rivals waiting: 2 pages each; once "small" is done its pages go to "big" (at most 4 at a time).
    assert log["peak"]["big"] <= 4 and log["peak"]["small"] <= 2
    assert len(log["opened"]) <= 6 and fetcher.stats["evicted"] <= 2


def test_a_failed_page_is_closed_and_its_turn_given_back():
    fetcher, log = fake_fetcher(2)
    targets = [("a", "http://a.example/fail/1"), ("a", "http://a.example/p/2"), ("b", "http://b.example/fail/3"),
               ("b", "http://b.example/p/4"), ("a", "http://a.example/p/5")]

    async def run() -> list[object]:
        async with fetcher:
            out = await asyncio.gather(*(fetcher.fetch(u, context_key=r) for r, u in targets),
                                       return_exceptions=True)
            assert fetcher._in_use == 0 and fetcher._open_pages == sum(map(len, fetcher._idle_pages.values()))
            return out

    out = asyncio.run(run())
    assert [type(o).__name__ for o in out] == ["FetchError", "Page", "FetchError", "Page", "Page"]


def test_a_cancelled_fetch_gives_its_turn_back():
    fetcher, _log = fake_fetcher(1)

    async def run() -> None:
        async with fetcher:
            first = asyncio.ensure_future(fetcher.fetch("http://a.example/p/1", context_key="a"))
            queued = asyncio.ensure_future(fetcher.fetch("http://b.example/p/2", context_key="b"))
            await asyncio.sleep(0)
            queued.cancel()
            await first
            page = await asyncio.wait_for(fetcher.fetch("http://c.example/p/3", context_key="c"), 5)
            assert page.url == "http://c.example/p/3"
            assert fetcher._in_use == 0 and not any(fetcher._waiting.values())

    asyncio.run(run())


def test_a_page_is_replaced_after_its_loads_so_its_renderer_memory_goes_with_it():
    fetcher, log = fake_fetcher(2)
    fetcher.page_uses = 5
    targets = [("a", f"http://a.example/p/{i}") for i in range(20)]

    async def run() -> None:
        async with fetcher:
            await _pass(fetcher, targets)
            assert fetcher._open_pages <= 2

    asyncio.run(run())
    uses = [page.loads for page in log["pages"]]
    assert sum(uses) == 20 and max(uses) == 5 and 4 <= len(uses) <= 5
    assert fetcher.stats["retired"] >= 4


def test_a_reused_page_is_garbage_collected_every_gc_every_loads():
    fetcher, log = fake_fetcher(1)
    fetcher.page_uses, fetcher.gc_every = 100, 3
    collected: list[object] = []

    async def collect(page) -> None:  # type: ignore[no-untyped-def]
        collected.append(page)

    fetcher._collect_garbage = collect  # type: ignore[method-assign]

    async def run() -> None:
        async with fetcher:
            for i in range(10):
                await fetcher.fetch(f"http://a.example/p/{i}", context_key="a")
            await asyncio.sleep(0)

    asyncio.run(run())
    assert len(log["pages"]) == 1 and collected == [log["pages"][0]] * 3  # after loads 3, 6 and 9


GARBAGE = """<html><body><p id="price">1.00</p><script>
(function () { var junk = []; for (var i = 0; i < 300000; i++) junk.push({i: i, s: 'item ' + i}); })();
</script></body></html>"""


def test_the_garbage_collection_frees_a_real_renderers_old_objects():
    server = html_server(GARBAGE)

    async def run() -> tuple[float, float]:
        async with BrowserFetcher(concurrency=1, gc_every=0) as browser:
            await browser.fetch(server.url + "/", ready=lambda html: "price" in html)
            page = browser._idle_pages["default"][0]
            probe = await page.context.new_cdp_session(page)
            before = (await probe.send("Runtime.getHeapUsage"))["usedSize"]
            await browser._collect_garbage(page)  # (what _release schedules every gc_every loads)
            after = (await probe.send("Runtime.getHeapUsage"))["usedSize"]
            return before / 2**20, after / 2**20

    try:
        before, after = asyncio.run(run())
    finally:
        server.stop()
    assert before - after > 5, (before, after)  # MB: the page's 300,000 dropped objects


def test_a_per_domain_slot_is_taken_only_by_a_fetch_that_has_its_page():
    """Scale-out workers take a Redis domain slot around each page load (tracker.queue's
    LimitedBrowserFetcher): a fetch still queued for a page must hold none, and a slot that cannot be had
    gives the page back."""
    import contextlib

    fetcher, log = fake_fetcher(1)
    held = {"now": 0, "peak": 0}

    @contextlib.asynccontextmanager
    async def slot(url: str):  # type: ignore[no-untyped-def]
        if "noslot" in url:
            raise RuntimeError("limiter unavailable")
        held["now"] += 1
        held["peak"] = max(held["peak"], held["now"])
        assert fetcher._in_use == 1  # this fetch has the only page
        try:
            yield
        finally:
            held["now"] -= 1

    fetcher._around_load = slot  # type: ignore[method-assign]

    async def run() -> None:
        async with fetcher:
            texts = await _pass(fetcher, [("a", f"http://a.example/p/{i}") for i in range(4)])
            assert texts == [f"<html>http://a.example/p/{i}</html>" for i in range(4)]
            with pytest.raises(RuntimeError):
                await fetcher.fetch("http://a.example/noslot", context_key="a")
            assert fetcher._in_use == 0
            assert (await fetcher.fetch("http://a.example/p/9", context_key="a")).text.endswith("p/9</html>")

    asyncio.run(run())
    assert held["peak"] == 1  # four fetches queued for one page: never more than one slot held
