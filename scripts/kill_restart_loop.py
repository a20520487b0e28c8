#!/usr/bin/env python3
"""Kill-restart loop: SIGKILL a tracker process at random moments while it checks and sends, restart
it, and prove afterwards that nothing was half-written, counted twice, lost or mailed twice.

The parent serves a shop on 127.0.0.1 whose prices keep moving (so passes find changes and reports are
due) and an SMTP server (aiosmtpd) that keeps every message it accepts. The child loops: resume the
newest unfinished slot (or take the next one), run a real pass over the shop (tracker.app.check_once),
queue the report (queue_report) and deliver the outbox (send_reports). It prints `DONE <target> <slot>`
after each check it recorded, `PHASE check|send` as it goes. The parent kills it (SIGKILL) after a random
delay, restarts it, N times; then lets one child finish cleanly, drains the outbox once the killed
senders' claims have expired, and checks:

* every (target, slot) the child reported done is in the database, and every target holds every slot
  that was ever started exactly once: sum(seen_count) over its spans == number of distinct slots;
* no observation is half-written (required columns set, spans well-formed, an ok span has a price);
* every queued report was received under its one stored Message-ID; no message arrived under an ID
  that is not in the outbox; every change was reported in exactly one report; the number of distinct
  Message-IDs received equals the number of outbox rows marked sent.

    python scripts/kill_restart_loop.py --kills 50 [--seed 1] [--database postgresql://...]

Exit status 0 when all figures are as they must be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_SLOT = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
PRODUCTS = ("kettle", "toaster", "blender", "grill")


# ---------------------------------------------------------------------------------------------------------
# the child: a tracker process doing real passes and deliveries until it is killed


def child(config_path: str, once: bool) -> None:
    from sqlalchemy import select

    from tracker.app import check_once, open_database, queue_report, send_reports
    from tracker.config import load_config
    from tracker.models import Run

    config = load_config(config_path)
    db = open_database(config)
    print("READY", flush=True)
    while True:
        with db.session() as s:
            last = s.scalars(select(Run).order_by(Run.id.desc()).limit(1)).first()
            if last is None:
                slot = BASE_SLOT
            elif last.finished_at is None:
                slot = last.slot  # the previous process died in this pass: finish it
            else:
                slot = last.slot + timedelta(minutes=1)
        print(f"PHASE check {slot.isoformat()}", flush=True)

        def done(result, slot=slot):  # type: ignore[no-untyped-def]
            if not result.duplicate:
                print(f"DONE {result.target_id} {slot.isoformat()}", flush=True)

        asyncio.run(check_once(config, db, slot=slot, trigger="loop", on_result=done))
        print("PHASE send", flush=True)
        queued = queue_report(config, db)
        if queued is not None:
            print(f"QUEUED {queued.outbox_id} {queued.message_id}", flush=True)
        result = send_reports(config, db)
        print(f"SENT {result.sent}", flush=True)
        if once:
            return


# ---------------------------------------------------------------------------------------------------------
# the parent: a moving shop, an SMTP server, the kills, the verification


def start_shop(rng: random.Random) -> tuple[str, callable]:  # type: ignore[valid-type]
    from aiohttp import web

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}
    started = time.monotonic()

    async def page(request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        await asyncio.sleep(rng.uniform(0, 0.04))
        # prices move every ~0.7 s, differently per product: most passes see some change
        step = int((time.monotonic() - started) / 0.7) + PRODUCTS.index(slug)
        price = f"{20 + (step * 7) % 13}.{(step * 37) % 100:02d}"
        return web.Response(content_type="text/html", text=(
            f'<html lang="en"><head><meta charset="utf-8"><title>{slug}</title><script type="application/ld+json">'
            f'{{"@type": "Product", "name": "{slug}", "sku": "{slug}", "offers": {{"price": "{price}", '
            f'"priceCurrency": "EUR", "availability": "https://schema.org/InStock"}}}}</script></head>'
            f'<body><h1>{slug}</h1><span class="price">{price} €</span><button>Add to cart</button></body></html>'))

    def run() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_get("/p/{slug}", page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return f"http://127.0.0.1:{state['port']}", lambda: loop.call_soon_threadsafe(loop.stop)


class Mailbox:
    """An SMTP handler keeping every accepted message; DATA takes a little while (sends get killed)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.message_ids: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.rng.uniform(0.0, 0.25))
        msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        self.message_ids.append(str(msg["Message-ID"]).strip())
        return "250 OK"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    def __init__(self, config: Path, *, once: bool = False):
        args = [sys.executable, str(Path(__file__).resolve()), "--child", str(config)] + (["--once"] if once else [])
        self.p = subprocess.Popen(args, cwd=config.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.phase = "start-up"
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=lambda: self.err.extend(self.p.stderr), daemon=True)]  # type: ignore[arg-type]
        for t in self._threads:
            t.start()

    def _read_out(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            line = line.rstrip("\n")
            self.out.append(line)
            if line.startswith("PHASE "):
                self.phase = line.split()[1]
            self.lines.put(line)

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if "READY" in self.out:
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError("child did not start:\n" + "".join(self.err))

    def finish(self) -> None:
        self.p.wait(120)
        for t in self._threads:
            t.join(5)


def verify(db_url: str, claimed: set[tuple[int, datetime]], mailbox: Mailbox) -> dict[str, int]:
    from sqlalchemy import select

    from tracker.db import Database
    from tracker.models import Change, Observation, OutboxMessage, Run, Target

    db = Database.open(db_url)
    with db.session() as s:
        slots = set(s.scalars(select(Run.slot)))
        targets = [t.id for t in s.scalars(select(Target).where(Target.kind == "product"))]
        obs = list(s.scalars(select(Observation).order_by(Observation.target_id, Observation.id)))
        outbox = list(s.scalars(select(OutboxMessage)))
        changes = list(s.scalars(select(Change)))
    db.close()

    half = 0
    for o in obs:
        required = (o.status, o.fingerprint, o.first_seen_at, o.last_seen_at, o.first_slot, o.last_slot,
                    o.seen_count)
        if any(v is None for v in required) or o.seen_count < 1 or o.first_slot > o.last_slot \
                or (o.status == "ok" and (o.price is None or o.currency is None)) or o.status not in (
                    "ok", "failed", "blocked", "unextractable"):
            half += 1
    by_target: dict[int, list[Observation]] = {t: [] for t in targets}
    for o in obs:
        by_target.setdefault(o.target_id, []).append(o)
    twice = missing = overlapping = 0
    for spans in by_target.values():
        seen = sum(o.seen_count for o in spans)
        twice += max(0, seen - len(slots))
        missing += max(0, len(slots) - seen)
        overlapping += sum(1 for a, b in zip(spans, spans[1:]) if b.first_slot <= a.last_slot)
    lost = sum(1 for t, slot in claimed
               if not any(o.first_slot <= slot <= o.last_slot for o in by_target.get(t, [])))

    ids = [m.message_id for m in outbox]
    received = Counter(mailbox.message_ids)
    sent_rows = sum(1 for m in outbox if m.status == "sent")
    return {
        "slots": len(slots), "targets": len(targets), "target_slots_in_db": sum(o.seen_count for o in obs),
        "claimed": len(claimed), "observations_lost": lost + missing, "half_written": half + overlapping,
        "runs_counted_twice": twice,
        "reports_queued": len(outbox), "outbox_sent": sent_rows,
        "emails_received": sum(received.values()), "distinct_message_ids": len(received),
        "emails_lost": sum(1 for i in ids if i not in received) + (len(outbox) - sent_rows),
        "emails_duplicated": sum(1 for i in received if i not in ids),
        "same_id_redeliveries": sum(n - 1 for n in received.values()),
        "changes": len(changes), "changes_unreported": sum(1 for c in changes if c.report_id is None),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--database", default=None, help="default: a SQLite file in a temporary folder")
    ap.add_argument("--max-delay", type=float, default=2.0, help="kill within this many seconds of start")
    ap.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.once)
        return 0

    from aiosmtpd.controller import Controller

    from tracker.config import load_config
    from tracker.mail import deliver_pending

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="kill-restart-"))
    db_url = args.database or f"sqlite:///{workdir / 'tracker.db'}"
    shop_url, stop_shop = start_shop(random.Random(seed + 1))
    mailbox = Mailbox(random.Random(seed + 2))
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    config = workdir / "tracker.yaml"
    config.write_text(
        f"database: {db_url}\n"
        f"email: {{smtp_url: 'smtp://127.0.0.1:{smtp_port}', timeout_s: 5, from: rw@test.localhost, "
        f"to: [ana@test.localhost]}}\n"
        "http: {timeout_s: 5, retries: 0, per_domain_delay_s: 0, per_domain_concurrency: 8}\n"
        "rivals:\n  - name: Shop\n    fetch: http\n    products:\n"
        + "".join(f"      - {{name: {p}, url: '{shop_url}/p/{p}'}}\n" for p in PRODUCTS))

    claimed: set[tuple[int, datetime]] = set()
    phases: Counter[str] = Counter()
    tracebacks = 0

    def harvest(c: Child) -> None:
        nonlocal tracebacks
        for line in c.out:
            if line.startswith("DONE "):
                _, target, slot = line.split()
                claimed.add((int(target), datetime.fromisoformat(slot)))
        tracebacks += sum("Traceback" in e for e in c.err)

    started = time.monotonic()
    try:
        for _ in range(args.kills):
            c = Child(config)
            c.wait_ready()
            time.sleep(rng.uniform(0.0, args.max_delay))
            phases[c.phase if c.p.poll() is None else "exited"] += 1
            os.kill(c.p.pid, signal.SIGKILL)
            c.finish()
            harvest(c)
        # A last process finishes the interrupted pass and queues/sends what is due, undisturbed.
        last = Child(config, once=True)
        last.finish()
        harvest(last)
        if last.p.returncode != 0:
            print("".join(last.err), file=sys.stderr)
        # Messages left 'sending' by a killed sender are retried once their claim lease has run out.
        cfg = load_config(config)
        deliver_pending(__import__("tracker.db", fromlist=["Database"]).Database.open(db_url), cfg.email,
                        now=datetime.now(UTC) + timedelta(hours=1))
        time.sleep(0.3)
        figures = verify(db_url, claimed, mailbox)
    finally:
        smtp.stop()
        stop_shop()

    ok = all(figures[k] == 0 for k in ("observations_lost", "half_written", "runs_counted_twice",
                                       "emails_lost", "emails_duplicated", "changes_unreported")) \
        and figures["distinct_message_ids"] == figures["outbox_sent"] == figures["reports_queued"] \
        and tracebacks == 0 and figures["reports_queued"] > 0
    backend = db_url.split(":", 1)[0].split("+")[0]
    print(f"kill-restart loop: {args.kills} SIGKILLs ({phases['check']} during checks, {phases['send']} during "
          f"sends, {phases['start-up']} at start-up{', %d after exit' % phases['exited'] if phases['exited'] else ''})"
          f", {backend}, seed {seed}, {time.monotonic() - started:.0f} s")
    print(f"passes: {figures['slots']} slots x {figures['targets']} targets; (target, slot) reported done by "
          f"the child: {figures['claimed']}, recorded in the database: {figures['target_slots_in_db']}")
    print(f"observations lost: {figures['observations_lost']}, half-written: {figures['half_written']}, "
          f"runs counted twice: {figures['runs_counted_twice']}")
    print(f"reports queued: {figures['reports_queued']}, sent: {figures['outbox_sent']}, distinct Message-IDs "
          f"received: {figures['distinct_message_ids']}; e-mails lost: {figures['emails_lost']}, e-mails "
          f"duplicated: {figures['emails_duplicated']} (same-Message-ID redeliveries after a kill between the "
          f"server's 250 and the commit: {figures['same_id_redeliveries']})")
    print(f"changes: {figures['changes']}, unreported: {figures['changes_unreported']}; child tracebacks: "
          f"{tracebacks}")
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
