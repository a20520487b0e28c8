"""A delivery process killed with SIGKILL in the middle of SMTP DATA: after a restart every report arrives,
none under a second Message-ID, and a copy twice only when the kill fell after the server's 250."""

from __future__ import annotations

import asyncio
import email
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tracker.config import EmailConfig
from tracker.db import Database
from tracker.mail import build_message, deliver_pending, enqueue
from tracker.models import OutboxMessage

ROOT = Path(__file__).resolve().parents[2]

SENDER = """
import sys
from tracker.config import EmailConfig
from tracker.db import Database
from tracker.mail import deliver_pending

db = Database.open(sys.argv[1])
cfg = EmailConfig(smtp_url=sys.argv[2], timeout_s=60, to=["ana@example.com"], **{"from": "rw@rivalwatch.example"})
print("sending", flush=True)
deliver_pending(db, cfg)
print("finished", flush=True)  # never reached: killed in DATA
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BlockingServer:
    """Blocks the first DATA until released. With `accept_first`, the message is taken (as after the
    server's 250, whose reply the killed client never reads); otherwise it is dropped (killed before)."""

    def __init__(self, *, accept_first: bool):
        self.accept_first = accept_first
        self.in_data = threading.Event()
        self.release = threading.Event()
        self.blocked_once = False
        self.received: list[bytes] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        if not self.blocked_once:
            self.blocked_once = True
            if self.accept_first:
                self.received.append(envelope.content)
            self.in_data.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
            return "250 OK" if self.accept_first else "451 4.4.2 client went away"
        self.received.append(envelope.content)
        return "250 OK"

    def message_ids(self) -> list[str]:
        return [str(email.message_from_bytes(c, policy=policy.default)["Message-ID"]) for c in self.received]




@pytest.mark.parametrize("accept_first", [False, True], ids=["killed-before-250", "killed-after-250"])
def test_sigkill_mid_data_then_restart_delivers_every_report_under_one_message_id(db_url, accept_first):
    db = Database.open(db_url)
    server = BlockingServer(accept_first=accept_first)
    server.controller.start()
    proc = None
    try:
        ids = []
        with db.session() as s:
            for n in range(2):
                msg = build_message(subject=f"report {n}", sender="rw@rivalwatch.example",
                                    recipients=["ana@example.com"], html=f"<p>{n}</p>", text=str(n))
                ids.append(enqueue(s, kind="digest", message=msg, html=f"<p>{n}</p>").message_id)

        proc = subprocess.Popen(
            [sys.executable, "-c", SENDER, db_url, f"smtp://127.0.0.1:{server.port}"], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert server.in_data.wait(20), proc.communicate(timeout=5) if proc.poll() is not None else "no DATA"
        with db.session() as s:  # the claim was committed before the server was spoken to
            rows = [s.query(OutboxMessage).filter_by(message_id=m).one() for m in ids]
            statuses = [r.status for r in rows]
            lease_end = rows[0].next_attempt_at
        assert statuses == ["sending", "pending"] and lease_end > datetime.now(UTC)

        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        server.release.set()

        cfg = EmailConfig(smtp_url=f"smtp://127.0.0.1:{server.port}", timeout_s=5, to=["ana@example.com"],
                          **{"from": "rw@rivalwatch.example"})
        assert deliver_pending(db, cfg).sent == 1  # the second; the first is still under its claim
        report = deliver_pending(db, cfg, now=lease_end + timedelta(seconds=1))  # the killed claim expired
        assert report.sent == 1 and report.pending == 0

        got = server.message_ids()
        assert set(got) == set(ids)  # 0 lost, no other Message-ID
        assert got.count(ids[1]) == 1
        assert got.count(ids[0]) == (2 if accept_first else 1)  # a duplicate only after the server's 250
        with db.session() as s:
            rows = s.query(OutboxMessage).order_by(OutboxMessage.id).all()
            assert [(r.status, r.attempts) for r in rows] == [("sent", 2), ("sent", 1)]
        assert deliver_pending(db, cfg, now=datetime.now(UTC) + timedelta(days=1)).sent == 0
    finally:
        server.release.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.controller.stop()
        db.close()
