"""Shared helpers of the benchmarks: generated product pages, a fast local HTTP server, process measurement.

    .venv/bin/python bench/common.py serve --port 18080 --n 2000 --js-n 500   # what throughput.py starts

Pages are generated deterministically from their index, so the server and the benchmark (which checks
the prices the tracker stored) agree without sharing files:
- /p/<i>   a ~10 KB static product page, price in JSON-LD and in the markup;
- /js/<i>  a product page whose price is written by JavaScript 50 ms after `load` (nothing in the HTML);
- anything else (robots.txt, favicon.ico) is a 404.

The server is a bare asyncio protocol with precomputed responses (HTTP/1.1 keep-alive, no parsing beyond
the request line), so that on a 2-core machine it costs as little CPU as possible and the client is what
gets measured. It listens on 0.0.0.0, so 127.0.0.1 ... 127.0.0.8 all reach it: those are distinct
hostnames, hence distinct domains for per-domain politeness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

try:
    import psutil  # optional: Chromium's memory and "was a browser launched" need it
except ImportError:  # pragma: no cover
    psutil = None  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------------------
# pages

WORDS = ("steel", "compact", "wireless", "ergonomic", "premium", "classic", "ultra", "smart", "eco", "pro",
         "portable", "digital", "kitchen", "garden", "travel", "studio", "outdoor", "silent", "rapid", "nova")
NOUNS = ("kettle", "blender", "headphones", "drill", "backpack", "lamp", "speaker", "toaster", "chair", "monitor")


def price_of(i: int) -> Decimal:
    """The price of product i (deterministic, 10.00 .. 909.99)."""
    return Decimal((i * 7919) % 90000 + 1000) / 100


def name_of(i: int) -> str:
    return f"{WORDS[i % 20].title()} {WORDS[(i // 20) % 20].title()} {NOUNS[(i // 3) % 10].title()} {i}"


def host_of(i: int, hosts: int) -> str:
    return f"127.0.0.{1 + i % hosts}"


def _money(p: Decimal) -> str:
    return f"${p:,.2f}"


def _filler(i: int, paragraphs: int) -> str:
    out = []
    for k in range(paragraphs):
        words = " ".join(WORDS[(i + k * 7 + j) % 20] + " " + NOUNS[(i + j) % 10] for j in range(24))
        out.append(f"<p>{words.capitalize()}.</p>")
    return "\n".join(out)


def _related(i: int) -> str:
    items = []
    for k in range(1, 7):
        j = (i * 31 + k * 97) % 100_000
        items.append(f'<li class="card"><a href="/p/{j}">{name_of(j)}</a>'
                     f'<span class="card-price">{_money(price_of(j))}</span></li>')
    return '<section class="related-products"><h2>Customers also viewed</h2><ul>' + "".join(items) + "</ul></section>"


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name} | Example Shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta property="og:title" content="{name}"><meta property="og:type" content="product">
<link rel="stylesheet" href="/static/site.css"><link rel="icon" href="/static/favicon.png">
{extra_head}</head>
<body><header class="site-header"><a class="logo" href="/">Example Shop</a>
<nav class="main-nav"><ul><li><a href="/c/kitchen">Kitchen</a></li><li><a href="/c/garden">Garden</a></li>
<li><a href="/c/audio">Audio</a></li><li><a href="/c/tools">Tools</a></li><li><a href="/c/travel">Travel</a></li>
<li><a href="/c/office">Office</a></li><li><a href="/sale">Sale</a></li></ul></nav>
<form class="search" action="/search"><input name="q" placeholder="Search"><button>Go</button></form></header>
<ol class="breadcrumb"><li><a href="/">Home</a></li><li><a href="/c/{noun}">{noun_t}</a></li><li>{name}</li></ol>
<main class="product-page"><div class="gallery"><img src="/img/{i}.jpg" alt="{name}" width="600" height="600"></div>
<div class="product-info"><h1 class="product-title">{name}</h1>
<div class="sku">SKU: RW-{i:06d}</div>
"""

_TAIL = """<div class="stock in-stock">In stock</div>
<button class="add-to-cart" type="submit">Add to cart</button>
</div>
<section class="description"><h2>Description</h2>
{filler}
</section>
{related}
</main>
<footer class="site-footer"><p>Free shipping over $50. Prices include VAT.</p>
<ul><li><a href="/help">Help</a></li><li><a href="/returns">Returns</a></li><li><a href="/privacy">Privacy</a></li></ul>
</footer>
{script}</body></html>
"""


def static_page(i: int) -> str:
    """A ~10 KB product page with the price in JSON-LD and in the markup."""
    name, price = name_of(i), price_of(i)
    noun = NOUNS[(i // 3) % 10]
    ld = ('<script type="application/ld+json">{"@context":"https://schema.org","@type":"Product",'
          f'"name":"{name}","sku":"RW-{i:06d}","image":"/img/{i}.jpg",'
          '"brand":{"@type":"Brand","name":"Example"},'
          f'"offers":{{"@type":"Offer","price":"{price}","priceCurrency":"USD",'
          '"availability":"https://schema.org/InStock"}}</script>')
    html = _HEAD.format(name=name, i=i, noun=noun, noun_t=noun.title(), extra_head=ld)
    html += f'<div class="price-box"><span class="price current-price">{_money(price)}</span></div>\n'
    html += _TAIL.format(filler=_filler(i, 19), related=_related(i), script="")
    return html


def js_page(i: int) -> str:
    """A product page whose price only exists after JavaScript runs (50 ms after `load`)."""
    name, price = name_of(i), price_of(i)
    noun = NOUNS[(i // 3) % 10]
    html = _HEAD.format(name=name, i=i, noun=noun, noun_t=noun.title(), extra_head="")
    html += '<div class="price-box"><span class="price current-price" id="price"></span></div>\n'
    script = ("<script>window.addEventListener('load', function () { setTimeout(function () {"
              f"document.getElementById('price').textContent = '{_money(price)}';"
              "}, 50); });</script>\n")
    html += _TAIL.format(filler=_filler(i, 19), related=_related(i), script=script)
    return html


# ----------------------------------------------------------------------------------------------------
# the server

def _response(body: bytes, status: str = "200 OK", ctype: str = "text/html; charset=utf-8") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\nCache-Control: no-cache\r\n\r\n").encode() + body


class _Http(asyncio.Protocol):
    routes: dict[bytes, bytes] = {}
    not_found = _response(b"not found", "404 Not Found", "text/plain")
    head_cache: dict[bytes, bytes] = {}

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            request, self.buf = self.buf[:end], self.buf[end + 4:]
            line = request.split(b"\r\n", 1)[0]
            parts = line.split(b" ")
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b"/"
            resp = self.routes.get(path, self.not_found)
            if parts[0] == b"HEAD":
                resp = resp[:resp.find(b"\r\n\r\n") + 4]
            self.transport.write(resp)


def serve(port: int, n: int, js_n: int) -> None:
    routes = {}
    for i in range(n):
        routes[f"/p/{i}".encode()] = _response(static_page(i).encode())
    for i in range(js_n):
        routes[f"/js/{i}".encode()] = _response(js_page(i).encode())
    _Http.routes = routes

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Http, "0.0.0.0", port, backlog=4096, reuse_address=True)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The page server as a child process (its CPU is not counted in any measured run)."""

    def __init__(self, n: int, js_n: int, port: int | None = None):
        self.port = port or free_port()
        self.proc = subprocess.Popen([PY, str(Path(__file__).resolve()), "serve", "--port", str(self.port),
                                      "--n", str(n), "--js-n", str(js_n)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            raise RuntimeError("page server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------------
# measuring a whole process

@dataclass
class Measured:
    name: str
    pages: int
    wall_s: float
    cpu_s: float                  # user + system of the process and every child it waited for
    max_rss_mb: float             # ru_maxrss: the largest single process of the tree
    tree_rss_mb: float = 0.0      # psutil: peak of the summed RSS of the whole process tree (sampled)
    browser_rss_mb: float = 0.0   # psutil: peak of the summed RSS of Chromium processes (sampled)
    tree_pss_mb: float = 0.0      # psutil: peak of the summed PSS (shared pages divided among sharers)
    browser_seen: bool = False    # a Chromium process appeared in the tree
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    ok: int | None = None         # pages whose price was found (and right, where checked)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.pages / self.wall_s if self.wall_s else 0.0


def _sample(pid: int, stop: threading.Event, out: dict[str, float]) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        total = browser = pss = 0
        for p in procs:
            try:
                try:
                    full = p.memory_full_info()
                    rss, pss = full.rss, pss + getattr(full, "pss", full.rss)
                except psutil.AccessDenied:
                    rss = p.memory_info().rss
                    pss += rss
                total += rss
                if "chrom" in p.name().lower() or "headless_shell" in p.name().lower():
                    browser += rss
                    out["seen"] = 1
            except psutil.Error:
                pass
        out["tree"] = max(out.get("tree", 0), total)
        out["browser"] = max(out.get("browser", 0), browser)
        out["pss"] = max(out.get("pss", 0), pss)
        stop.wait(0.2)


def run_measured(name: str, argv: list[str], *, pages: int, cwd: Path | None = None,
                 env: dict[str, str] | None = None, timeout_s: float = 900) -> Measured:
    """Run argv as a child process; wall time, CPU (os.wait4 rusage: the child and its children) and RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: dict[str, float] = {}
    stop = threading.Event()
    sampler = None
    if psutil is not None:
        sampler = threading.Thread(target=_sample, args=(proc.pid, stop, samples), daemon=True)
        sampler.start()
    # Drain the pipes in threads (so a chatty child cannot block), and reap with wait4 for its rusage.
    chunks: dict[str, str] = {}

    def drain(key: str, stream) -> None:  # type: ignore[no-untyped-def]
        chunks[key] = stream.read()

    readers = [threading.Thread(target=drain, args=("out", proc.stdout)),
               threading.Thread(target=drain, args=("err", proc.stderr))]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.02)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    for t in readers:
        t.join()
    if sampler is not None:
        sampler.join()
    return Measured(name=name, pages=pages, wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                    max_rss_mb=usage.ru_maxrss / 1024, tree_rss_mb=samples.get("tree", 0) / 2**20,
                    browser_rss_mb=samples.get("browser", 0) / 2**20,
                    tree_pss_mb=samples.get("pss", 0) / 2**20, browser_seen=bool(samples.get("seen")),
                    returncode=proc.returncode, stdout=chunks.get("out", ""), stderr=chunks.get("err", ""))


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node() or 'host'}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def rusage_children() -> resource.struct_rusage:
    return resource.getrusage(resource.RUSAGE_CHILDREN)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--n", type=int, default=2000)
    s.add_argument("--js-n", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a.port, a.n, a.js_n)
