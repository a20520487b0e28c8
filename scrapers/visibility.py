"""Visibility score / share of voice from ranking positions, weighted by a click-through-rate curve.

CTR by organic position on Google (desktop + mobile, page 1), from:
    Brian Dean, Backlinko (with ClickFlow), "We Analyzed 5 Million Google Search Results. Here's What We
    Learned About Organic Click Through Rate", 2019 (updated since), https://backlinko.com/google-ctr-stats
    874,929 pages / 5,079,491 queries from Google Search Console data. Reported CTRs: #1 31.7%, #2 24.71%,
    #3 18.66%, #4 13.60%, #5 9.51%, #6 6.23%, #7 4.15%, #8 3.12%, #9 2.83%, #10 3.09%; "only 0.78% of
    Google searchers clicked on something from the second page".
Position 10 is reported slightly above 9 in the study; the curve used here keeps it monotone (a better rank
never scores less), and page two shares the study's 0.78% evenly. Scores are floats: this is not money.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CTR_CURVE", "ctr", "visibility", "share_of_voice"]

CTR_CURVE: tuple[float, ...] = (0.317, 0.2471, 0.1866, 0.1360, 0.0951, 0.0623, 0.0415, 0.0312, 0.0283, 0.0283)
PAGE_TWO_CTR = 0.0078 / 10  # positions 11-20


def ctr(position: int | None) -> float:
    """Expected click-through rate of an organic result at `position` (1-based); 0 when not ranked."""
    if position is None or isinstance(position, bool) or position < 1:
        return 0.0
    if position <= len(CTR_CURVE):
        return CTR_CURVE[position - 1]
    if position <= 20:
        return PAGE_TWO_CTR
    return 0.0


def _by_keyword(positions: Mapping) -> dict[str, Mapping[str, int | None]]:
    """Accept {keyword: {domain: position}} or, for one keyword, {domain: position}."""
    if positions and all(isinstance(v, Mapping) for v in positions.values()):
        return {str(k): v for k, v in positions.items()}
    return {"": positions}


def visibility(
    positions: Mapping[str, int | None] | Mapping[str, Mapping[str, int | None]],
    *,
    search_volume: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Visibility of each domain in 0..1 over the tracked keywords.

    `positions` is {keyword: {domain: best position or None}} (or {domain: position} for a single
    keyword). A domain's score is the clicks it is expected to get, sum over keywords of
    weight * ctr(position), divided by the clicks it would get ranking #1 for every keyword
    (sum of weight * ctr(1)). Weights are the keywords' search volumes when given, else 1 each;
    a keyword missing from `search_volume` weighs 0.
    """
    table = _by_keyword(positions)
    domains: list[str] = []
    for row in table.values():
        for d in row:
            if d not in domains:
                domains.append(d)
    if not table:
        return {}
    weights = {k: (float(search_volume.get(k, 0.0)) if search_volume is not None else 1.0) for k in table}
    total = sum(max(w, 0.0) for w in weights.values()) * ctr(1)
    out: dict[str, float] = {}
    for d in domains:
        got = sum(max(weights[k], 0.0) * ctr(row.get(d)) for k, row in table.items())
        out[d] = min(1.0, got / total) if total > 0 else 0.0
    return out


def share_of_voice(
    positions: Mapping[str, int | None] | Mapping[str, Mapping[str, int | None]],
    *,
    search_volume: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Each domain's share of the expected clicks that go to the tracked domains (sums to 1 unless
    none of them ranks, then all 0)."""
    vis = visibility(positions, search_volume=search_volume)
    total = sum(vis.values())
    return {d: (v / total if total > 0 else 0.0) for d, v in vis.items()}
