"""Scale-out benchmark: the same pages checked by 1, 2 and 4 `tracker worker` processes against the
single-process `tracker check`, on this machine (PostgreSQL 127.0.0.1:5432, Redis 127.0.0.1:6379/11).

    .venv/bin/python bench/scale.py [--n 2000] [--js-n 200] [--workers 1,2,4] [--skip-browser]

For each setup: a fresh PostgreSQL database, the pages served by a bare asyncio server (a child process,
127.0.0.1..8 = 8 domains), one pass, every stored price verified. Printed: pages/s, CPU ms per page (user+sys
of every process involved: workers and their Chromium, the sending process; for the single process its
whole tree), and the engine's own overhead per check:
- broker round trip + idempotent check: a pass whose every (target, slot) is already recorded, so a worker
  only receives the message, reads `targets.last_slot`, reports and acks: wall and CPU per check;
- idempotent write: `record_check` (the compare-and-set + span extension) on PostgreSQL, ms per write;
- engine CPU per check: CPU/page with 1 worker minus CPU/page in one process.
Politeness is raised for localhost: per_domain_concurrency 16, per_domain_delay_s 0, respect_robots false.

CPU counts the processes that exit during a pass too (Chromium starts and ends renderers all the time): a
worker's tree is read with its reaped children's times, and the single process's orphans (Chromium's zygote
and renderers outlive the browser process) are reaped by this process, made their subreaper. Before, on
browser pages `tracker check` was measured at about half its CPU (wait4 only) and a worker at about 60 %
(live processes only), which made the worker look 2.4x dearer than it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/11"
HOSTS = 8


def price_of(i: int) -> Decimal:
    return Decimal((i * 7919) % 90000 + 1000) / 100


# ------------------------------------------------------------------------------------------------------
# the page server (child process): precomputed responses, keep-alive, minimal parsing

def static_page(i: int) -> bytes:
    filler = "".join(f"<li>Feature {k} of product {i}: durable, tested, warranty included.</li>" for k in range(120))
    ld = json.dumps({"@context": "https://schema.org", "@type": "Product", "name": f"Product {i}", "sku": f"SKU{i}",
                     "offers": {"@type": "Offer", "price": str(price_of(i)), "priceCurrency": "EUR",
                                "availability": "https://schema.org/InStock"}})
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Product {i}</title>'
            f'<script type="application/ld+json">{ld}</script></head><body><h1>Product {i}</h1>'
            f'<span class="price">{price_of(i)} €</span><button>Add to cart</button><ul>{filler}</ul>'
            f'</body></html>').encode()


def js_page(i: int) -> bytes:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>JS product {i}</title></head><body>'
            f'<h1>JS product {i}</h1><div id="p"></div><button>Add to cart</button><script>'
            f'addEventListener("load", () => setTimeout(() => {{ document.getElementById("p").innerHTML = '
            f'\'<span class="price">{price_of(i)} €</span>\'; }}, 50));</script></body></html>').encode()


def serve(port: int, n: int, js_n: int) -> None:
    def response(body: bytes, status: str = "200 OK") -> bytes:
        return (f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                f"Connection: keep-alive\r\n\r\n").encode() + body

    pages = {f"/p/{i}".encode(): response(static_page(i)) for i in range(n)}
    pages.update({f"/js/{i}".encode(): response(js_page(i)) for i in range(js_n)})
    missing = response(b"not found", "404 Not Found")

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ", 2)[1] if b" " in head else b"/"
                self.transport.write(pages.get(path, missing))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "0.0.0.0", port, backlog=2048)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------------
# measurement helpers

def tree_cpu(root_pids: list[int]) -> float:
    """user+sys seconds of these processes and all their descendants (from /proc), including the
    descendants that already exited and were reaped inside the tree (a process's cutime/cstime): Chromium
    starts and ends renderer processes all the time, and a pass's dead renderers count too."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = raw.rsplit(")", 1)[1].split()
        stats[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]) / tick)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(root_pids)
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux), so that the CPU of Chromium
    processes outliving their parent still ends up in RUSAGE_CHILDREN (os.wait4 on `tracker check` alone
    missed about half of a browser pass's CPU: zygote and renderers exit after the browser process)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0   # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: set[int], wait_s: float = 15.0) -> None:
    """Wait for and reap this process's children other than `keep` (orphans handed to the subreaper)."""
    deadline = time.monotonic() + wait_s
    me = os.getpid()
    while True:
        orphans = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in keep:
                try:
                    if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                        orphans.append(int(entry))
                except (OSError, IndexError, ValueError):
                    continue
        if not orphans:
            return
        for pid in orphans:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def fresh_db() -> str:
    import psycopg

    name = f"bench_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_db(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_config(path: Path, db: str, port: int, count: int, kind: str) -> Path:
    lines = [f"database: postgresql+psycopg://postgres@127.0.0.1:5432/{db}", "timezone: UTC",
             "http: {per_domain_concurrency: 16, per_domain_delay_s: 0, respect_robots: false, retries: 0}",
             "browser: {concurrency: 4, timeout_s: 30}",
             "schedules: {prices: null, report: null}", "rivals:"]
    for h in range(HOSTS):
        lines.append(f"  - name: Shop {h}")
        lines.append("    products:")
        for i in range(h, count, HOSTS):
            url = f"http://127.0.0.{1 + h}:{port}/{'p' if kind == 'http' else 'js'}/{i}"
            lines.append(f'      - {{url: "{url}", fetch: {kind}}}')
    path.write_text("\n".join(lines) + "\n")
    return path


def verify(db_name: str, count: int) -> int:
    """How many stored prices are right."""
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db_name}") as conn:
        rows = conn.execute("SELECT t.url, o.price FROM observations o JOIN targets t ON t.id = o.target_id "
                            "WHERE o.status = 'ok'").fetchall()
    return sum(1 for url, price in rows if price == price_of(int(url.rsplit("/", 1)[1])))


# ------------------------------------------------------------------------------------------------------
# the runs

def run_single(tmp: Path, port: int, count: int, kind: str, keep: set[int]) -> dict:
    db = fresh_db()
    try:
        cfg = write_config(tmp / f"single-{kind}.yaml", db, port, count, kind)
        subprocess.run([PY, "-m", "tracker.cli", "db", "upgrade", "-c", str(cfg)], check=True, capture_output=True)
        env = dict(os.environ)
        env.pop("TRACKER_BROKER_URL", None)
        reap_orphans(keep)
        cpu0 = children_cpu()
        start = time.perf_counter()
        proc = subprocess.Popen([PY, "-m", "tracker.cli", "check", "-c", str(cfg), "--json", "--processes", "1"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.communicate()
        wall = time.perf_counter() - start
        reap_orphans(keep)
        ok = verify(db, count)
        return {"wall": wall, "cpu": children_cpu() - cpu0, "ok": ok}
    finally:
        drop_db(db)


def run_workers(tmp: Path, port: int, count: int, kind: str, workers: int, *, duplicates_pass: bool,
                keep: set[int]) -> dict:
    import redis

    from tracker.app import open_database
    from tracker.config import load_config
    from tracker.queue import check_distributed, connect

    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    db_name = fresh_db()
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, TRACKER_BROKER_URL=REDIS)
    try:
        cfg_path = write_config(tmp / f"w{workers}-{kind}.yaml", db_name, port, count, kind)
        config = load_config(cfg_path)
        db = open_database(config)
        for n in range(workers):
            procs.append(subprocess.Popen([PY, "-m", "tracker.cli", "worker", "-c", str(cfg_path), "--queues",
                                           "http,browser", "--threads", "32"], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while client.hlen("rivalwatch:workers") < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.1)
        os.environ["TRACKER_BROKER_URL"] = REDIS
        engine = connect(config)
        slot = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

        def one_pass() -> tuple[float, float, object]:
            cpu0, own0, t0 = tree_cpu([p.pid for p in procs]), own_cpu(), time.perf_counter()
            summary = asyncio.run(check_distributed(config, db, slot=slot, engine=engine, timeout_s=600))
            wall = time.perf_counter() - t0
            cpu = tree_cpu([p.pid for p in procs]) - cpu0 + own_cpu() - own0
            return wall, cpu, summary

        wall, cpu, summary = one_pass()
        result = {"wall": wall, "cpu": cpu, "ok": verify(db_name, count)}
        if duplicates_pass:
            dwall, dcpu, dsum = one_pass()      # every (target, slot) already recorded: engine cost only
            result.update(dup_wall=dwall, dup_cpu=dcpu, dup_n=dsum.duplicates + sum(  # type: ignore[attr-defined]
                sum(c.values()) for c in dsum.counts.values()))  # type: ignore[attr-defined]
        engine.close()
        db.close()
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        reap_orphans(keep)
        os.environ.pop("TRACKER_BROKER_URL", None)
        drop_db(db_name)
        client.flushdb()


def write_cost(n: int = 2000) -> float:
    """ms per idempotent write (record_check extending a span) on PostgreSQL."""
    from tracker.db import Database
    from tracker.models import Target
    from tracker.store import Observed, record_check

    name = fresh_db()
    try:
        db = Database.open(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        with db.session() as s:
            t = Target(kind="product", key="k", url="http://x/p", spec={}, fail_streak=0)
            s.add(t)
            s.flush()
            tid = t.id
        obs = Observed("ok", price=Decimal("10.00"), currency="EUR")
        base = datetime(2026, 1, 1, tzinfo=UTC)
        start = time.perf_counter()
        for k in range(n):
            with db.session() as s:
                record_check(s, tid, base + timedelta(minutes=k), obs, now=datetime.now(UTC))
        per = (time.perf_counter() - start) / n * 1000
        db.close()
        return per
    finally:
        drop_db(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--js-n", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--port", type=int, default=18093)
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-http", action="store_true", help="browser pages only (no engine overhead lines)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rivalwatch-scale-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    server = subprocess.Popen([PY, __file__, "serve", "--port", str(args.port), "--n", str(args.n),
                               "--js-n", str(args.js_n)], stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    print(f"machine: {os.cpu_count()} cores; {args.n} static pages, {args.js_n} JavaScript pages, {HOSTS} domains")
    try:
        kinds = (([] if args.skip_http else [("http", args.n)])
                 + ([] if args.skip_browser else [("browser", args.js_n)]))
        base_cpu_page = None
        dup: dict | None = None
        for kind, count in kinds:
            print(f"\n{kind} pages ({count}):")
            print(f"  {'setup':<22}{'wall s':>8}{'pages/s':>9}{'CPU ms/page':>13}{'speed-up':>10}{'prices ok':>11}")
            single = run_single(tmp, args.port, count, kind, {server.pid})
            rate0 = count / single["wall"]
            print(f"  {'tracker check (1 proc)':<22}{single['wall']:>8.2f}{rate0:>9.1f}"
                  f"{single['cpu'] / count * 1000:>13.2f}{'1.00':>10}{single['ok']:>11}")
            if kind == "http":
                base_cpu_page = single["cpu"] / count * 1000
            for w in counts:
                r = run_workers(tmp, args.port, count, kind, w, duplicates_pass=(kind == "http" and w == 1),
                                keep={server.pid})
                rate = count / r["wall"]
                print(f"  {f'{w} worker process' + ('es' if w > 1 else ''):<22}{r['wall']:>8.2f}{rate:>9.1f}"
                      f"{r['cpu'] / count * 1000:>13.2f}{rate / rate0:>10.2f}{r['ok']:>11}", flush=True)
                if "dup_wall" in r:
                    dup = r
                    one_worker_cpu = r["cpu"] / count * 1000
        if dup is None:
            return
        print("\nengine overhead per check (http pages, 1 worker, 32 threads):")
        n = dup["dup_n"]
        print(f"  broker round trip + idempotent check (already-recorded pass): "
              f"{dup['dup_cpu'] / n * 1000:.2f} ms CPU, {dup['dup_wall'] / n * 1000:.2f} ms wall per check")
        print(f"  idempotent write (record_check on PostgreSQL, sequential): {write_cost():.2f} ms per write")
        if base_cpu_page is not None:
            print(f"  engine CPU per check (1 worker minus 1 process): {one_worker_cpu - base_cpu_page:.2f} ms")
    finally:
        server.terminate()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sp = argparse.ArgumentParser()
        sp.add_argument("cmd")
        sp.add_argument("--port", type=int)
        sp.add_argument("--n", type=int)
        sp.add_argument("--js-n", type=int)
        a = sp.parse_args()
        serve(a.port, a.n, a.js_n)
    else:
        main()
