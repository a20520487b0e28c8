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


@pytest.fixture
def page_server():
    app = web.Application()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", page)
    server = ThreadServer(app).start()
    yield server
    server.stop()


def test_a_system_chromium_is_found_and_launched_with_the_quiet_flags(monkeypatch):
    monkeypatch.delenv("TRACKER_CHROMIUM", raising=False)
    assert find_chromium() is not None  # Debian's chromium here (make setup installs it)
    args = launch_args()
    for flag in ("--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"):
        assert flag in args


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
