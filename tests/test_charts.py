"""Price charts (tracker.charts): drawn by Pillow with the layout the charts had when matplotlib drew them.

The reference is the matplotlib drawing the report used before (kept here, not in the package): the same
chart from both must differ in very few pixels (text antialiasing, the edges of lines)."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from PIL import Image, ImageChops

from tracker.charts import HEIGHT_PX, LINE, OWN_LINE, SCALE, TEXT, WIDTH_PX, Series, _dashes, price_chart, window

NOW = datetime(2026, 3, 31, 19, 0, 40, tzinfo=UTC)
SINCE, UNTIL = window(NOW, 30)


def series(*points: tuple[float, str]) -> Series:
    return Series(tuple((SINCE + timedelta(days=d), Decimal(p)) for d, p in points))


def money(amount: Decimal) -> str:
    return f"€{amount}"


def day(d: datetime) -> str:
    return f"{d.day} {d.strftime('%b')}"


PRODUCT = series((0, "129.90"), (6.25, "119.90"), (14.5, "134.50"), (29.75, "99.99"), (30, "99.99"))
OWN = series((0, "124.00"), (10, "118.00"), (30, "118.00"))
SHORT = series((21, "19.99"), (29.9, "21.49"), (30, "21.49"))   # a history shorter than the window
FLAT = series((0, "5.00"), (30, "5.00"))                         # one price: a single tick


def matplotlib_chart(series: Series, *, since: datetime, until: datetime, own: Series | None = None) -> bytes:
    """The chart as tracker.charts drew it with matplotlib (before it was drawn with Pillow), unquantized."""
    from matplotlib.figure import Figure

    firsts = [s.points[0][0] for s in (series, own) if s is not None and not s.empty]
    if firsts and min(firsts) > since:
        since = min(firsts) - (until - min(firsts)) * 0.04
    fig = Figure(figsize=(WIDTH_PX / 100, HEIGHT_PX / 100), dpi=100 * SCALE, facecolor="white")
    ax = fig.add_axes((0.015, 0.2, 0.72, 0.76))
    prices: list[Decimal] = []
    for s, color, style, width in ((own, OWN_LINE, (0, (3, 2)), 1.0), (series, LINE, "-", 1.6)):
        if s is None or s.empty:
            continue
        ax.step([t for t, _ in s.points], [float(p) for _, p in s.points], where="post", color=color,
                linestyle=style, linewidth=width, solid_capstyle="round")
        prices += [p for _, p in s.points]
    t_last, p_last = series.points[-1]
    ax.plot([t_last], [float(p_last)], marker="o", markersize=3.2, color=LINE)
    ax.set_xlim(since, until)
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
    return buf.getvalue()


def grey(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("L")


@pytest.mark.parametrize("name, product, own", [("moves", PRODUCT, None), ("with own price", PRODUCT, OWN),
                                                ("short history", SHORT, None), ("flat", FLAT, OWN)])
def test_chart_is_the_matplotlib_chart(name, product, own):
    pytest.importorskip("matplotlib")
    png = price_chart(product, since=SINCE, until=UNTIL, own=own, money=money, day=day)
    assert png.startswith(b"\x89PNG") and 500 < len(png) < 12_000
    image = Image.open(io.BytesIO(png))
    assert image.size == (WIDTH_PX * SCALE, HEIGHT_PX * SCALE) and image.mode == "P"
    reference = grey(matplotlib_chart(product, since=SINCE, until=UNTIL, own=own))
    histogram = ImageChops.difference(grey(png), reference).histogram()
    differing = sum(histogram[64:]) / sum(histogram)
    assert differing < 0.02, f"{name}: {differing:.1%} of the pixels differ from matplotlib's chart"


def test_chart_lines_where_the_prices_are():
    """The product's line (blue) at its prices' heights, the own price (grey) dashed."""
    png = price_chart(PRODUCT, since=SINCE, until=UNTIL, own=OWN, money=money, day=day)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    blue = tuple(int(LINE[i:i + 2], 16) for i in (1, 3, 5))
    # The first price (129.90) runs along the left of the chart at one height, the last (99.99) ends lower.
    column = [y for y in range(image.height) if image.getpixel((40, y)) == blue]
    assert column, "no blue line at the chart's left"
    end = [y for y in range(image.height) if image.getpixel((466, y)) == blue]
    assert end and min(end) < min(column) and max(end) > max(column)
    grey_line = tuple(int(OWN_LINE[i:i + 2], 16) for i in (1, 3, 5))
    row = max(range(image.height), key=lambda y: sum(image.getpixel((x, y)) == grey_line for x in range(10, 460)))
    on = [image.getpixel((x, row)) == grey_line for x in range(200, 460)]
    assert 0.3 < sum(on) / len(on) < 0.8  # dashed: 3 on, 2 off


def test_dashes_follow_the_path_across_corners():
    path = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)]
    dashes = _dashes(path, 3, 2)
    drawn = sum(math.dist(a, b) for dash in dashes for a, b in zip(dash, dash[1:]))
    assert drawn == pytest.approx(12)  # 20 long: 3 on 2 off, 4 times
    assert dashes[1] == [(5.0, 0.0), (8.0, 0.0)]
    assert dashes[2] == [(10.0, 0.0), (10.0, 3.0)]
    assert dashes[-1] == [(10.0, 5.0), (10.0, 8.0)]
