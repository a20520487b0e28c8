"""Alert rules: changes that cannot wait for the morning digest go out at once, as a short message.

A rule (config `alerts.rules`, one of `when:` price_move | undercut | below_map | rank_drop) is a small
pure function of one change and what it concerns; `queue_alerts` runs them over the changes not yet
reported nor alerted, right after a check pass, and in ONE transaction stores a short e-mail (outbox kind
`alert`) and marks each matching change `data["alerted"] = <outbox id>`, so a change alerts once. Those
changes still appear in the digest, tagged "alerted": the digest stays the full record of the day.

Chat (Slack, Teams, Telegram, ... any Apprise URL in `alerts.chat`) gets the same short text after the
commit. Chat alerts go through the outbox like e-mail (kind "chat"): a chat service that is down gets them
later, with backoff, and once.

    alerts:
      chat: ["slack://T000/B000/XXXX", "tgram://bottoken/chatid"]
      rules:
        - {when: price_move, min_pct: 10, groups: [running]}
        - {when: undercut}
        - {when: below_map, prices: {TR2: 119.00}}
        - {when: rank_drop, min_places: 3, tags: [brand]}
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from tracker.models import Change, OutboxMessage, Rival, Target

if TYPE_CHECKING:
    from tracker.position import Offer, Position
    from tracker.app import QueuedReport
    from tracker.config import Config
    from tracker.db import Database
    from tracker.report import Formatter, Rendered

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PriceMoveRule(_Strict):
    """A rival's price moved by at least `min_pct` % (either way, or `direction`), in `groups` if given."""

    when: Literal["price_move"]
    name: str | None = None
    min_pct: Decimal = Field(gt=0, description="smallest |%| move that alerts")
    direction: Literal["any", "down", "up"] = "any"
    groups: list[str] = Field([], description="product groups (products' `group:`); empty: every product")
    rivals: list[str] = Field([], description="rival names; empty: every rival")


class UndercutRule(_Strict):
    """A rival's price went from at or above the own shop's price of the same product to below it."""

    when: Literal["undercut"]
    name: str | None = None
    groups: list[str] = []
    rivals: list[str] = []


class BelowMapRule(_Strict):
    """A price below the minimum advertised price of a product (keyed by the products' `match:` key)."""

    when: Literal["below_map"]
    name: str | None = None
    prices: dict[str, Decimal] = Field(description="match key -> minimum advertised price")
    currency: str | None = Field(None, description="only prices in this currency (default: any)")
    rivals: list[str] = []


class RankDropRule(_Strict):
    """The own site dropped `min_places` or more on a keyword with one of `tags` (leaving the results counts
    as dropping to just past the depth read)."""

    when: Literal["rank_drop"]
    name: str | None = None
    min_places: int = Field(3, ge=1)
    tags: list[str] = Field([], description="keywords' `tags:`; empty: every keyword")
    own_only: bool = Field(True, description="only the own domain's rank (false: rivals' drops too)")


AlertRule = Annotated[PriceMoveRule | UndercutRule | BelowMapRule | RankDropRule, Field(discriminator="when")]


class AlertsConfig(_Strict):
    """Changes that are sent at once instead of waiting for the digest."""

    rules: list[AlertRule] = []
    email: bool = Field(True, description="e-mail alerts (to `to`, else email.to)")
    to: list[str] = Field([], description="alert recipients; default: email.to")
    chat: list[str] = Field([], description="Apprise URLs (slack://, msteams://, tgram://, json://...)")


# ----------------------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class Hit:
    """A change that matched one or more rules, with why, in the report's language."""

    change_id: int
    rival: str
    target: str
    url: str | None
    label: str
    old: str
    new: str
    delta: str
    reasons: tuple[str, ...]


def _applies(rule: Any, target: Target, rival: Rival | None) -> bool:
    if getattr(rule, "rivals", None) and (rival is None or rival.name not in rule.rivals):
        return False
    if getattr(rule, "groups", None) and target.group not in rule.groups:
        return False
    return True


def evaluate(rule: Any, change: Change, target: Target, rival: Rival | None, fmt: Formatter,
             own: Offer | None = None) -> str | None:
    """Why `change` matches `rule` (one line in the report's language), or None."""
    d = change.data or {}
    if not _applies(rule, target, rival):
        return None
    if isinstance(rule, PriceMoveRule):
        if change.kind not in ("price_down", "price_up") or d.get("pct") is None or (rival is not None and rival.own):
            return None
        pct = Decimal(d["pct"])
        if abs(pct) < rule.min_pct or (rule.direction == "down" and pct > 0) or (rule.direction == "up" and pct < 0):
            return None
        return fmt.t("rule_price_move", pct=fmt.pct(pct), min=fmt.number(rule.min_pct))
    if isinstance(rule, UndercutRule):
        if rival is None:
            return None
        from tracker.position import Offer, undercut_of

        offer = Offer(target_id=target.id, rival=rival.name, own=bool(rival.own), name=target.name or "",
                      url=target.url, price=None, currency=None)
        undercut = undercut_of(offer, own, change.kind, d)
        return fmt.t("rule_undercut", own=fmt.money(undercut.own_price, undercut.currency)) if undercut else None
    if isinstance(rule, BelowMapRule):
        if change.kind not in ("price_down", "price_up") or not target.match_key or d.get("new") is None:
            return None
        floor = rule.prices.get(target.match_key)
        currency = d.get("currency")
        if floor is None or (rule.currency and currency and currency != rule.currency):
            return None
        if Decimal(d["new"]) < floor:
            return fmt.t("rule_below_map", map=fmt.money(floor, rule.currency or currency))
        return None
    if isinstance(rule, RankDropRule):
        if target.kind != "serp" or change.kind not in ("rank_down", "left_top"):
            return None
        if rule.own_only and not d.get("own"):
            return None
        tags = set((target.spec or {}).get("tags") or [])
        if rule.tags and not tags & set(rule.tags):
            return None
        past = int(d.get("depth") or 100) + 1
        old = d.get("old") if d.get("old") is not None else past
        new = d.get("new") if d.get("new") is not None else past
        drop = int(new) - int(old)
        if drop < rule.min_places:
            return None
        term = target.name or (target.spec or {}).get("term") or target.key
        who = d.get("label") or d.get("domain") or ""
        return (f"{who}: " if not d.get("own") else "") + fmt.t(
            "rule_rank_drop", drop, term=term, old=f"#{d['old']}" if d.get("old") else "–",
            new=f"#{d['new']}" if d.get("new") else "–")
    return None


def find_hits(session: Any, config: Config, fmt: Formatter, rows: list[tuple[Change, Target, Rival | None]],
              rules: list[Any]) -> list[tuple[Change, Hit]]:
    """The changes among `rows` that match at least one rule."""
    from tracker.report import _describe

    position: Position | None = None
    if any(isinstance(r, UndercutRule) for r in rules):
        from tracker.position import position_of

        position = position_of(session)
    hits = []
    for change, target, rival in rows:
        own = position.own_of.get(target.id) if position else None
        reasons = [why for rule in rules if (why := evaluate(rule, change, target, rival, fmt, own))]
        if not reasons:
            continue
        described = _describe(change.kind, change.data or {}, fmt)
        delta = described["delta"] + (f" ({described['pct']})" if described["pct"] else "")
        hits.append((change, Hit(change_id=change.id, rival=rival.name if rival else "",
                                 target=target.name or target.url or target.key, url=target.url,
                                 label=described["label"], old=described["old"], new=described["new"],
                                 delta=delta, reasons=tuple(dict.fromkeys(reasons)))))
    return hits


# ----------------------------------------------------------------------------------------------------------
# Queueing and chat


def render_alert(hits: list[Hit], config: Config, fmt: Formatter, *, now: datetime | None = None) -> Rendered:
    """The short alert message: what matched, why, a link; everything else waits for the digest."""
    from tracker.report import _INLINER, Rendered, environment

    now = now or datetime.now(UTC)
    env = environment()
    alert = {"lang": fmt.language, "title": fmt.t("alert_title", when=fmt.when(now)),
             "intro": fmt.t("alert_intro", len(hits)), "footer": fmt.t("alert_footer"),
             "open_page": fmt.t("open_page"), "hits": hits}
    html = _INLINER.inline(env.get_template("_alert.html.j2").render({"alert": alert}))
    text = env.get_template("_alert.txt.j2").render({"alert": alert})
    return Rendered(subject=fmt.t("alert_subject", len(hits)), html=html, text=text, mail_html=html)


def queue_alerts(config: Config, db: Database, *, now: datetime | None = None) -> list[QueuedReport]:
    """Queue one short alert e-mail for the changes (not yet reported nor alerted) that match a rule, mark
    them alerted in the same transaction, then notify chat. Returns the queued e-mails ([] when none)."""
    from tracker.app import QueuedReport
    from tracker.mail import enqueue
    from tracker.report import Formatter

    settings = config.alerts
    if not settings.rules:
        return []
    fmt = Formatter(config.locale, config.tz)
    queued: list[QueuedReport] = []
    with db.session() as session:
        rows = [tuple(r) for r in session.execute(
            select(Change, Target, Rival)
            .join(Target, Target.id == Change.target_id)
            .outerjoin(Rival, Rival.id == Target.rival_id)
            .where(Change.report_id.is_(None))
            .order_by(Change.id)
            .with_for_update(of=Change))]  # two passes finishing together alert a change once
        fresh = [r for r in rows if not (r[0].data or {}).get("alerted")]
        hits = find_hits(session, config, fmt, fresh, list(settings.rules))  # type: ignore[arg-type]
        if not hits:
            return []
        rendered = render_alert([h for _, h in hits], config, fmt, now=now)
        recipients = list(settings.to or config.email.to)
        mark: int | str = "chat"
        if settings.email and recipients:
            row = enqueue(session, kind="alert", message=rendered.message(config, recipients=recipients),
                          html=rendered.html)
            mark = row.id
            queued.append(QueuedReport(row.id, row.message_id, len(hits), rendered))
        if settings.chat:
            # Chat goes through the outbox too: kept, retried with backoff, sent once (deliver_chat).
            chat_row = OutboxMessage(kind="chat", message_id=f"chat-{uuid.uuid4().hex}", subject=rendered.subject,
                                     recipients=[], mime=rendered.text.encode("utf-8"), html=rendered.text,
                                     created_at=now or datetime.now(UTC), status="pending",
                                     next_attempt_at=now or datetime.now(UTC))
            session.add(chat_row)
            session.flush()
            if mark == "chat":
                mark = chat_row.id
        for change, _ in hits:
            change.data = {**(change.data or {}), "alerted": mark}  # a new dict: JSON columns track assignment
    if settings.chat:
        deliver_chat(config, db, now=now)
    return queued


def deliver_chat(config: Config, db: Database, *, now: datetime | None = None, max_attempts: int = 20) -> int:
    """Send the chat alerts due in the outbox to every `alerts.chat` URL; mark each sent only when Apprise
    delivered it, else retry later with the e-mail outbox's backoff. Returns how many were sent."""
    from tracker.mail import backoff

    settings = config.alerts
    now = now or datetime.now(UTC)
    with db.session() as session:
        due = session.execute(
            select(OutboxMessage.id, OutboxMessage.subject, OutboxMessage.html, OutboxMessage.attempts)
            .where(OutboxMessage.kind == "chat", OutboxMessage.status == "pending",
                   or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now))
            .order_by(OutboxMessage.id)).all()
    sent = 0
    for pk, title, body, attempts in due:
        ok = bool(settings.chat) and notify_chat(settings.chat, title, body)
        with db.session() as session:
            row = session.get(OutboxMessage, pk)
            if row is None or row.status != "pending":
                continue
            row.attempts = attempts + 1
            if ok:
                row.status, row.sent_at, row.last_error = "sent", datetime.now(UTC), None
                sent += 1
            else:
                row.last_error = "chat service did not accept the notification" if settings.chat \
                    else "no alerts.chat URL configured"
                row.status = "failed" if row.attempts >= max_attempts else "pending"
                row.next_attempt_at = now + backoff(row.attempts)
    return sent


def notify_chat(urls: list[str], title: str, body: str) -> bool:
    """Send `body` to every Apprise URL; False (and a warning) when any of them failed."""
    import apprise

    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            log.warning("alerts.chat: %s is not an Apprise URL it can use", url.split("://", 1)[0] + "://...")
    if not len(notifier):
        return False
    ok = bool(notifier.notify(title=title, body=body[:3500]))
    if not ok:
        log.warning("alerts.chat: a chat notification failed (the e-mail alert is unaffected)")
    return ok
