"""Throughput of `tracker check` against a peer (urlwatch) and bare loops, on generated pages served locally.

    .venv/bin/python bench/throughput.py [--n 2000] [--js-n 600] [--hosts 8] [--repeat 3] [--skip-urlwatch] [--skip-browser]

In one run:
1. generates N static product pages (~10 KB, price in JSON-LD and in the markup) and JS-N pages whose price is
   written by JavaScript 50 ms after `load`, served by bench/common.py's server (a child process) on
   0.0.0.0, reached as 127.0.0.1 ... 127.0.0.<hosts>: one "domain" (one rival) per address;
2. runs `tracker check -c <generated config> --json` as a whole process (start-up included) on a fresh SQLite
   database over the static pages with `fetch: http`, then a second pass on the same database (nothing
   changed: the span store only extends spans), then `fetch: auto` on a fresh database (must not launch a
   browser), and over the JS pages with `fetch: browser`;
3. runs urlwatch 2.29 over the same static pages with a CSS filter on the price (fresh cache, then a second
   pass), a bare aiohttp + lexbor loop (the HTTP ceiling the ratios use, on asyncio's loop; again on uvloop,
   the loop tracker runs on, for reference) and a bare Playwright loop (same Chromium, same
   flags, one context, 8 reused pages, images/fonts/media blocked, waits for the price element);
4. repeats the HTTP runs (both bare loops, tracker's three, urlwatch's two) in --repeat interleaved rounds
   (default 3; fresh databases and caches in each) and keeps each run's median round by wall time: runs of
   a few seconds swing with whatever else the machine does; the two browser runs likewise in
   --browser-repeat rounds (default 3), their memory the highest peak of any round;
5. prints pages/s, CPU seconds (user+sys of the process tree, from os.wait4) and peak RSS (ru_maxrss: the
   largest process; with psutil also the sampled peak of the whole tree's summed RSS and of Chromium's),
   checks that every stored price is right, and prints the ratios against the targets.

Politeness is raised for localhost in the generated config: http.per_domain_concurrency 16,
per_domain_delay_s 0, respect_robots false (the defaults stay 2 / 1.0 s / true).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import PY, Measured, Server, host_of, machine, price_of, psutil, run_measured  # noqa: E402

TRACKER = str(ROOT / ".venv" / "bin" / "tracker")
URLWATCH = str(ROOT / ".venv" / "bin" / "urlwatch")
CHROMIUM = "/usr/bin/chromium"
_PRICE_NUM = re.compile(r"[\d,]+\.\d\d")


def _price(text: str | None) -> Decimal | None:
    m = _PRICE_NUM.search(text or "")
    return Decimal(m.group(0).replace(",", "")) if m else None


# ----------------------------------------------------------------------------------------------------
# bare loops (run as child processes of this script, so they are measured like the tracker)

def bare_http(url_file: str, connections: int, loop: str = "asyncio") -> None:
    """The ceiling: aiohttp with `connections` keep-alive connections, lexbor parse of the price, on
    asyncio's event loop (or on uvloop, the loop tracker itself runs on: shown for reference)."""
    import aiohttp
    from selectolax.lexbor import LexborHTMLParser

    urls = Path(url_file).read_text().split()
    found = 0

    async def main() -> None:
        it = iter(urls)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            async def worker() -> None:
                nonlocal found
                for url in it:
                    async with session.get(url) as resp:
                        body = await resp.read()
                    node = LexborHTMLParser(body.decode("utf-8")).css_first(".price")
                    if node is not None and _price(node.text()) == price_of(int(url.rsplit("/", 1)[1])):
                        found += 1
            await asyncio.gather(*(worker() for _ in range(connections)))

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())
    print(json.dumps({"found": found}))


def bare_browser(url_file: str, pages: int, block: str) -> None:
    """The browser ceiling: one Chromium (same binary and flags as scrapers.browser), one context, `pages`
    pages reused, blocked resource types aborted, wait for the price element to be filled, read it."""
    from playwright.async_api import async_playwright
    from selectolax.lexbor import LexborHTMLParser

    from scrapers.browser import find_chromium, launch_args

    urls = Path(url_file).read_text().split()
    blocked = frozenset(block.split(","))
    found = 0

    async def main() -> None:
        it = iter(urls)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=find_chromium(CHROMIUM), headless=True,
                                               args=launch_args())
            ctx = await browser.new_context(service_workers="block")

            async def route(r):  # type: ignore[no-untyped-def]
                if r.request.resource_type in blocked:
                    await r.abort()
                else:
                    await r.continue_()

            await ctx.route("**/*", route)

            async def worker() -> None:
                nonlocal found
                page = await ctx.new_page()
                for url in it:
                    await page.goto(url, wait_until="domcontentloaded")
                    await page.wait_for_function(
                        "() => { const e = document.getElementById('price'); return e && e.textContent.trim(); }")
                    node = LexborHTMLParser(await page.content()).css_first("#price")
                    if node is not None and _price(node.text()) == price_of(int(url.rsplit("/", 1)[1])):
                        found += 1
                await page.close()

            await asyncio.gather(*(worker() for _ in range(pages)))
            await browser.close()

    asyncio.run(main())
    print(json.dumps({"found": found}))


# ----------------------------------------------------------------------------------------------------
# set-up

def urls(port: int, n: int, hosts: int, kind: str) -> list[str]:
    return [f"http://{host_of(i, hosts)}:{port}/{kind}/{i}" for i in range(n)]


def tracker_config(path: Path, db: Path, url_list: list[str], hosts: int, fetch: str, browser_pages: int) -> Path:
    by_host: dict[str, list[str]] = {}
    for u in url_list:
        by_host.setdefault(u.split("/")[2].split(":")[0], []).append(u)
    config = {
        "database": f"sqlite:///{db}",
        "http": {"per_domain_concurrency": 16, "per_domain_delay_s": 0, "respect_robots": False},
        "browser": {"executable": CHROMIUM, "concurrency": browser_pages, "block": ["image", "font", "media"]},
        "email": {"outbox_dir": str(path.parent / "outbox")},
        "rivals": [{"name": f"rival-{host}", "fetch": fetch, "products": [{"url": u} for u in us]}
                   for host, us in sorted(by_host.items())],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def check_db(db: Path) -> tuple[int, int, int]:
    """(targets whose latest observation is ok with the right price, observation rows, summed seen_count)."""
    con = sqlite3.connect(db)
    try:
        right = 0
        rows = con.execute(
            "SELECT t.url, o.status, o.price FROM targets t JOIN observations o ON o.id = "
            "(SELECT max(id) FROM observations WHERE target_id = t.id)").fetchall()
        for url, status, price in rows:
            if status == "ok" and price is not None and Decimal(price) == price_of(int(url.rsplit("/", 1)[1])):
                right += 1
        n_obs, seen = con.execute("SELECT count(*), coalesce(sum(seen_count), 0) FROM observations").fetchone()
        return right, n_obs, seen
    finally:
        con.close()


def run_tracker(name: str, cfg: Path, db: Path, pages: int) -> Measured:
    m = run_measured(name, [TRACKER, "check", "-c", str(cfg), "--json"], pages=pages)
    if m.returncode != 0:
        m.notes.append(f"exit {m.returncode}: {m.stderr.strip()[-500:]}")
    else:
        summary = json.loads(m.stdout)
        statuses: dict[str, int] = {}
        for counts in summary["rivals"].values():
            for status, k in counts.items():
                statuses[status] = statuses.get(status, 0) + k
        right, n_obs, seen = check_db(db)
        m.ok = right
        m.notes.append(f"statuses {statuses}, changes {summary['changes']}; prices right {right}/{pages}; "
                       f"observation rows {n_obs}, checks recorded {seen}")
    return m


def run_urlwatch(name: str, work: Path, url_list: list[str], first: bool) -> Measured:
    jobs = work / "urls.yaml"
    if first:
        jobs.write_text("\n---\n".join(
            f"name: p{i}\nurl: {u}\nfilter:\n  - css: .price\n  - html2text\n" for i, u in enumerate(url_list)))
        (work / "urlwatch.yaml").write_text("report:\n  stdout:\n    enabled: false\n")
        (work / "hooks.py").write_text("")
    argv = [URLWATCH, "--urls", str(jobs), "--config", str(work / "urlwatch.yaml"),
            "--hooks", str(work / "hooks.py"), "--cache", str(work / "cache.db")]
    env = dict(os.environ, HOME=str(work))
    m = run_measured(name, argv, pages=len(url_list), env=env)
    if m.returncode != 0:
        m.notes.append(f"exit {m.returncode}: {m.stderr.strip()[-300:]}")
    con = sqlite3.connect(work / "cache.db")
    try:
        rows = con.execute("SELECT count(*) FROM CacheEntry").fetchone()[0]
    except sqlite3.Error:
        rows = "?"
    finally:
        con.close()
    m.notes.append(f"cache rows {rows}")
    return m


def run_bare(name: str, argv: list[str], pages: int) -> Measured:
    m = run_measured(name, argv, pages=pages)
    if m.returncode != 0:
        m.notes.append(f"exit {m.returncode}: {m.stderr.strip()[-500:]}")
    else:
        m.ok = json.loads(m.stdout.strip().splitlines()[-1])["found"]
        m.notes.append(f"prices right {m.ok}/{pages}")
    return m


# ----------------------------------------------------------------------------------------------------
# output

def median_round(runs: list[Measured]) -> Measured:
    """The run's median round by wall time (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda m: m.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def table(rows: list[Measured]) -> str:
    head = (f"{'run':<44} {'pages':>6} {'wall s':>7} {'pages/s':>8} {'CPU s':>7} {'CPU ms/pg':>9} "
            f"{'maxRSS MB':>9} {'tree RSS':>8} {'tree PSS':>8} {'chromium RSS':>12}")
    lines = [head, "-" * len(head)]
    for m in rows:
        lines.append(f"{m.name:<44} {m.pages:>6} {m.wall_s:>7.2f} {m.rate:>8.1f} {m.cpu_s:>7.2f} "
                     f"{1000 * m.cpu_s / max(m.pages, 1):>9.2f} {m.max_rss_mb:>9.0f} "
                     f"{m.tree_rss_mb:>8.0f} {m.tree_pss_mb:>8.0f} {m.browser_rss_mb:>12.0f}")
    return "\n".join(lines)


def verdict(label: str, value: float, target: float, unit: str = "", higher: bool = True) -> str:
    ok = value >= target if higher else value <= target
    return f"  {label:<58} {value:>8.2f}{unit}  target {'>=' if higher else '<='} {target}{unit}  " \
           f"{'OK' if ok else 'BELOW TARGET' if higher else 'OVER TARGET'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="static pages (default 2000)")
    ap.add_argument("--js-n", type=int, default=600, help="JavaScript pages (default 600, ~1-2 min per browser run)")
    ap.add_argument("--hosts", type=int, default=8, help="distinct 127.0.0.x hosts = rivals (default 8)")
    ap.add_argument("--connections", type=int, default=32, help="bare aiohttp loop connections")
    ap.add_argument("--browser-pages", type=int, default=8, help="browser pages open at once (both loops)")
    ap.add_argument("--skip-urlwatch", action="store_true")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-http", action="store_true", help="only the browser runs")
    ap.add_argument("--browser-repeat", type=lambda v: max(1, int(v)), default=3,
                    help="rounds of the two browser runs, median shown (default 3, ~2 min a round)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the HTTP runs; the table shows each run's median round (default 3)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rw-throughput-"))
    started = time.monotonic()
    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (other work on this machine disturbs wall times; "
          "CPU s per page does not depend on it much)")
    print(f"pages: {args.n} static (~10 KB, JSON-LD + markup price), {args.js_n} JavaScript (price set 50 ms "
          f"after load), over {args.hosts} hosts 127.0.0.1..127.0.0.{args.hosts} (one rival each)")
    print("tracker politeness raised for localhost: http.per_domain_concurrency=16, per_domain_delay_s=0, "
          "respect_robots=false")
    if psutil is None:
        print("psutil not installed: no tree / Chromium RSS sampling (pip install psutil into .venv)")
    rows: list[Measured] = []
    try:
        with Server(args.n, 0 if args.skip_browser else args.js_n) as server:
            static = urls(server.port, args.n, args.hosts, "p")
            js = urls(server.port, args.js_n, args.hosts, "js")
            (work / "static.txt").write_text("\n".join(static))
            (work / "js.txt").write_text("\n".join(js))

            def step(m: Measured) -> Measured:
                rows.append(m)
                print(f"  {m.name}: {m.wall_s:.2f} s, {m.rate:.0f} pages/s" +
                      "".join(f"\n    {n}" for n in m.notes), flush=True)
                return m

            print("\nruns:")
            bare = bare_uv = http1 = http2 = auto = uw1 = None
            if not args.skip_http:
                # The HTTP runs take seconds each, so other work on the machine sways them: they run in
                # --repeat interleaved rounds (every run once per round, fresh databases and caches), and
                # each run's median round (by wall time) is the one the table and the ratios use.
                rounds: dict[str, list[Measured]] = {}

                def keep(key: str, m: Measured) -> Measured:
                    rounds.setdefault(key, []).append(step(m))
                    return m

                for r in range(args.repeat):
                    if args.repeat > 1:
                        print(f"  round {r + 1} of {args.repeat}")
                    keep("bare", run_bare(f"bare aiohttp+lexbor ({args.connections} conns)",
                                          [PY, __file__, "_bare_http", str(work / "static.txt"),
                                           str(args.connections)], args.n))
                    keep("bare_uv", run_bare(f"bare aiohttp+lexbor on uvloop ({args.connections} conns)",
                                             [PY, __file__, "_bare_http", str(work / "static.txt"),
                                              str(args.connections), "uvloop"], args.n))
                    db1 = work / f"http-{r}.db"
                    cfg = tracker_config(work / f"http-{r}.json", db1, static, args.hosts, "http",
                                         args.browser_pages)
                    keep("http1", run_tracker("tracker check fetch:http, pass 1 (fresh DB)", cfg, db1, args.n))
                    keep("http2", run_tracker("tracker check fetch:http, pass 2 (unchanged)", cfg, db1, args.n))
                    db_auto = work / f"auto-{r}.db"
                    cfg = tracker_config(work / f"auto-{r}.json", db_auto, static, args.hosts, "auto",
                                         args.browser_pages)
                    a = keep("auto", run_tracker("tracker check fetch:auto static (fresh DB)", cfg, db_auto, args.n))
                    a.notes.append(f"browser launched: {'yes' if a.browser_seen else 'no'}"
                                   + ("" if psutil else " (unknown without psutil)"))
                    print(f"    {a.notes[-1]}")
                    if not args.skip_urlwatch:
                        uw_dir = work / f"urlwatch-{r}"
                        uw_dir.mkdir()
                        keep("uw1", run_urlwatch("urlwatch 2.29 css filter, pass 1 (fresh)", uw_dir, static, True))
                        keep("uw2", run_urlwatch("urlwatch 2.29 css filter, pass 2", uw_dir, static, False))
                rows.clear()
                medians = {key: median_round(ms) for key, ms in rounds.items()}
                rows.extend(medians.values())
                bare, bare_uv, http1, http2, auto = (medians[k] for k in ("bare", "bare_uv", "http1", "http2", "auto"))
                uw1 = medians.get("uw1")
                if any(m.browser_seen for m in rounds["auto"]):
                    auto.browser_seen = True
            bb = br1 = None
            peak: dict[str, float] = {}
            if not args.skip_browser:
                # Interleaved rounds too: a single pair of browser runs swung by +-10 % between runs.
                browser_rounds: dict[str, list[Measured]] = {"bb": [], "br1": []}
                for r in range(args.browser_repeat):
                    if args.browser_repeat > 1:
                        print(f"  browser round {r + 1} of {args.browser_repeat}")
                    browser_rounds["bb"].append(step(run_bare(
                        f"bare Playwright ({args.browser_pages} pages)",
                        [PY, __file__, "_bare_browser", str(work / "js.txt"), str(args.browser_pages),
                         "image,font,media"], args.js_n)))
                    db_b = work / f"browser-{r}.db"
                    cfg = tracker_config(work / f"browser-{r}.json", db_b, js, args.hosts, "browser",
                                         args.browser_pages)
                    browser_rounds["br1"].append(step(run_tracker(
                        f"tracker check fetch:browser ({args.browser_pages} pages, fresh DB)", cfg, db_b, args.js_n)))
                for m in browser_rounds["bb"]:
                    rows.remove(m)
                for m in browser_rounds["br1"]:
                    rows.remove(m)
                bb, br1 = median_round(browser_rounds["bb"]), median_round(browser_rounds["br1"])
                rows.extend((bb, br1))
                # memory: the highest peak of any round (not the median round's)
                peak = {"pss": max(max(m.tree_pss_mb, m.max_rss_mb) for m in browser_rounds["br1"]),
                        "rss": max(max(m.tree_rss_mb, m.max_rss_mb) for m in browser_rounds["br1"])}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")

    if args.repeat > 1 and not args.skip_http:
        print(f"\nHTTP runs: the median of {args.repeat} interleaved rounds (by wall time) each")
    print("\n" + table(rows))
    print("\nCPU s = user+sys of the process and its children (Chromium included); maxRSS = ru_maxrss (largest "
          "single process, MB);\ntree RSS / tree PSS = sampled peak (psutil, every 0.2 s) of the summed RSS / PSS of "
          "the process tree, MB (RSS counts\nshared pages once per process, PSS divides them among the sharers); "
          "chromium RSS = summed RSS of the Chromium processes.")
    print("\nratios and targets:")
    if http1 and bare and bare_uv:
        print(verdict("tracker http pass 1 / urlwatch pass 1", http1.rate / uw1.rate, 5, "x") if uw1 else
              "  (urlwatch skipped)")
        print(verdict("tracker http pass 1 / bare aiohttp loop", 100 * http1.rate / bare.rate, 60, " %"))
        print(verdict("tracker http pass 2 / bare aiohttp loop", 100 * http2.rate / bare.rate, 60, " %"))
        print(f"  (against the bare loop on uvloop, the loop tracker runs on: pass 1 "
              f"{100 * http1.rate / bare_uv.rate:.1f} %, pass 2 {100 * http2.rate / bare_uv.rate:.1f} %)")
        print(verdict("tracker auto (static) / tracker http pass 1", 100 * auto.rate / http1.rate, 90, " %"))
        print(f"  fetch:auto on static pages launched a browser: {'YES' if auto.browser_seen else 'no'}")
        print("  CPU per page (contention-free view): tracker http pass 1 "
              f"{1000 * http1.cpu_s / http1.pages:.2f} ms, pass 2 {1000 * http2.cpu_s / http2.pages:.2f} ms, "
              f"bare loop {1000 * bare.cpu_s / bare.pages:.2f} ms" +
              (f", urlwatch {1000 * uw1.cpu_s / uw1.pages:.2f} ms" if uw1 else ""))
    if bb and br1:
        print(verdict("tracker browser / bare Playwright loop", 100 * br1.rate / bb.rate, 90, " %"))
        print(verdict(f"tracker browser peak memory, whole tree, PSS ({args.browser_pages} pages)",
                      peak["pss"], 1536, " MB", higher=False))
        print(verdict(f"tracker browser peak memory, whole tree, RSS sum ({args.browser_pages} pages)",
                      peak["rss"], 1536, " MB", higher=False))
        if args.browser_repeat > 1:
            print(f"  (browser runs: the median of {args.browser_repeat} rounds by wall time; memory: the highest "
                  "peak of any round)")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; total bench time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare_http":
        bare_http(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "_bare_browser":
        bare_browser(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
