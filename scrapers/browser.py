"""Getting pages through a real Chromium driven by Playwright (async).

One Chromium per process, one browser context per rival (cookies and politeness stay per shop), pages
reused from a small pool, images/fonts/media blocked, downloads refused. Instead of waiting for "load"
and then some, a fetch waits for the *value*: a configured selector, or a `ready(html)` predicate that
the caller passes (for example "the extractor finds a price"), polled until it holds or time runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Coroutine
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
# Chromium keeps a warm "spare" renderer process for the browser context that navigated last. With one
# context per rival and fetches of several rivals interleaved, every navigation found the spare made
# for another context: it was thrown away and a new one forked (122 renderer processes for 200 pages
# instead of 16, ~6 % more CPU per page). A --disable-features switch replaces Playwright's own list
# rather than adding to it (Chromium keeps the last one), so Playwright's (1.65) is repeated here; a
# test checks that it still covers what Playwright disables.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AimEnabled", "AvoidCorsURLLoaderRestartOnRedirect", "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose", "HttpsFirstBalancedModeAutoEnable", "HttpsUpgrades", "LensOverlay",
    "MediaRouter", "NetworkTimeServiceQuerying", "OptimizationHints", "PaintHolding", "PreconnectToSearch",
    "TcpPortRandomizationWin", "ThirdPartyStoragePartitioning", "msEdgeUpdateLaunchServicesPreferredVersion",
    "msForceBrowserSignIn")
DISABLED_FEATURES = (*PLAYWRIGHT_DISABLED_FEATURES, "SpareRendererForSitePerProcess")
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
    args = [*CHROMIUM_FLAGS, "--disable-features=" + ",".join(DISABLED_FEATURES)]
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    # Chromium refuses to start as root with its sandbox; in a container (where the sandbox's namespaces
    # are usually unavailable) TRACKER_CHROMIUM_NO_SANDBOX=1 turns it off: the container is the boundary.
    if as_root or os.environ.get("TRACKER_CHROMIUM_NO_SANDBOX") == "1":
        args.insert(0, "--no-sandbox")
    return args


class _Grant:
    """A fetch's turn: the page to use (an idle one of its context), or leave to open one (after closing
    `evict`, an idle page of another context, when the pool is full)."""

    __slots__ = ("page", "evict")

    def __init__(self, page: object | None = None, evict: object | None = None):
        self.page = page
        self.evict = evict


class BrowserFetcher:
    """Async Chromium fetcher. Use as `async with BrowserFetcher(...) as b: page = await b.fetch(url)`.

    The browser starts lazily on the first fetch, so a pass that never needs it never launches it.

    Fetches are scheduled across contexts (rivals) rather than first come, first served: at most
    `concurrency` pages are open in all, a free turn goes first to a waiting fetch whose context has an
    idle page (a reused page navigates within its shop: no new page, no new renderer process), and a new
    page goes to the waiting context with the fewest pages. A pass's targets arrive grouped by rival;
    served in arrival order, every rival would take all the pages in turn and open `concurrency` new
    ones (8 rivals x 8 pages = 64 page creations per pass). Spread this way, each waiting rival holds
    about concurrency / (rivals waiting) pages and keeps them until its queue is empty, which is also
    gentler on each shop.
    """

    kind = "browser"

    def __init__(self, *, executable: str | Path | None = None, concurrency: int = 4,
                 block: tuple[str, ...] = ("image", "font", "media"), timeout_s: float = 30,
                 headless: bool = True, user_agent: str | None = None, page_uses: int = 30,
                 gc_every: int = 2):
        self.executable = executable
        self.concurrency = max(1, concurrency)
        self.block = frozenset(block)
        self.timeout_ms = timeout_s * 1000
        self.headless = headless
        self.user_agent = user_agent
        # A page (and with it its renderer process) is replaced after `page_uses` loads. Navigating
        # within one shop keeps the renderer, whose V8 heap then grows by the old documents until a
        # major GC that a busy renderer rarely gets: ~2.4 MB per load here, 8 pages x 37 loads was
        # ~1 GB of renderers. A new page is a new process, and the old one's memory goes at once; the
        # garbage collection below (every `gc_every` loads) keeps a page small for longer. 600 pages over
        # 8 pages: 12 loads and no collection, peak PSS 1.46-1.49 GB; 30 loads and a collection every 2,
        # 1.29-1.31 GB in the same time.
        self.page_uses = max(1, page_uses)
        # Every `gc_every` loads a page's renderer gets a full V8 garbage collection (through CDP, which
        # the page's scripts cannot see), in the background while the page is reused (0: never).
        self.gc_every = max(0, gc_every)
        self._pw = None
        self._browser = None
        self._started: asyncio.Future[None] | None = None
        self._contexts: dict[str, object] = {}
        self._context_tasks: dict[str, asyncio.Future[object]] = {}
        self._idle_pages: dict[str, list[object]] = {}
        # Pages open across all contexts: at most `concurrency` (one context per rival must not mean
        # `concurrency` pages per rival: 8 rivals x 8 pages was 64 renderers and ~15 GB of summed RSS).
        self._open_pages = 0
        self._pages_of: dict[str, int] = {}     # open pages per context (in use, idle or parking)
        self._busy: dict[str, int] = {}         # fetches holding a turn, per context
        self._in_use = 0
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[_Grant]]]] = {}
        self._arrivals = itertools.count()
        self._dispatch_pending = False
        self._parking: set[asyncio.Task] = set()
        self._uses: dict[object, int] = {}
        self.launched = False
        # What the pool did (for tests and benchmarks): pages opened, reused, closed to make room for
        # another context's, and retired after `page_uses` loads.
        self.stats = {"opened": 0, "reused": 0, "evicted": 0, "retired": 0}

    async def __aenter__(self) -> "BrowserFetcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._parking):
            task.cancel()
        self._parking.clear()
        for queue in self._waiting.values():
            for _, fut in queue:
                if not fut.done():
                    fut.cancel()
        self._waiting.clear()
        for ctx in self._contexts.values():
            try:
                await ctx.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        self._contexts.clear()
        self._context_tasks.clear()
        self._idle_pages.clear()
        self._uses.clear()
        self._pages_of.clear()
        self._busy.clear()
        self._open_pages = 0
        self._in_use = 0
        if self._browser is not None:
            try:
                await self._browser.close()
            except Exception:  # noqa: BLE001
                pass
            self._browser = None
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None
        self._started = None

    async def _start(self) -> None:
        # Every fetch of a pass arrives before Chromium is up: they all wait for the one launch and wake
        # together (a lock would let them through one per event-loop turn, and the first few would take
        # every page before the other rivals' fetches are even queued).
        if self._browser is not None:
            return
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._launch()
            except BaseException as exc:
                started, self._started = self._started, None
                started.set_exception(exc if isinstance(exc, Exception) else FetchError("launch cancelled"))
                started.exception()  # retrieved: the waiters get it, this fetch raises it
                raise
            self._started.set_result(None)
        else:
            await asyncio.shield(self._started)

    async def _launch(self) -> None:
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
        if ctx is not None:
            return ctx
        # Fetches of one rival may ask for its context at the same time: it is created once.
        creating = self._context_tasks.get(key)
        if creating is None:
            creating = asyncio.ensure_future(self._new_context(key, device))
            self._context_tasks[key] = creating
            creating.add_done_callback(lambda f, key=key: self._context_tasks.pop(key, None)
                                       if f.cancelled() or f.exception() else None)
        return await asyncio.shield(creating)

    async def _new_context(self, key: str, device: str):  # type: ignore[no-untyped-def]
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
        return ctx

    # -- scheduling the pages -------------------------------------------------------------------------------

    async def _acquire(self, key: str) -> _Grant:
        """Wait for this context's turn (see the class docstring for who goes first)."""
        fut: asyncio.Future[_Grant] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append((next(self._arrivals), fut))
        # Decided on the next loop turn, so fetches arriving together are all seen before any gets a page.
        self._schedule_dispatch()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._give_back(key, fut.result())  # granted just as the fetch was cancelled
            else:
                queue = self._waiting.get(key)
                if queue is not None:
                    for item in queue:
                        if item[1] is fut:
                            queue.remove(item)
                            break
            raise

    def _give_back(self, key: str, grant: _Grant) -> None:
        if self._busy.get(key, 0) <= 0:
            return  # the fetcher was closed meanwhile
        self._in_use -= 1
        self._busy[key] -= 1
        if grant.page is not None:
            self._idle_pages.setdefault(key, []).append(grant.page)
        else:
            self._pages_of[key] -= 1
            self._open_pages -= 1
        if grant.evict is not None:
            self._close_later(grant.evict)
        self._schedule_dispatch()

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_pending:
            self._dispatch_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_pending = False
        while self._in_use < self.concurrency:
            waiting = [k for k, q in self._waiting.items() if q]
            if not waiting:
                return
            # The fair share of a context: pages / contexts with work (waiting or running).
            active = len(set(waiting) | {k for k, n in self._busy.items() if n})
            share = max(1, self.concurrency // active)
            starved = [k for k in waiting if self._pages_of.get(k, 0) < share]
            # 1. A waiting context with an idle page reuses it, unless it holds more than its share
            #    while another waiting context holds less (that page then moves over: step 2).
            reuse = [k for k in waiting if self._idle_pages.get(k)
                     and not (self._pages_of[k] > share and any(s != k for s in starved))]
            if reuse:
                key = min(reuse, key=lambda k: self._waiting[k][0][0])
                self._grant(key, _Grant(page=self._idle_pages[key].pop()))
                self.stats["reused"] += 1
                continue
            # 2. A new page for the waiting context with the fewest pages (oldest waiter on a tie),
            #    closing an idle page when the pool is full: one of a context with nothing waiting if
            #    possible, else one of a context above its share.
            key = min(waiting, key=lambda k: (self._pages_of.get(k, 0), self._waiting[k][0][0]))
            evict = None
            if self._open_pages >= self.concurrency:
                victim = self._victim(waiting, share, key)
                if victim is None:
                    return  # every page is in use or being parked: a release dispatches again
                evict = self._idle_pages[victim].pop(0)
                self._uses.pop(evict, None)
                self._pages_of[victim] -= 1
                self._open_pages -= 1
                self.stats["evicted"] += 1
            self._pages_of[key] = self._pages_of.get(key, 0) + 1
            self._open_pages += 1
            self._grant(key, _Grant(evict=evict))

    def _victim(self, waiting: list[str], share: int, taker: str) -> str | None:
        idle = [k for k, pages in self._idle_pages.items() if pages and k != taker]
        quiet = [k for k in idle if k not in waiting]
        if quiet:
            return quiet[0]
        crowded = [k for k in idle if self._pages_of[k] > share]
        return max(crowded, key=lambda k: self._pages_of[k]) if crowded else None

    def _grant(self, key: str, grant: _Grant) -> None:
        _, fut = self._waiting[key].popleft()
        self._in_use += 1
        self._busy[key] = self._busy.get(key, 0) + 1
        fut.set_result(grant)

    def _release(self, key: str, page: object | None, healthy: bool) -> None:
        """The fetch is done with its turn: the page goes back to its context's idle pages (or is closed)."""
        if self._busy.get(key, 0) <= 0:
            return  # the fetcher was closed meanwhile (its pages with it)
        self._in_use -= 1
        self._busy[key] -= 1
        uses = self._uses.pop(page, 0) + 1 if page is not None else 0
        if page is not None and healthy and key in self._idle_pages and uses < self.page_uses:
            self._uses[page] = uses
            # Straight back to the pool: the next fetch navigates it anyway. A page left idle is parked
            # on about:blank shortly after, so a rival's scripts do not run on.
            self._idle_pages[key].append(page)
            self._background(self._park(key, page))
            if self.gc_every and uses % self.gc_every == 0:
                self._background(self._collect_garbage(page))
        else:
            self._forget_page(key)
            if page is not None:
                self._close_later(page)
                if healthy:
                    self.stats["retired"] += 1
        self._schedule_dispatch()

    def _forget_page(self, key: str) -> None:
        if self._pages_of.get(key, 0) > 0:
            self._pages_of[key] -= 1
            self._open_pages -= 1

    def _close_later(self, page: object) -> None:
        self._background(_close_quietly(page))

    def _background(self, coro: Coroutine[object, object, None]) -> None:
        """Run `coro` as a task that close() cancels if it still runs."""
        task = asyncio.get_running_loop().create_task(coro)
        self._parking.add(task)
        task.add_done_callback(self._parking.discard)

    async def _collect_garbage(self, page) -> None:  # type: ignore[no-untyped-def]
        # A session each time (detached after): none is left behind by a page closed meanwhile.
        try:
            session = await page.context.new_cdp_session(page)
            try:
                await session.send("HeapProfiler.collectGarbage")
            finally:
                await session.detach()
        except Exception:  # noqa: BLE001 - the page was closed or navigated away meanwhile: nothing to do
            pass

    # -- a fetch --------------------------------------------------------------------------------------------

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
        key = context_key
        self._idle_pages.setdefault(key, [])
        grant = await self._acquire(key)
        page = grant.page
        healthy = True
        listener = None  # of the page's responses, while a challenge may reload it
        reloads: list = []
        try:
            async with self._around_load(url):
                # The time budget starts with the load: a fetch that queued for a page or a domain slot
                # still gets its full timeout to wait for the value.
                load_started = time.monotonic()
                if page is None:
                    if grant.evict is not None:
                        await _close_quietly(grant.evict)
                    ctx = await self._context(key, device)
                    page = await ctx.new_page()  # type: ignore[attr-defined]
                    self.stats["opened"] += 1
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
                deadline = load_started + self.timeout_ms / 1000
                # An error page (gone, denied, failing) grows no value: it is neither waited on nor scrolled.
                worth_waiting = True
                if status >= 400:
                    # A JS challenge that clears loads the page again: the status and headers returned are
                    # then those of the document shown at the end.
                    def reloaded(r) -> None:  # type: ignore[no-untyped-def]
                        try:
                            if r.request.is_navigation_request() and r.frame == page.main_frame:
                                reloads.append(r)
                        except PlaywrightError:  # (a response without a frame: not the page's document)
                            pass

                    listener = reloaded
                    page.on("response", listener)
                    worth_waiting = _may_clear(await _content(page, deadline), status, page.url, headers)
                    if not worth_waiting:
                        deadline = load_started
                if wait_for and worth_waiting:
                    try:
                        await page.wait_for_selector(wait_for, state="attached",
                                                     timeout=max(1.0, (deadline - time.monotonic()) * 1000))
                    except PlaywrightTimeout:
                        pass  # the caller's extraction will say "unextractable": the page is kept
                if scroll and worth_waiting:
                    await self._scroll_to_end(page, max_scrolls)
                html = await _content(page, deadline)
                if ready is not None and not wait_for:
                    while not ready(html) and time.monotonic() < deadline:
                        await asyncio.sleep(poll_s)
                        html = await _content(page, deadline)
                if reloads:
                    status, headers = reloads[-1].status, reloads[-1].headers
                return Page(url=url, final_url=page.url, status=status, headers=headers, text=html,
                            via="browser", elapsed_s=time.monotonic() - started)
        except BaseException:
            healthy = False
            raise
        finally:
            if listener is not None:
                page.remove_listener("response", listener)
            self._release(key, page, healthy)

    def _around_load(self, url: str) -> contextlib.AbstractAsyncContextManager[object]:
        """What a page load of `url` runs inside, once it has its page (a subclass takes a per-domain
        slot shared across machines here, so a fetch queued for a page holds no slot meanwhile)."""
        return contextlib.nullcontext()

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
            if self._idle_pages.get(key) is idle:
                self._forget_page(key)
            await _close_quietly(page)
            self._schedule_dispatch()
            return
        if self._idle_pages.get(key) is idle:
            idle.append(page)
            self._schedule_dispatch()

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


async def _content(page, deadline: float) -> str:  # type: ignore[no-untyped-def]
    """The page's HTML; while it is navigating (a challenge reloading it) there is none: try again until
    `deadline`."""
    from playwright.async_api import Error as PlaywrightError

    while True:
        try:
            return await page.content()
        except PlaywrightError as exc:
            if time.monotonic() >= deadline or page.is_closed():
                message = str(exc).splitlines()[0]
                raise FetchError(f"browser could not read the page: {message}", retryable=True) from None
            await asyncio.sleep(0.05)


def _may_clear(html: str, status: int, url: str, headers: dict[str, str]) -> bool:
    """Whether an error page (HTTP >= 400) may still turn into the wanted page: a JS challenge, which runs
    in the browser and reloads. Any other (not found, access denied, server error) is waited on for nothing."""
    from scrapers.blocked import detect_block

    block = detect_block(html, status=status, url=url, headers=headers)
    return block is not None and block.kind == "challenge"


async def _close_quietly(page) -> None:  # type: ignore[no-untyped-def]
    try:
        await page.close()
    except Exception:  # noqa: BLE001
        pass
