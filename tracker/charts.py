"""Small price-history charts for the report: 30 days of observation spans -> a PNG of a few KB.

Mail clients show no SVG and run no script, so a chart is a PNG attached inline and referenced by
Content-ID. It is drawn with matplotlib's Agg backend (no display), at twice its displayed size for sharp
phones, on a white background (it stays legible when a client darkens the mail around it), and
quantized to a small palette so it weighs ~3-8 KB.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tracker.models import Observation

WIDTH_PX, HEIGHT_PX = 320, 96       # displayed size in the mail (CSS pixels)
SCALE = 2                           # drawn at 2x for high-density screens
LINE = "#1a56db"
OWN_LINE = "#8a94a6"
TEXT = "#5f6b7a"


@dataclass(frozen=True)
class Series:
    """A step series: the price from each point's time until the next point."""

    points: tuple[tuple[datetime, Decimal], ...]

    @property
    def empty(self) -> bool:
        return not self.points


def price_series(session: Session, target_ids: Iterable[int], *, since: datetime, until: datetime
                 ) -> dict[int, Series]:
    """Each target's price over [since, until] from its `ok` spans, at their check slots (failed checks
    leave the line as it was)."""
    ids = list(dict.fromkeys(target_ids))
    if not ids:
        return {}
    # Four columns, not whole rows; each target's spans are a range of ix_observations_target_id_id.
    spans = session.execute(
        select(Observation.target_id, Observation.first_slot, Observation.last_slot, Observation.price)
        .where(Observation.target_id.in_(ids), Observation.status == "ok", Observation.price.is_not(None),
               Observation.last_slot >= since)
        .order_by(Observation.target_id, Observation.id)).all()
    raw: dict[int, list[tuple[datetime, Decimal]]] = {i: [] for i in ids}
    last_seen: dict[int, datetime] = {}
    for target_id, first_slot, last_slot, price in spans:
        assert price is not None
        # Slots, not wall-clock times: a check is "the 07:00 check" even when it ran at 07:03.
        raw[target_id].append((max(first_slot, since), price))
        last_seen[target_id] = last_slot
    out = {}
    for target_id, points in raw.items():
        if points:
            # The line runs on to the last check (or now: an unchanged price is still the price).
            end = min(until, max(last_seen[target_id], points[-1][0]))
            points.append((max(end, points[-1][0]), points[-1][1]))
        out[target_id] = Series(tuple(points))
    return out


def price_chart(series: Series, *, since: datetime, until: datetime, own: Series | None = None,
                money: Callable[[Decimal], str] = str, day: Callable[[datetime], str] = lambda d: d.strftime("%d %b"),
                own_label: str = "") -> bytes:
    """The PNG of one product's price over [since, until]; `own` (dashed grey) is the own shop's price."""
    from matplotlib.figure import Figure  # heavy: imported only when a report draws charts

    # A history shorter than the window fills the chart rather than hugging its right edge.
    firsts = [s.points[0][0] for s in (series, own) if s is not None and not s.empty]
    if firsts and min(firsts) > since:
        since = min(firsts) - (until - min(firsts)) * 0.04
    fig = Figure(figsize=(WIDTH_PX / 100, HEIGHT_PX / 100), dpi=100 * SCALE, facecolor="white")
    ax = fig.add_axes((0.015, 0.2, 0.72, 0.76))
    prices: list[Decimal] = []
    for s, color, style, width in ((own, OWN_LINE, (0, (3, 2)), 1.0), (series, LINE, "-", 1.6)):
        if s is None or s.empty:
            continue
        xs = [t for t, _ in s.points]
        ys = [float(p) for _, p in s.points]
        ax.step(xs, ys, where="post", color=color, linestyle=style, linewidth=width, solid_capstyle="round")
        prices += [p for _, p in s.points]
    if not series.empty:
        t_last, p_last = series.points[-1]
        ax.plot([t_last], [float(p_last)], marker="o", markersize=3.2, color=LINE)
    ax.set_xlim(since, until)
    if prices:
        low, high = float(min(prices)), float(max(prices))
        pad = (high - low) * 0.15 or max(high * 0.05, 0.5)
        ax.set_ylim(low - pad, high + pad)
        ticks = sorted({min(prices), max(prices)})
        ax.set_yticks([float(t) for t in ticks], [money(t) for t in ticks])
    ax.yaxis.tick_right()
    ax.set_xticks([since, until], [day(since), day(until)])
    ax.tick_params(axis="both", labelsize=6.5, colors=TEXT, length=0, pad=2)
    for label, align in zip(ax.get_xticklabels(), ("left", "right")):
        label.set_horizontalalignment(align)
    for name, spine in ax.spines.items():
        spine.set_visible(name == "bottom")
        spine.set_color("#d0d5dd")
    ax.grid(axis="y", color="#eef0f3", linewidth=0.6)
    ax.set_facecolor("white")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return _quantize(buf.getvalue())


def _quantize(png: bytes, colors: int = 24) -> bytes:
    """Shrink an antialiased RGBA chart to a small palette PNG (a third of the size, same look)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def window(now: datetime, days: int) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now
