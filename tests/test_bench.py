"""The benchmarks in bench/ still run: each on a tiny workload, with its correctness checks and verdict lines.

Only that they work is tested here (their figures on a tiny workload mean nothing); the figures come from
running them in full (`make bench`, bench/RESULTS.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def bench(script: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_throughput_runs_every_contender_and_checks_every_price() -> None:
    out = bench("throughput.py", "--n", "40", "--js-n", "4", "--hosts", "2", "--browser-pages", "2", "--repeat", "1",
                "--browser-repeat", "1")
    for run in ("bare aiohttp+lexbor (32 conns)", "tracker check fetch:http, pass 1 (fresh DB)",
                "tracker check fetch:http, pass 2 (unchanged)", "tracker check fetch:auto static (fresh DB)",
                "urlwatch 2.29 css filter, pass 1 (fresh)"):
        assert re.search(rf"^  {re.escape(run)}: [\d.]+ s, \d+ pages/s$", out, re.M), run
    # every tracker run stored every price right, and the JS pages came through the browser
    assert out.count("prices right 40/40") >= 5
    assert "statuses {'ok': 4}" in out and "prices right 4/4" in out
    assert "fetch:auto on static pages launched a browser: no" in out
    for ratio in ("tracker http pass 1 / urlwatch pass 1", "tracker http pass 1 / bare aiohttp loop",
                  "tracker browser / bare Playwright loop"):
        assert re.search(rf"^  {re.escape(ratio)} +[\d.]+", out, re.M), ratio


def test_http_breakdown_accounts_for_the_whole_pass() -> None:
    out = bench("http_breakdown.py", "--n", "40", "--hosts", "2", "--rounds", "1")
    parts = {label: float(ms) for label, ms in re.findall(r"^(\S[^\n]*?) +(-?[\d.]+) +-?[\d.]+ %$", out, re.M)}
    assert len(parts) == 4, out
    total = float(re.search(r"^tracker, whole process +([\d.]+)$", out, re.M).group(1))
    assert total == pytest.approx(sum(parts.values()), abs=0.02)
    assert re.search(r"^  without observing +[\d.]+ % of the bare loop's pages/s", out, re.M)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_data_scale_times_diff_and_report_and_sizes_the_database(backend: str,
                                                                  request: pytest.FixtureRequest) -> None:
    args = ["--pg", request.getfixturevalue("pg_url")] if backend == "postgres" else []
    out = bench("data_scale.py", "--scale", "0.002", "--days", "5", *args)
    assert f"; database {'PostgreSQL' if backend == 'postgres' else 'SQLite'}" in out, out
    assert re.search(r"^1\. diff pass, 100 targets .*: [\d.]+ s", out, re.M), out
    assert re.search(r"^diff \+ report: [\d.]+ s \(target < 5 s: OK\)$", out, re.M), out
    assert re.search(r"^database: \d+ MB, [\d,]+ observation rows \(target < 2 GB: OK\)$", out, re.M), out


def test_extraction_bench_scores_the_datasets() -> None:
    out = bench("extraction.py", "--repeat", "1")
    assert re.search(r"^Throughput: [\d.]+ pages/s", out, re.M), out
    assert re.search(r"^Small page \(9 KB, price in JSON-LD\): [\d.]+ ms/page$", out, re.M), out


def test_matching_bench_scores_the_labelled_pairs() -> None:
    out = bench("matching.py", "--quiet")
    assert re.search(r"^pairs=82 \(match=\d+, non-match=\d+\)", out, re.M), out
    assert re.search(r"^precision=[\d.]+ recall=[\d.]+ F1=[\d.]+$", out, re.M), out
