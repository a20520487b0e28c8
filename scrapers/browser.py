"""Getting pages through a real Chromium driven by Playwright (async).

One Chromium per process, one browser context per rival (cookies and politeness stay per shop), pages
reused from a small pool, images/fonts/media blocked, downloads refused. Instead of waiting for "load"
and then some, a fetch waits for the *value*: a configured selector, or a `ready(html)` predicate that
the caller passes (for example "the extractor finds a price"), polled until it holds or time runs out.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from scrapers.errors import FetchError
from scrapers.fetch import Page

CHROMIUM_FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--mute-audio",
]
MOBILE_DEVICE = "Pixel 7"
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome", "chrome")


def find_chromium(configured: str | Path | None = None) -> str | None:
    """The Chromium to launch: the config's, else $TRACKER_CHROMIUM, else a system one, else None.

    None means "Playwright's own browser" (installed with `playwright install chromium`).
    """
    for candidate in (configured, os.environ.get("TRACKER_CHROMIUM")):
        if candidate:
            path = Path(candidate).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise FetchError(f"Chromium not found or not executable at {path}")
            return str(path)
    for name in SYSTEM_CHROMIUMS:
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/snap/bin/chromium",
                 "/Applications/Chromium.app/Contents/MacOS/Chromium",
                 "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def launch_args() -> list[str]:
    args = list(CHROMIUM_FLAGS)
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    # Chromium refuses to start as root with its sandbox; in a container (where the sandbox's namespaces
    # are usually unavailable) TRACKER_CHROMIUM_NO_SANDBOX=1 turns it off: the container is the boundary.
    if as_root or os.environ.get("TRACKER_CHROMIUM_NO_SANDBOX") == "1":
        args.insert(0, "--no-sandbox")
    return args


class BrowserFetcher:
    """Async Chromium fetcher. Use as `async with BrowserFetcher(...) as b: page = await b.fetch(url)`.

    The browser starts lazily on the first fetch, so a pass that never needs it never launches it.
    """

    kind = "browser"

    def __init__(self, *, executable: str | Path | None = None, concurrency: int = 4,
                 block: tuple[str, ...] = ("image", "font", "media"), timeout_s: float = 30,
                 headless: bool = True, user_agent: str | None = None):
        self.executable = executable
        self.concurrency = concurrency
        self.block = frozenset(block)
        self.timeout_ms = timeout_s * 1000
        self.headless = headless
        self.user_agent = user_agent
        self._pw = None
        self._browser = None
        self._contexts: dict[str, object] = {}
        self._idle_pages: dict[str, list[object]] = {}
        # Pages open across all contexts: at most `concurrency` (one context per rival must not mean
        # `concurrency` pages per rival: 8 rivals x 8 pages was 64 renderers and ~15 GB of summed RSS).
        self._open_pages = 0
        self._parking: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._start_lock = asyncio.Lock()
        self.launched = False

    async def __aenter__(self) -> "BrowserFetcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._parking):
            task.cancel()
        self._parking.clear()
        for ctx in self._contexts.values():
            try:
                await ctx.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        self._contexts.clear()
        self._idle_pages.clear()
        self._open_pages = 0
        if self._browser is not None:
            try:
                await self._browser.close()
            except Exception:  # noqa: BLE001
                pass
            self._browser = None
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None

    async def _start(self) -> None:
        async with self._start_lock:
            if self._browser is not None:
                return
            from playwright.async_api import Error as PlaywrightError
            from playwright.async_api import async_playwright

            executable = find_chromium(self.executable)
            self._pw = await async_playwright().start()
            try:
                self._browser = await self._pw.chromium.launch(
                    executable_path=executable, headless=self.headless, args=launch_args())
            except PlaywrightError as exc:
                await self._pw.stop()
                self._pw = None
                hint = ("install one: `apt-get install chromium` (Debian/Ubuntu) or "
                        "`playwright install chromium`, or set TRACKER_CHROMIUM")
                raise FetchError(f"cannot start Chromium ({executable or 'Playwright bundled'}): "
                                 f"{str(exc).splitlines()[0]}; {hint}") from None
            self.launched = True

    async def _context(self, key: str, device: str = "desktop"):  # type: ignore[no-untyped-def]
        ctx = self._contexts.get(key)
        if ctx is None:
            assert self._browser is not None and self._pw is not None
            options: dict = {"user_agent": self.user_agent}
            if device == "mobile":
                # Playwright's descriptor of a current Android phone: viewport, touch, mobile user agent.
                options = dict(self._pw.devices[MOBILE_DEVICE])
                options.pop("default_browser_type", None)
            ctx = await self._browser.new_context(
                accept_downloads=False, java_script_enabled=True, service_workers="block", **options)
            ctx.set_default_timeout(self.timeout_ms)
            if self.block:
                blocked = self.block

                async def route(route):  # type: ignore[no-untyped-def]
                    if route.request.resource_type in blocked:
                        await route.abort()
                    else:
                        await route.continue_()

                await ctx.route("**/*", route)
            self._contexts[key] = ctx
            self._idle_pages[key] = []
        return ctx

    async def fetch(self, url: str, *, context_key: str = "default", wait_for: str | None = None,
                    ready: Callable[[str], bool] | None = None, poll_s: float = 0.05,
                    scroll: bool = False, max_scrolls: int = 20, device: str = "desktop") -> Page:
        """Load `url` and return the rendered HTML once the wanted value is there (or time is up).

        `device="mobile"` emulates a phone (its own context: viewport, touch, mobile user agent)."""
        if device != "desktop":
            context_key = f"{context_key}|{device}"
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        await self._start()
        started = time.monotonic()
        async with self._slots:
            # The time budget starts with the slot: a fetch queued behind others (hundreds of targets,
            # `concurrency` pages) must still get its full timeout to wait for the value.
            slot_started = time.monotonic()
            ctx = await self._context(context_key, device)
            idle = self._idle_pages[context_key]
            if idle:
                page = idle.pop()
            else:
                await self._evict_idle_page()
                self._open_pages += 1
                try:
                    page = await ctx.new_page()  # type: ignore[attr-defined]
                except BaseException:
                    self._open_pages -= 1
                    raise
            healthy = True
            try:
                try:
                    response = await page.goto(url, wait_until="domcontentloaded", timeout=self.timeout_ms)
                except PlaywrightTimeout:
                    raise FetchError(f"timed out after {self.timeout_ms / 1000:.0f}s loading the page",
                                     retryable=True) from None
                except PlaywrightError as exc:
                    message = str(exc).splitlines()[0]
                    if "Download is starting" in message:
                        raise FetchError("the URL is a file download, not a page") from None
                    raise FetchError(f"browser could not load the page: {message}", retryable=True) from None
                status = response.status if response else 0
                # `headers` needs no round trip to the browser (all_headers() does one per page); it
                # lacks only the security-related ones (cookies), which detect_block does not read.
                headers = response.headers if response else {}
                deadline = slot_started + self.timeout_ms / 1000
                if wait_for:
                    try:
                        await page.wait_for_selector(wait_for, state="attached",
                                                     timeout=max(1.0, (deadline - time.monotonic()) * 1000))
                    except PlaywrightTimeout:
                        pass  # the caller's extraction will say "unextractable": the page is kept
                if scroll:
                    await self._scroll_to_end(page, max_scrolls)
                html = await page.content()
                if ready is not None and not wait_for:
                    while not ready(html) and time.monotonic() < deadline:
                        await asyncio.sleep(poll_s)
                        html = await page.content()
                return Page(url=url, final_url=page.url, status=status, headers=headers, text=html,
                            via="browser", elapsed_s=time.monotonic() - started)
            except FetchError:
                healthy = False
                raise
            finally:
                if healthy and self._open_pages <= self.concurrency:
                    # Straight back to the pool: the next fetch navigates it anyway. A page left idle
                    # is parked on about:blank shortly after, so a rival's scripts do not run on.
                    idle.append(page)
                    task = asyncio.get_running_loop().create_task(self._park(context_key, page))
                    self._parking.add(task)
                    task.add_done_callback(self._parking.discard)
                else:
                    self._open_pages -= 1
                    await _close_quietly(page)

    async def _evict_idle_page(self) -> None:
        """Make room for a new page: close an idle page of another context when the pool is full."""
        if self._open_pages < self.concurrency:
            return
        for pages in self._idle_pages.values():
            if pages:
                page = pages.pop(0)
                self._open_pages -= 1
                await _close_quietly(page)
                return

    async def _park(self, key: str, page, grace_s: float = 1.0) -> None:  # type: ignore[no-untyped-def]
        """Navigate a page that stayed idle for `grace_s` to about:blank (out of the pool meanwhile)."""
        from playwright.async_api import Error as PlaywrightError

        await asyncio.sleep(grace_s)
        idle = self._idle_pages.get(key)
        if idle is None or page not in idle:
            return  # reused (or closed) meanwhile
        idle.remove(page)
        try:
            await page.goto("about:blank")
        except PlaywrightError:
            self._open_pages -= 1
            await _close_quietly(page)
            return
        if self._idle_pages.get(key) is idle:
            idle.append(page)

    @staticmethod
    async def _scroll_to_end(page, max_scrolls: int) -> None:  # type: ignore[no-untyped-def]
        """Infinite scroll: scroll until the page stops growing, at most `max_scrolls` times."""
        last = -1
        for _ in range(max_scrolls):
            height = await page.evaluate("document.body ? document.body.scrollHeight : 0")
            if height == last:
                break
            last = height
            await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            try:
                await page.wait_for_function(f"document.body.scrollHeight > {height}", timeout=1500)
            except Exception:  # noqa: BLE001 - no growth within the wait: the end
                break


async def _close_quietly(page) -> None:  # type: ignore[no-untyped-def]
    try:
        await page.close()
    except Exception:  # noqa: BLE001
        pass
