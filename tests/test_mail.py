"""E-mail delivery against a real SMTP server (aiosmtpd on 127.0.0.1) and a real database (SQLite in
tmp_path; PostgreSQL in a database made for this test session): stored before sending, sent once, retried
with backoff, written to a folder without SMTP, no secret in errors or logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import logging
import socket
import ssl
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from pydantic import SecretStr
from sqlalchemy import update

from tracker.config import EmailConfig
from tracker.db import Database
from tracker.mail import (
    backoff,
    build_message,
    claim_lease,
    deliver_pending,
    enqueue,
    list_outbox,
    retry,
)
from tracker.models import OutboxMessage

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
PASSWORD = "s3cr3t-Pa55-\u00e9t\u00e9-7781"


# ----------------------------------------------------------------------------------------------------------
# A real SMTP server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An aiosmtpd server whose replies are scripted: `rcpt_replies` / `data_replies` are consumed one per
    command ("250 OK" once empty); a reply may be a number of seconds to sleep first, as (seconds, reply).
    `received` holds what was accepted (250 to DATA)."""

    def __init__(self, port: int | None = None, **smtp_kwargs):
        self.port = port or free_port()
        self.rcpt_replies: dict[str, list[str]] = {}
        self.data_replies: list[str | tuple[float, str]] = []
        self.received: list[tuple[str, list[str], bytes, bool]] = []  # from, to, content, over TLS
        self.logins: list[tuple[str, str]] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **smtp_kwargs)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        replies = self.rcpt_replies.get(address)
        if replies:
            return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply: str | tuple[float, str] = self.data_replies.pop(0) if self.data_replies else "250 OK"
        if isinstance(reply, tuple):
            await asyncio.sleep(reply[0])
            reply = reply[1]
        if reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                  server.transport.get_extra_info("ssl_object") is not None))
        return reply

    def message_ids(self) -> list[str]:
        return [str(email.message_from_bytes(content, policy=policy.default)["Message-ID"])
                for _, _, content, _ in self.received]

    def start(self) -> "Server":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def server():
    srv = Server().start()
    yield srv
    srv.stop()


def smtp_config(port: int, tmp_path: Path, **kw) -> EmailConfig:
    values = dict(smtp_url=f"smtp://127.0.0.1:{port}", timeout_s=3, to=["ana@example.com", "bo@example.com"],
                  outbox_dir=tmp_path / "outbox")
    values.update(kw)
    values.setdefault("from_", "Rivalwatch <reports@rivalwatch.example>")
    return EmailConfig(**values)


# ----------------------------------------------------------------------------------------------------------
# Databases


def open_db(kind: str, tmp_path: Path, request) -> Database:
    if kind == "sqlite":
        return Database.open(f"sqlite:///{tmp_path / 'tracker.db'}")
    return Database.open(request.getfixturevalue("pg_url"))  # a fresh database (tests/conftest.py)


@pytest.fixture
def db(tmp_path, request):
    database = open_db("sqlite", tmp_path, request)
    yield database
    database.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(tmp_path, request):
    database = open_db(request.param, tmp_path, request)
    yield database
    database.close()


def queue_report(db: Database, cfg: EmailConfig, subject: str = "Rivalwatch: 3 changes") -> tuple[int, str]:
    msg = build_message(
        subject=subject, sender=cfg.from_, recipients=list(cfg.to),
        html='<h1>3 changes</h1><p>Price down 10%</p><img src="cid:chart-1" alt="chart">',
        text="3 changes\nPrice down 10%", inline_images={"chart-1": PNG},
        attachments=[("changes.csv", "text/csv", b"target,old,new\nwidget,10.00,9.00\n")])
    with db.session() as s:
        row = enqueue(s, kind="digest", message=msg, html="<h1>3 changes</h1>")
        return row.id, row.message_id


def load(db: Database, pk: int) -> OutboxMessage:
    with db.session() as s:
        return s.get(OutboxMessage, pk)


def later(**kw) -> datetime:
    return datetime.now(UTC) + timedelta(**kw)


# ----------------------------------------------------------------------------------------------------------
# Delivery


def test_report_is_delivered_once_with_its_stored_message_id_text_html_and_inline_image(any_db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path)
    pk, message_id = queue_report(any_db, cfg)
    assert load(any_db, pk).status == "pending"  # stored before anything is sent

    report = deliver_pending(any_db, cfg)

    assert (report.sent, report.failed, report.pending, report.errors) == (1, 0, 0, [])
    assert len(server.received) == 1
    mail_from, rcpt_tos, content, _ = server.received[0]
    row = load(any_db, pk)
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1 and row.last_error is None
    assert content.rstrip(b"\r\n") == row.mime.rstrip(b"\r\n")  # the stored bytes, unchanged
    assert (mail_from, rcpt_tos) == ("reports@rivalwatch.example", ["ana@example.com", "bo@example.com"])
    msg = email.message_from_bytes(content, policy=policy.default)
    assert msg["Message-ID"] == message_id and message_id.endswith("@rivalwatch.example>")
    assert msg["Date"].datetime.utcoffset() == timedelta(0)
    assert msg.get_body(("plain",)).get_content().startswith("3 changes")
    html = msg.get_body(("html",))
    assert 'src="cid:chart-1"' in html.get_content()
    alternative = next(p for p in msg.walk() if p.get_content_type() == "multipart/alternative")
    related = next(p for p in alternative.iter_parts() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<chart-1>" and image.get_content() == PNG
    csv = next(msg.iter_attachments())
    assert csv.get_filename() == "changes.csv" and csv.get_content().startswith("target,old,new")

    again = deliver_pending(any_db, cfg, now=later(hours=2))
    assert (again.sent, len(server.received)) == (0, 1)


def test_smtp_down_keeps_message_pending_with_backoff_then_delivers_once(db, tmp_path):
    port = free_port()  # nothing listening
    cfg = smtp_config(port, tmp_path)
    pk, message_id = queue_report(db, cfg)
    t0 = datetime.now(UTC)

    report = deliver_pending(db, cfg, now=t0)

    row = load(db, pk)
    assert (report.sent, report.failed, report.pending) == (0, 1, 1)
    assert row.status == "pending" and row.attempts == 1
    assert "cannot connect" in row.last_error and "refused" in row.last_error.lower()
    assert row.next_attempt_at == t0 + timedelta(minutes=1)

    srv = Server(port).start()
    try:
        not_yet = deliver_pending(db, cfg, now=t0 + timedelta(seconds=30))  # still backing off
        assert (not_yet.sent, load(db, pk).attempts, srv.received) == (0, 1, [])

        back = deliver_pending(db, cfg, now=t0 + timedelta(seconds=61))
        assert (back.sent, back.pending) == (1, 0)
        deliver_pending(db, cfg, now=t0 + timedelta(hours=3))
        assert srv.message_ids() == [message_id]
        assert load(db, pk).status == "sent"
    finally:
        srv.stop()


@pytest.mark.parametrize("where, reply", [("data", "451 4.3.0 try later"),
                                          ("rcpt", "550 5.1.1 mailbox unavailable")])
def test_server_refusing_then_accepting_delivers_exactly_once(db, server, tmp_path, where, reply):
    cfg = smtp_config(server.port, tmp_path, to=["ana@example.com"])
    if where == "data":
        server.data_replies = [reply]
    else:
        server.rcpt_replies = {"ana@example.com": [reply]}
    pk, message_id = queue_report(db, cfg)
    t0 = datetime.now(UTC)

    first = deliver_pending(db, cfg, now=t0)

    row = load(db, pk)
    assert (first.sent, first.failed, row.status, server.received) == (0, 1, "pending", [])
    assert reply.split()[0] in row.last_error and row.next_attempt_at > t0
    if where == "rcpt":
        assert "all recipients refused" in row.last_error and "ana@example.com" in row.last_error

    second = deliver_pending(db, cfg, now=t0 + timedelta(minutes=2))
    third = deliver_pending(db, cfg, now=t0 + timedelta(hours=2))
    assert (second.sent, third.sent) == (1, 0)
    assert server.message_ids() == [message_id]
    assert load(db, pk).attempts == 2


def test_server_timing_out_keeps_message_pending_and_sends_it_once_later(db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path, timeout_s=0.5)
    server.data_replies = [(1.5, "451 4.4.2 gave up")]  # hangs past our timeout, then drops it
    pk, message_id = queue_report(db, cfg)
    t0 = datetime.now(UTC)

    first = deliver_pending(db, cfg, now=t0)

    row = load(db, pk)
    assert (first.failed, row.status) == (1, "pending")
    assert "timed out" in row.last_error and row.next_attempt_at == t0 + timedelta(minutes=1)
    deliver_pending(db, cfg, now=t0 + timedelta(minutes=1))
    deliver_pending(db, cfg, now=t0 + timedelta(hours=1))
    assert server.message_ids() == [message_id]
    assert load(db, pk).status == "sent"


def test_partial_recipient_refusal_is_recorded_but_counts_as_sent(db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path)
    server.rcpt_replies = {"bo@example.com": ["550 5.1.1 no such user"]}
    pk, _ = queue_report(db, cfg)

    report = deliver_pending(db, cfg)

    row = load(db, pk)
    assert (report.sent, report.failed, row.status) == (1, 0, "sent")
    assert "bo@example.com" in row.last_error and "550" in row.last_error
    assert [r[1] for r in server.received] == [["ana@example.com"]]
    assert deliver_pending(db, cfg, now=later(hours=2)).sent == 0


def test_without_smtp_reports_are_written_as_eml_and_html_once(db, tmp_path):
    cfg = EmailConfig(to=["ana@example.com"], outbox_dir=tmp_path / "outbox")
    pk, message_id = queue_report(db, cfg)

    report = deliver_pending(db, cfg)

    row = load(db, pk)
    assert (report.written, report.sent, row.status) == (1, 0, "written")
    files = sorted((tmp_path / "outbox").iterdir())
    stem = f"{row.created_at:%Y%m%dT%H%M%SZ}-{pk}"
    assert [f.name for f in files] == [f"{stem}.eml", f"{stem}.html"]  # and no temp files left
    assert (tmp_path / "outbox" / f"{stem}.eml").read_bytes() == row.mime
    assert (tmp_path / "outbox" / f"{stem}.html").read_text("utf-8") == row.html
    parsed = email.message_from_bytes(row.mime, policy=policy.default)
    assert parsed["Message-ID"] == message_id
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    again = deliver_pending(db, cfg, now=later(hours=2))

    assert again.written == 0
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "outbox").iterdir()} == mtimes


def test_message_left_sending_by_a_killed_process_is_resent_with_the_same_message_id(any_db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path)
    pk, message_id = queue_report(any_db, cfg)
    with any_db.session() as s:  # the state a SIGKILL between claim and "sent" leaves behind
        s.execute(update(OutboxMessage).where(OutboxMessage.id == pk)
                  .values(status="sending", attempts=1, next_attempt_at=later(minutes=-1)))
    stored = load(any_db, pk).mime

    report = deliver_pending(any_db, cfg)

    assert report.sent == 1
    assert server.message_ids() == [message_id]
    assert server.received[0][2].rstrip(b"\r\n") == stored.rstrip(b"\r\n")
    row = load(any_db, pk)
    assert (row.status, row.attempts) == ("sent", 2)


def test_message_claimed_by_a_live_sender_is_left_alone_until_its_lease_ends(db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path)
    pk, message_id = queue_report(db, cfg)
    lease_end = later() + claim_lease(cfg)
    with db.session() as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.id == pk)
                  .values(status="sending", attempts=1, next_attempt_at=lease_end))

    assert deliver_pending(db, cfg).sent == 0
    assert server.received == [] and load(db, pk).status == "sending"

    assert deliver_pending(db, cfg, now=lease_end + timedelta(seconds=1)).sent == 1
    assert server.message_ids() == [message_id]


def test_messages_go_oldest_first_over_one_connection(db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path)
    ids = [queue_report(db, cfg, subject=f"report {i}")[1] for i in range(3)]

    report = deliver_pending(db, cfg)

    assert report.sent == 3 and server.message_ids() == ids


def test_backoff_doubles_from_one_minute_and_is_capped_at_one_hour(db, tmp_path):
    assert [backoff(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 8, 60, 60, 60)]
    cfg = smtp_config(free_port(), tmp_path)
    pk, _ = queue_report(db, cfg)
    now = datetime.now(UTC)
    waits = []
    for _ in range(4):
        deliver_pending(db, cfg, now=now)
        nxt = load(db, pk).next_attempt_at
        waits.append(nxt - now)
        now = nxt
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8)]


def test_after_max_attempts_message_is_failed_listed_and_retry_sends_it(db, tmp_path):
    port = free_port()
    cfg = smtp_config(port, tmp_path)
    pk, message_id = queue_report(db, cfg)
    now = datetime.now(UTC)
    deliver_pending(db, cfg, now=now, max_attempts=2)
    last = deliver_pending(db, cfg, now=now + timedelta(hours=1), max_attempts=2)
    assert last.failed == 1 and last.pending == 0
    with db.session() as s:
        [row] = list_outbox(s)
    assert (row.id, row.status, row.attempts, row.kind) == (pk, "failed", 2, "digest")
    assert row.last_error and row.subject == "Rivalwatch: 3 changes"
    assert deliver_pending(db, cfg, now=now + timedelta(days=1)).failed == 0  # failed is not retried alone

    with db.session() as s:
        assert retry(s, message_id).status == "pending"
    srv = Server(port).start()
    try:
        assert deliver_pending(db, cfg, now=now + timedelta(days=1)).sent == 1
        assert srv.message_ids() == [message_id]
    finally:
        srv.stop()
    with db.session() as s:
        assert list_outbox(s) == []
        [sent] = list_outbox(s, include_sent=True)
        assert sent.status == "sent"
        with pytest.raises(Exception, match="already sent"):
            retry(s, pk)


def test_login_uses_the_url_user_and_the_configured_password(db, tmp_path):
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == PASSWORD, handled=False)

    srv = Server(authenticator=authenticator, auth_require_tls=False).start()
    try:
        cfg = smtp_config(srv.port, tmp_path, smtp_url=f"smtp://reports%40rw.example@127.0.0.1:{srv.port}",
                          password=SecretStr(PASSWORD))
        queue_report(db, cfg)
        assert deliver_pending(db, cfg).sent == 1
        assert logins == [("reports@rw.example", PASSWORD)] and len(srv.received) == 1
    finally:
        srv.stop()


def test_password_never_appears_in_last_error_or_logs(db, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)  # not handled: aiosmtpd replies 535

    srv = Server(authenticator=authenticator, auth_require_tls=False).start()
    try:
        cfg = smtp_config(srv.port, tmp_path, smtp_url=f"smtp://reports@127.0.0.1:{srv.port}",
                          password=SecretStr(PASSWORD))
        pk, _ = queue_report(db, cfg)
        report = deliver_pending(db, cfg)
    finally:
        srv.stop()
    row = load(db, pk)
    assert report.failed == 1 and row.status == "pending"
    assert "login as 'reports' refused" in row.last_error and "535" in row.last_error
    assert PASSWORD not in row.last_error and PASSWORD not in caplog.text
    assert PASSWORD not in " ".join(report.errors)
    assert "not delivered" in caplog.text  # the failure was logged, without the secret


def test_password_echoed_back_by_the_server_is_scrubbed_from_errors(db, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    srv = Server(authenticator=lambda *a: AuthResult(success=True), auth_require_tls=False).start()
    srv.data_replies = [f"451 4.3.0 temporary failure for password {PASSWORD}"]
    try:
        cfg = smtp_config(srv.port, tmp_path, smtp_url=f"smtp://reports@127.0.0.1:{srv.port}",
                          password=SecretStr(PASSWORD))
        pk, _ = queue_report(db, cfg)
        deliver_pending(db, cfg)
    finally:
        srv.stop()
    row = load(db, pk)
    assert "451" in row.last_error and "***" in row.last_error
    assert PASSWORD not in row.last_error and PASSWORD not in caplog.text


# ----------------------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def server_context(tls_files) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_files)
    return ctx


def test_starttls_is_used_when_the_server_offers_it_and_login_happens_inside(db, tmp_path, tls_files,
                                                                             monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))  # our test CA, through OpenSSL's default paths
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append(session.ssl is not None)
        return AuthResult(success=True)

    srv = Server(tls_context=server_context(tls_files), require_starttls=True,
                 authenticator=authenticator).start()  # AUTH only offered over TLS
    try:
        cfg = smtp_config(srv.port, tmp_path, smtp_url=f"smtp://reports@127.0.0.1:{srv.port}",
                          password=SecretStr(PASSWORD))
        queue_report(db, cfg)
        assert deliver_pending(db, cfg).sent == 1
        assert logins == [True] and [r[3] for r in srv.received] == [True]
    finally:
        srv.stop()


def test_smtps_url_talks_tls_from_the_first_byte(db, tmp_path, tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    srv = Server(ssl_context=server_context(tls_files))
    srv.start()
    try:
        cfg = smtp_config(srv.port, tmp_path, smtp_url=f"smtps://127.0.0.1:{srv.port}")
        _, message_id = queue_report(db, cfg)
        assert deliver_pending(db, cfg).sent == 1
        assert srv.message_ids() == [message_id] and srv.received[0][3] is True
    finally:
        srv.stop()


def test_forced_starttls_refuses_a_server_that_does_not_offer_it(db, server, tmp_path):
    cfg = smtp_config(server.port, tmp_path, starttls=True)
    pk, _ = queue_report(db, cfg)

    report = deliver_pending(db, cfg)

    assert report.failed == 1 and server.received == []
    assert "does not offer STARTTLS" in load(db, pk).last_error


def test_untrusted_certificate_is_a_failure_not_a_silent_downgrade(db, tmp_path, tls_files):
    srv = Server(tls_context=server_context(tls_files)).start()  # our CA is not trusted in this test
    try:
        cfg = smtp_config(srv.port, tmp_path)
        pk, _ = queue_report(db, cfg)
        assert deliver_pending(db, cfg).failed == 1
        assert srv.received == [] and "TLS failed" in load(db, pk).last_error
    finally:
        srv.stop()


# ----------------------------------------------------------------------------------------------------------
# Building and storing


def test_enqueue_stores_recipients_from_headers_and_a_fixed_message_id(db):
    msg = build_message(subject="Alert: price drop", sender="rw@shop.example", recipients=["a@x.example"],
                        html="<p>drop</p>", text="drop")
    msg["Cc"] = "C <c@x.example>"
    msg["Bcc"] = "hidden@x.example"
    with db.session() as s:
        row = enqueue(s, kind="alert", message=msg, html="<p>drop</p>")
    stored = load(db, row.id)
    assert stored.recipients == ["a@x.example", "c@x.example", "hidden@x.example"]
    assert b"hidden@x.example" not in stored.mime and stored.kind == "alert"
    assert stored.message_id.endswith("@shop.example>") and stored.status == "pending"
    assert stored.next_attempt_at is not None and stored.next_attempt_at <= datetime.now(UTC)
    given = build_message(subject="s", sender="rw@shop.example", recipients=["a@x.example"], html="<p/>",
                          text="", message_id="<fixed@shop.example>")
    assert given["Message-ID"] == "<fixed@shop.example>"
