"""Small price-history charts for the report: 30 days of observation spans -> a PNG of a few KB.

Mail clients show no SVG and run no script, so a chart is a PNG attached inline and referenced by
Content-ID. It is drawn at twice its displayed size for sharp phones, on a white background (it stays
legible when a client darkens the mail around it), and quantized to a small palette so it weighs ~2-8 KB.

The drawing is Pillow's, with the layout, sizes and font (DejaVu Sans) the charts had when matplotlib drew
them: matplotlib cost ~1 s to import and ~25 ms a chart, a report's charts most of its time; Pillow draws one
in a few ms. Lines are drawn 4x larger and scaled down (antialiasing), text at the final size (FreeType).
"""

from __future__ import annotations

import importlib.util
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

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


# The layout, in pixels of the PNG (matplotlib's: a 3.2 x 0.96 in figure at 200 dpi, axes at (0.015, 0.2,
# 0.72, 0.76) of it, sizes in points of 200/72 px).
_PT = 100 * SCALE / 72
_W, _H = WIDTH_PX * SCALE, HEIGHT_PX * SCALE
_AX_LEFT, _AX_RIGHT = 0.015 * _W, (0.015 + 0.72) * _W
_AX_TOP, _AX_BOTTOM = (1 - 0.2 - 0.76) * _H, (1 - 0.2) * _H
_SS = 4                              # supersampling of the lines
_FONT_PX = 6.5 * _PT                 # tick labels: 6.5 pt
_PAD = 2 * _PT                       # between the axes and their labels
SPINE, GRID = "#d0d5dd", "#eef0f3"
# The pixels the lines may cover: the axes and the bottom spine's half width (left, top, right, bottom).
_CANVAS = (math.floor(_AX_LEFT), math.floor(_AX_TOP), math.ceil(_AX_RIGHT),
           math.ceil(_AX_BOTTOM + 0.4 * _PT) + 1)


def _font() -> Any:
    """DejaVu Sans (matplotlib's font, from its package data or the system), else Pillow's own."""
    global _FONT
    if _FONT is None:
        from PIL import ImageFont

        candidates = []
        spec = importlib.util.find_spec("matplotlib")
        if spec is not None and spec.submodule_search_locations:
            candidates.append(Path(list(spec.submodule_search_locations)[0]) / "mpl-data/fonts/ttf/DejaVuSans.ttf")
        candidates += [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
                       Path("/usr/share/fonts/dejavu/DejaVuSans.ttf")]
        for path in candidates:
            if path.is_file():
                _FONT = ImageFont.truetype(str(path), _FONT_PX)
                break
        else:
            _FONT = ImageFont.load_default(_FONT_PX)
    return _FONT


_FONT: Any = None


def _dashes(points: list[tuple[float, float]], on: float, off: float) -> list[list[tuple[float, float]]]:
    """The dashes of a polyline (on/off lengths), each a polyline; the pattern runs on across corners."""
    dashes: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] | None = [points[0]]
    drawing, left = True, on
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length = math.hypot(x1 - x0, y1 - y0)
        done = 0.0
        while length - done > left:
            done += left
            x, y = x0 + (x1 - x0) * done / length, y0 + (y1 - y0) * done / length
            if drawing:
                assert current is not None
                current.append((x, y))
                dashes.append(current)
                current = None
            else:
                current = [(x, y)]
            drawing = not drawing
            left = on if drawing else off
        left -= length - done
        if drawing:
            assert current is not None
            current.append((x1, y1))
    if drawing and current is not None and len(current) > 1:
        dashes.append(current)
    return dashes


def price_chart(series: Series, *, since: datetime, until: datetime, own: Series | None = None,
                money: Callable[[Decimal], str] = str, day: Callable[[datetime], str] = lambda d: d.strftime("%d %b"),
                own_label: str = "") -> bytes:
    """The PNG of one product's price over [since, until]; `own` (dashed grey) is the own shop's price."""
    from PIL import Image, ImageDraw

    # A history shorter than the window fills the chart rather than hugging its right edge.
    firsts = [s.points[0][0] for s in (series, own) if s is not None and not s.empty]
    if firsts and min(firsts) > since:
        since = min(firsts) - (until - min(firsts)) * 0.04
    prices = [p for s in (own, series) if s is not None for _, p in s.points]
    if prices:
        low, high = float(min(prices)), float(max(prices))
        pad = (high - low) * 0.15 or max(high * 0.05, 0.5)
        y_low, y_high = low - pad, high + pad
    else:
        y_low, y_high = 0.0, 1.0
    span = (until - since).total_seconds() or 1.0

    # The lines are drawn on a canvas of the axes' pixels only (plus the spine's), _SS times larger.
    ox, oy = _CANVAS[0], _CANVAS[1]

    def x_of(t: datetime) -> float:
        return (_AX_LEFT - ox + (t - since).total_seconds() / span * (_AX_RIGHT - _AX_LEFT)) * _SS

    def y_of(price: float) -> float:
        return (_AX_BOTTOM - oy - (price - y_low) / (y_high - y_low) * (_AX_BOTTOM - _AX_TOP)) * _SS

    def steps(s: Series) -> list[tuple[float, float]]:
        """The step line ("post": each price holds until the next point)."""
        out: list[tuple[float, float]] = []
        for i, (t, p) in enumerate(s.points):
            x, y = x_of(t), y_of(float(p))
            if i:
                out.append((x, out[-1][1]))
            out.append((x, y))
        return out

    width_px, height_px = _CANVAS[2] - ox, _CANVAS[3] - oy
    big = Image.new("RGB", (width_px * _SS, height_px * _SS), "white")
    draw = ImageDraw.Draw(big)
    left, top = (_AX_LEFT - ox) * _SS, (_AX_TOP - oy) * _SS
    right, bottom = (_AX_RIGHT - ox) * _SS, (_AX_BOTTOM - oy) * _SS
    ticks = sorted({min(prices), max(prices)}) if prices else []
    for tick in ticks:  # the grid under the lines
        y = y_of(float(tick))
        draw.line([(left, y), (right, y)], fill=GRID, width=round(0.6 * _PT * _SS))
    if own is not None and not own.empty:
        width = round(1.0 * _PT * _SS)
        for dash in _dashes(steps(own), 3 * _PT * _SS, 2 * _PT * _SS):
            draw.line(dash, fill=OWN_LINE, width=width, joint="curve")
    if not series.empty:
        width = 1.6 * _PT * _SS
        line = steps(series)
        draw.line(line, fill=LINE, width=round(width), joint="curve")
        for x, y in (line[0], line[-1]):  # round caps
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=LINE)
        x, y = line[-1]
        r = (3.2 + 1.0) * _PT * _SS / 2  # the last price's dot: 3.2 pt wide, a 1 pt edge
        draw.ellipse((x - r, y - r, x + r, y + r), fill=LINE)
    # The lines stay inside the axes (clipped, as matplotlib clips them): the canvas' edges beyond them white.
    w, h = width_px * _SS, height_px * _SS
    for box in ((0, 0, round(left), h), (round(right), 0, w, h), (0, 0, w, round(top)), (0, round(bottom), w, h)):
        if box[2] > box[0] and box[3] > box[1]:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill="white")
    draw.line([(left, bottom), (right, bottom)], fill=SPINE, width=round(0.8 * _PT * _SS))
    image = Image.new("RGB", (_W, _H), "white")
    image.paste(big.reduce(_SS), (ox, oy))
    draw = ImageDraw.Draw(image)
    font = _font()
    for tick in ticks:
        draw.text((_AX_RIGHT + _PAD, oy + y_of(float(tick)) / _SS), money(tick), fill=TEXT, font=font, anchor="lm")
    draw.text((_AX_LEFT, _AX_BOTTOM + _PAD), day(since), fill=TEXT, font=font, anchor="la")
    draw.text((_AX_RIGHT, _AX_BOTTOM + _PAD), day(until), fill=TEXT, font=font, anchor="ra")
    return _quantize(image)


def _palette() -> Any:
    """The charts' palette: white, and each colour drawn over white at the coverages antialiasing gives."""
    global _PALETTE
    if _PALETTE is None:
        from PIL import Image, ImageColor

        colours = [(255, 255, 255)]
        for colour, steps in ((LINE, 15), (OWN_LINE, 10), (TEXT, 15), (SPINE, 3), (GRID, 1)):
            rgb = ImageColor.getrgb(colour)
            colours += [tuple(round(255 + (c - 255) * k / steps) for c in rgb) for k in range(1, steps + 1)]
        _PALETTE = Image.new("P", (1, 1))
        _PALETTE.putpalette([v for colour in colours for v in colour])
    return _PALETTE


_PALETTE: Any = None


def _quantize(image: Any) -> bytes:
    """An antialiased chart as a PNG of its palette (_palette: a third of the size of the RGB one, same look).
    The palette is known beforehand: mapping to it costs ~1 ms, a median cut's ~15 ms."""
    from PIL import Image

    small = image.quantize(palette=_palette(), dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()


def window(now: datetime, days: int) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now
