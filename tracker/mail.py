"""E-mail delivery: build a report message, keep it in the database outbox, send it exactly once.

Life of a message
-----------------
1. `build_message()` makes the whole RFC 5322 message (text + HTML alternative, inline images as
   multipart/related, attachments) with a Message-ID made once.
2. `enqueue()` stores it, bytes and all, in the `outbox` table (status `pending`, due now) in the caller's
   transaction: the report is durable *before* anything is sent.
3. `deliver_pending()` sends every due message, oldest first, with the stored bytes unchanged, and marks it
   `sent` only after the SMTP server accepted it. Without an SMTP server configured, each message is
   written to `outbox_dir` as `.eml` + `.html` and marked `written`.
4. A failure (server down, refusing, timing out) leaves the message `pending` with `last_error` and
   `next_attempt_at` pushed back exponentially (1 min, 2, 4, ... capped at 1 h). The schedule lives in the
   database, so it survives restarts. After `max_attempts` the message is `failed`: listed by
   `tracker outbox`, re-queued by `retry()`.

Statuses: pending -> sending -> sent (SMTP) | pending -> written (no SMTP) | pending -> failed -> pending.

Why "exactly once" means what it means here
-------------------------------------------
SMTP has no two-phase commit: the server says 250 ("accepted, now my responsibility") and only after that
can we write `sent` in our database. A process killed (SIGKILL, power loss) between the two leaves the
database saying "maybe sent". No protocol trick removes that window; what we can choose is which way to
err, and losing a report is worse than a duplicate that receivers can recognise. So:

* Before talking to the server, the message is claimed: status `sending`, committed. Its
  `next_attempt_at` becomes the end of a claim lease (`claim_lease()`, several SMTP timeouts), so a second
  deliverer running at the same time leaves it alone while the first is still working on it.
* After the server's 250, the status becomes `sent` (with `sent_at`) in its own transaction.
* A message still `sending` once its lease is over was interrupted at an unknown point. It is sent again,
  with the SAME stored bytes, hence the SAME Message-ID.

Guarantees that follow:

* None lost: a message is `sent` only after a server accepted it; every other state is retried.
* Never sent twice with different Message-IDs: the bytes are built once and never rebuilt.
* A duplicate is only possible when the process dies (or the connection breaks or times out) in the window
  between the server's 250 and our commit; it then carries the same Message-ID, so mail stores and
  threading clients (and our tests) recognise it as the same message.
"""

from __future__ import annotations

import base64
import logging
import os
import smtplib
import socket
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tracker.config import EmailConfig
from tracker.db import Database
from tracker.errors import DeliveryError
from tracker.models import OutboxMessage

__all__ = [
    "DeliveryReport",
    "OutboxRow",
    "backoff",
    "build_message",
    "claim_lease",
    "deliver_pending",
    "enqueue",
    "list_outbox",
    "retry",
]

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, WRITTEN, FAILED = "pending", "sending", "sent", "written", "failed"
OPEN_STATUSES = (PENDING, SENDING, FAILED)
DUE_STATUSES = (PENDING, SENDING)

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)


# ----------------------------------------------------------------------------------------------------------
# Building and storing


def build_message(
    *,
    subject: str,
    sender: str,
    recipients: list[str],
    html: str,
    text: str,
    inline_images: dict[str, bytes] | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    message_id: str | None = None,
) -> EmailMessage:
    """The whole message: multipart/alternative (text, then HTML); the HTML part becomes multipart/related
    with the PNGs of `inline_images` (Content-ID -> bytes, referenced in the HTML as `cid:<Content-ID>`);
    with `attachments` ((filename, mime type, data)) everything is wrapped in multipart/mixed.

    The Date header is in UTC. The Message-ID is made here, once (domain taken from the sender), unless
    one is given; it is stored with the message and reused on every retry."""
    sender_addr = parseaddr(sender)[1]
    if "@" not in sender_addr:
        raise ValueError(f"sender {sender!r} is not an e-mail address")
    msg = EmailMessage(policy=policy.SMTP)
    msg["Subject"] = subject
    msg["From"] = sender
    if recipients:
        msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain=sender_addr.rsplit("@", 1)[1])
    msg["MIME-Version"] = "1.0"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    if inline_images:
        html_part = msg.get_payload()[1]  # type: ignore[index]
        for cid, data in inline_images.items():
            html_part.add_related(data, maintype="image", subtype="png", cid=f"<{cid.strip('<>')}>",
                                  disposition="inline", filename=f"{cid.strip('<>')}.png")
    for filename, mime_type, data in attachments:
        maintype, _, subtype = mime_type.partition("/")
        if not subtype:
            raise ValueError(f"attachment {filename!r}: {mime_type!r} is not a MIME type such as text/csv")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the email package repeats it on parts it wraps; only the top needs it
    return msg


def enqueue(session: Session, *, kind: str, message: EmailMessage, html: str) -> OutboxMessage:
    """Store `message` in the outbox (status pending, due now) in the caller's transaction.

    Recipients are read from To/Cc/Bcc (Bcc is removed from the stored bytes); the bytes stored are
    exactly what will be sent, on every attempt."""
    message_id = message["Message-ID"]
    if not message_id:
        raise ValueError("the message has no Message-ID; make it with build_message()")
    recipients = [addr for _, addr in getaddresses(message.get_all("To", []) + message.get_all("Cc", [])
                                                   + message.get_all("Bcc", [])) if addr]
    if "Bcc" in message:
        del message["Bcc"]
    now = _utcnow()
    row = OutboxMessage(
        kind=kind,
        message_id=str(message_id).strip(),
        subject=str(message.get("Subject", "")),
        recipients=list(dict.fromkeys(recipients)),
        mime=message.as_bytes(policy=policy.SMTP),
        html=html,
        created_at=now,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    return row


# ----------------------------------------------------------------------------------------------------------
# The outbox as seen by `tracker outbox`


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    subject: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    message_id: str = ""
    sent_at: datetime | None = None


def list_outbox(session: Session, *, include_sent: bool = False) -> list[OutboxRow]:
    """Messages not delivered yet (pending, sending, failed), oldest first; with `include_sent`, all."""
    query = select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.id)
    if not include_sent:
        query = query.where(OutboxMessage.status.in_(OPEN_STATUSES))
    return [
        OutboxRow(id=m.id, kind=m.kind, subject=m.subject, status=m.status, attempts=m.attempts,
                  last_error=m.last_error, created_at=m.created_at, next_attempt_at=m.next_attempt_at,
                  message_id=m.message_id, sent_at=m.sent_at)
        for m in session.scalars(query)
    ]


def retry(session: Session, message_id_or_pk: int | str) -> OutboxMessage:
    """Put a failed (or pending) message back in the queue, due now, with a fresh attempt budget.

    Accepts the row id (int or digits) or the Message-ID (with or without <>). A message already sent or
    written is refused: sending it again would be a duplicate."""
    key = message_id_or_pk
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key.strip())
    if isinstance(key, int):
        row = session.get(OutboxMessage, key)
    else:
        wanted = key.strip().strip("<>")
        row = session.scalar(select(OutboxMessage).where(
            OutboxMessage.message_id.in_([f"<{wanted}>", wanted])))
    if row is None:
        raise DeliveryError(f"no outbox message {message_id_or_pk!r}; `tracker outbox` lists them")
    if row.status in (SENT, WRITTEN):
        raise DeliveryError(f"outbox message {row.id} was already {row.status}; not sending it again")
    if row.status == SENDING:
        raise DeliveryError(f"outbox message {row.id} is being sent; if its sender died it is retried "
                            f"automatically after {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC")
    row.status = PENDING
    row.attempts = 0
    row.next_attempt_at = _utcnow()
    session.flush()
    return row


# ----------------------------------------------------------------------------------------------------------
# Delivery


@dataclass
class DeliveryReport:
    """What one `deliver_pending` run did.

    sent / written: messages delivered by this run; failed: messages whose delivery failed in this run
    (retried later, or given up as `failed` after max_attempts); pending: messages still waiting for
    delivery after the run (pending or sending, due or not); errors: one line per failure."""

    sent: int = 0
    written: int = 0
    failed: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failed tries: 1 min, 2, 4, ... capped at 1 h."""
    return min(BACKOFF_FIRST * (2 ** max(0, min(attempts - 1, 20))), BACKOFF_MAX)


def claim_lease(email_config: EmailConfig) -> timedelta:
    """How long a claimed (`sending`) message belongs to the process that claimed it. Longer than any
    SMTP conversation can take (smtplib's timeout applies per socket operation), so a live sender is
    never overtaken; once over, the message counts as interrupted and is sent again."""
    return max(timedelta(minutes=5), timedelta(seconds=10 * email_config.timeout_s))


def deliver_pending(db: Database, email_config: EmailConfig, *, now: datetime | None = None,
                    max_attempts: int = 20) -> DeliveryReport:
    """Send (or, without smtp_url, write to outbox_dir) every due message, oldest first.

    Due: status pending, or `sending` whose claim lease is over (an interrupted run), and
    next_attempt_at <= now. Never raises for a delivery failure: failures are recorded on the message
    (attempts, last_error without secrets, next_attempt_at) and counted in the report. See the module
    docstring for the exactly-once reasoning."""
    now = now or _utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    report = DeliveryReport()
    with db.session() as session:
        due = list(session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.status.in_(DUE_STATUSES), OutboxMessage.kind != "chat",
                   or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now))
            .order_by(OutboxMessage.created_at, OutboxMessage.id)))
    if due:
        if email_config.smtp_url:
            _deliver_smtp(db, email_config, due, now, max_attempts, report)
        else:
            _deliver_files(db, email_config, due, now, max_attempts, report)
    with db.session() as session:
        report.pending = len(session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.status.in_(DUE_STATUSES),
                                           OutboxMessage.kind != "chat")).all())
    return report


# --- files ------------------------------------------------------------------------------------------------


def _deliver_files(db: Database, cfg: EmailConfig, due: list[int], now: datetime, max_attempts: int,
                   report: DeliveryReport) -> None:
    outbox = Path(cfg.outbox_dir)
    for pk in due:
        with db.session() as session:
            row = session.get(OutboxMessage, pk)
            if row is None or row.status not in DUE_STATUSES:
                continue
            created, mime, html = row.created_at, row.mime, row.html
        stem = f"{created:%Y%m%dT%H%M%SZ}-{pk}"
        try:
            outbox.mkdir(parents=True, exist_ok=True)
            # Same name on every attempt: a write interrupted before the commit below is simply redone.
            _write_atomically(outbox / f"{stem}.html", html.encode("utf-8"))
            _write_atomically(outbox / f"{stem}.eml", mime)
        except OSError as exc:
            _record_failure(db, pk, f"cannot write to outbox folder {outbox}: {exc}", now, max_attempts,
                            report, claimed=False)
            continue
        with db.session() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == pk, OutboxMessage.status.in_(DUE_STATUSES))
                .values(status=WRITTEN, sent_at=_utcnow(), last_error=None, next_attempt_at=None)
                .execution_options(synchronize_session=False))
        report.written += 1
        log.info("outbox message %s written to %s", pk, outbox / f"{stem}.eml")


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# --- SMTP -------------------------------------------------------------------------------------------------


class _ConnectionFailed(Exception):
    """The server cannot be used at all (down, TLS, login): every remaining message would fail alike."""


def _deliver_smtp(db: Database, cfg: EmailConfig, due: list[int], now: datetime, max_attempts: int,
                  report: DeliveryReport) -> None:
    secrets = _secrets(cfg)
    envelope_from = parseaddr(cfg.from_)[1] or cfg.from_
    lease = claim_lease(cfg)
    smtp: smtplib.SMTP | None = None
    try:
        for index, pk in enumerate(due):
            claimed = _claim(db, pk, now, lease)
            if claimed is None:
                continue  # delivered or claimed by another process meanwhile
            recipients, mime, message_id = claimed
            if not recipients:
                _record_failure(db, pk, "the message has no recipients (email.to is empty)", now, 1,
                                report, claimed=True)
                continue
            try:
                if smtp is None:
                    smtp = _connect(cfg, secrets)
                refused = smtp.sendmail(envelope_from, recipients, mime)
            except smtplib.SMTPRecipientsRefused as exc:
                _record_failure(db, pk, _redact(_describe_refused(exc.recipients, all_refused=True),
                                                secrets), now, max_attempts, report, claimed=True)
                continue
            except smtplib.SMTPResponseException as exc:  # e.g. 451 on DATA, 5xx on MAIL FROM
                _record_failure(db, pk, _redact(_describe(exc, cfg), secrets), now, max_attempts, report,
                                claimed=True)
                if exc.smtp_code == 421:  # "closing connection": smtplib closed it, open a new one
                    smtp = _close(smtp)
                continue
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is recorded, never left 'sending'
                # Down, timed out, disconnected, TLS or login failed (or anything unexpected): the
                # connection is unusable and the rest would fail the same way; record it on all, stop.
                smtp = _close(smtp)
                error = _redact(_describe(exc, cfg), secrets)
                _record_failure(db, pk, error, now, max_attempts, report, claimed=True)
                for other in due[index + 1:]:
                    _record_failure(db, other, f"not tried, the server failed: {error}", now, max_attempts,
                                    report, claimed=False)
                return
            partial = _redact(_describe_refused(refused, all_refused=False), secrets) if refused else None
            with db.session() as session:
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == pk, OutboxMessage.status == SENDING)
                    .values(status=SENT, sent_at=_utcnow(), last_error=partial, next_attempt_at=None)
                    .execution_options(synchronize_session=False))
            report.sent += 1
            if partial:
                report.errors.append(f"outbox message {pk} {message_id}: {partial}")
                log.warning("outbox message %s sent, but %s", pk, partial)
            else:
                log.info("outbox message %s %s sent to %d recipient(s)", pk, message_id, len(recipients))
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()


def _claim(db: Database, pk: int, now: datetime, lease: timedelta) -> tuple[list[str], bytes, str] | None:
    """Mark the message `sending` (compare-and-set, committed) before talking to the server."""
    with db.session() as session:
        result = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == pk, OutboxMessage.status.in_(DUE_STATUSES),
                   or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now))
            .values(status=SENDING, attempts=OutboxMessage.attempts + 1, next_attempt_at=_utcnow() + lease)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        row = session.execute(select(OutboxMessage.recipients, OutboxMessage.mime, OutboxMessage.message_id)
                              .where(OutboxMessage.id == pk)).one()
        return list(row.recipients), bytes(row.mime), row.message_id


def _record_failure(db: Database, pk: int, error: str, now: datetime, max_attempts: int,
                    report: DeliveryReport, *, claimed: bool) -> None:
    """attempts (+1 if not counted by a claim), last_error, next_attempt_at = now + backoff; or `failed`."""
    with db.session() as session:
        row = session.get(OutboxMessage, pk, with_for_update=db.dialect == "postgresql")
        if row is None or row.status not in DUE_STATUSES:
            return
        if not claimed:
            row.attempts += 1
        row.last_error = error
        if row.attempts >= max_attempts:
            row.status = FAILED
            row.next_attempt_at = None
        else:
            row.status = PENDING
            row.next_attempt_at = now + backoff(row.attempts)
        status, attempts, next_at, message_id = row.status, row.attempts, row.next_attempt_at, row.message_id
    report.failed += 1
    report.errors.append(f"outbox message {pk} {message_id}: {error}")
    if status == FAILED:
        log.error("outbox message %s failed %d times, giving up until retried (see `tracker outbox`): %s",
                  pk, attempts, error)
    else:
        log.warning("outbox message %s not delivered (attempt %d), next try at %s: %s",
                    pk, attempts, f"{next_at:%Y-%m-%d %H:%M:%S} UTC", error)


def _connect(cfg: EmailConfig, secrets: list[str]) -> smtplib.SMTP:
    """An SMTP connection ready to send: SMTP_SSL for smtps://, STARTTLS when offered (or as forced),
    login when the URL names a user (password from the config, which reads it from the environment)."""
    assert cfg.smtp_url
    url = urlsplit(cfg.smtp_url)
    host = url.hostname or ""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    try:
        if url.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(host, url.port or 465, timeout=cfg.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(host, url.port or 25, timeout=cfg.timeout_s)
    except OSError as exc:
        raise _ConnectionFailed(f"cannot connect to {host}:{url.port or (465 if url.scheme == 'smtps' else 25)}"
                                f": {_describe(exc, cfg)}") from None
    try:
        smtp.ehlo()
        if url.scheme == "smtp" and cfg.starttls is not False:
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif cfg.starttls is True:
                raise _ConnectionFailed(f"{host} does not offer STARTTLS, and email.starttls is true")
        if url.username:
            if cfg.password is None:
                raise _ConnectionFailed(f"the SMTP URL names user {unquote(url.username)!r} but "
                                        f"email.password is not set (e.g. ${{TRACKER_SMTP_PASSWORD}})")
            try:
                _login(smtp, unquote(url.username), cfg.password.get_secret_value())
            except smtplib.SMTPAuthenticationError as exc:
                raise _ConnectionFailed(f"login as {unquote(url.username)!r} refused: "
                                        f"{_redact(_describe(exc, cfg), secrets)}") from None
            except smtplib.SMTPNotSupportedError:
                raise _ConnectionFailed(f"{host} does not offer AUTH (needs TLS? check email.starttls)"
                                        ) from None
        return smtp
    except BaseException:
        _close(smtp)
        raise


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """smtplib's login, except that a non-ASCII user or password (which smtplib cannot encode) goes as
    UTF-8 through AUTH PLAIN (RFC 4616)."""
    if user.isascii() and password.isascii():
        smtp.login(user, password)
        return
    mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    if "PLAIN" not in mechanisms:
        raise _ConnectionFailed("the user or password is not ASCII, which needs AUTH PLAIN, and the server "
                                f"offers only {' '.join(mechanisms) or 'no mechanism'}")
    token = base64.b64encode(f"\0{user}\0{password}".encode("utf-8")).decode("ascii")
    code, reply = smtp.docmd("AUTH", f"PLAIN {token}")
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, reply)


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError:
            pass
    return None


def _describe(exc: BaseException, cfg: EmailConfig) -> str:
    if isinstance(exc, _ConnectionFailed):
        return str(exc)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {cfg.timeout_s:g} s (email.timeout_s)"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        return f"server replied {exc.smtp_code} {text}".strip()
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"server disconnected: {exc}" if str(exc) else "server disconnected"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _describe_refused(refused: dict[str, tuple[int, bytes]], *, all_refused: bool) -> str:
    parts = [f"{addr} ({code} {msg.decode('utf-8', 'replace') if isinstance(msg, bytes) else msg})"
             for addr, (code, msg) in refused.items()]
    return ("all recipients refused: " if all_refused else "recipients refused: ") + ", ".join(parts)


def _secrets(cfg: EmailConfig) -> list[str]:
    """The password and the forms it takes on the wire (AUTH PLAIN / LOGIN base64), to scrub from errors."""
    if cfg.password is None:
        return []
    password = cfg.password.get_secret_value()
    if not password:
        return []
    user = unquote(urlsplit(cfg.smtp_url or "").username or "")
    forms = [password, base64.b64encode(password.encode()).decode(),
             base64.b64encode(f"\0{user}\0{password}".encode()).decode(), repr(password)[1:-1]]
    return sorted({f for f in forms if f}, key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _utcnow() -> datetime:
    return datetime.now(UTC)

