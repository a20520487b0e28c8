"""`tracker demo`: two bundled shops (one needs Chromium), two days, a report of exactly the changes."""

from __future__ import annotations

import pytest

from tracker.demo import run_demo
from tracker.demo.shops import EXPECTED_CHANGES


@pytest.mark.slow
def test_demo_reports_exactly_the_days_changes(tmp_path):
    result = run_demo(tmp_path / "demo", echo=lambda *_: None)
    assert result.changes == EXPECTED_CHANGES
    html = result.report_html.read_text()
    for rival, product, _kind in EXPECTED_CHANGES:
        assert rival in html and product in html
    assert "Helm Pro MIPS" not in html and "Merino Running Socks" not in html  # unchanged products
    assert "€1,104.15" in html and "−15.0 %" in html and "-15%" in html
    assert result.report_eml is not None and result.report_eml.with_suffix(".html").is_file()
