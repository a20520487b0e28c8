from __future__ import annotations

import pytest

from scrapers.visibility import CTR_CURVE, ctr, share_of_voice, visibility


def test_ctr_curve_is_the_published_one_and_monotone():
    assert ctr(1) == pytest.approx(0.317) and ctr(2) == pytest.approx(0.2471) and ctr(5) == pytest.approx(0.0951)
    assert all(a >= b for a, b in zip(CTR_CURVE, CTR_CURVE[1:]))
    assert 0 < ctr(15) < ctr(10)
    assert ctr(None) == 0 and ctr(0) == 0 and ctr(101) == 0


def test_visibility_is_one_when_first_everywhere_and_zero_when_absent():
    v = visibility({"kw1": {"own.com": 1, "rival.com": None}, "kw2": {"own.com": 1, "rival.com": 25}})
    assert v == {"own.com": 1.0, "rival.com": 0.0}


def test_visibility_weights_by_search_volume():
    positions = {"big": {"own.com": 1, "rival.com": 3}, "small": {"own.com": None, "rival.com": 1}}
    flat = visibility(positions)
    weighted = visibility(positions, search_volume={"big": 9000, "small": 1000})
    assert weighted["own.com"] == pytest.approx(0.9)
    assert weighted["own.com"] > flat["own.com"]
    assert all(0.0 <= x <= 1.0 for x in weighted.values())


def test_single_keyword_mapping_and_share_of_voice_sums_to_one():
    sov = share_of_voice({"own.com": 1, "rival.com": 2, "other.com": None})
    assert sum(sov.values()) == pytest.approx(1.0)
    assert sov["own.com"] > sov["rival.com"] > sov["other.com"] == 0.0
    assert share_of_voice({"a.com": None}) == {"a.com": 0.0}
