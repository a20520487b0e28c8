"""`tracker check` split over processes: whole rivals per process, one Run, every target checked once,
the same observations as in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select

import tracker.app as app
from tracker.config import load_config
from tracker.models import Observation, Run, Target
from tracker.targets import TargetRef

CONFIG = """\
database: {database}
http: {{per_domain_delay_s: 0, retries: 0, respect_robots: false}}
rivals:
{rivals}
"""


def _config(shop, rivals: dict[str, list[str]], database: str) -> str:
    lines = []
    for name, slugs in rivals.items():
        lines.append(f"  - name: {name}\n    fetch: http\n    products:")
        lines += [f'      - {{url: "{shop.url}/p/{slug}"}}' for slug in slugs]
    return CONFIG.format(database=database, rivals="\n".join(lines))


def refs(spec: dict[str | None, int]) -> list[TargetRef]:
    out, i = [], 0
    for rival, n in spec.items():
        for _ in range(n):
            i += 1
            out.append(TargetRef(i, "product" if rival else "serp", rival, None, None))
    return out


_RECORD: dict = {}
_REAL_CHECK_SHARD = app._check_shard


def recording_pid(index: int) -> dict:
    """app._check_shard, noting which process ran it (module level: the pool pickles it by name)."""
    with open(_RECORD["path"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return _REAL_CHECK_SHARD(index)


def test_shards_hold_whole_rivals_balanced_by_size_with_browser_rivals_together():
    targets = refs({"a": 50, "b": 40, "c": 30, "d": 20, None: 10, "js1": 5, "js2": 5})
    shards = app.shard_targets(targets, 3, pinned={"js1", "js2"})
    assert sorted(t.id for s in shards for t in s) == [t.id for t in targets]  # each once
    owners = {}
    for i, shard in enumerate(shards):
        for t in shard:
            assert owners.setdefault(t.rival, i) == i  # a rival never spans two shards
    assert owners["js1"] == owners["js2"] == 0
    assert sorted(len(s) for s in shards) == [50, 50, 60]


def test_small_passes_stay_in_one_process():
    assert app.auto_processes(refs({"a": 100, "b": 100})) == 1
    assert app.auto_processes(refs({"a": 2000})) == 1  # one rival: its politeness is one process's


def test_a_pass_over_two_processes_checks_every_target_once_in_one_run(db_url, shop, write_config, tmp_path,
                                                                     monkeypatch):
    slugs = {"a": [f"a{i}" for i in range(6)], "b": [f"b{i}" for i in range(4)], "c": [f"c{i}" for i in range(3)]}
    shop.products = {s: {"name": s, "price": f"{10 + n}.50"} for n, s in enumerate(sum(slugs.values(), []))}
    config = load_config(write_config(_config(shop, {f"Rival {k.upper()}": v for k, v in slugs.items()}, db_url)))
    db = app.open_database(config)
    pids = tmp_path / "pids"
    monkeypatch.setitem(_RECORD, "path", pids)
    monkeypatch.setattr(app, "_check_shard", recording_pid)
    slot = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    summary = app.check_in_processes(config, db, processes=2, slot=slot)
    assert summary.as_json()["rivals"] == {"Rival A": {"ok": 6}, "Rival B": {"ok": 4}, "Rival C": {"ok": 3}}
    assert len(set(pids.read_text().split())) == 2 and str(os.getpid()) not in pids.read_text().split()
    assert sorted(shop.hits) == sorted(shop.products)  # each page fetched exactly once
    with db.session() as s:
        (run,) = s.scalars(select(Run)).all()
        assert run.finished_at is not None and run.counts["rivals"]["Rival A"] == {"ok": 6}
        prices = dict(s.execute(select(Target.url, Observation.price).join(Observation)).all())
    assert prices == {f"{shop.url}/p/{k}": Decimal(v["price"]) for k, v in shop.products.items()}

    again = app.check_in_processes(config, db, processes=2, slot=slot)  # the same slot: all duplicates
    assert again.duplicates == 13 and again.as_json()["rivals"] == {}
    with db.session() as s:
        assert s.scalar(select(func.sum(Observation.seen_count))) == 13
    db.close()


def test_tracker_check_processes_option(shop, write_config, tmp_path):
    shop.products = {s: {"name": s, "price": "9.99"} for s in ("x1", "x2", "y1")}
    path = write_config(_config(shop, {"X": ["x1", "x2"], "Y": ["y1"]}, "sqlite:///t.db"))
    out = subprocess.run([sys.executable, "-m", "tracker.cli", "check", "-c", str(path), "--processes", "2",
                          "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rivals"] == {"X": {"ok": 2}, "Y": {"ok": 1}}


def test_two_ad_hoc_checks_within_one_second_are_two_passes(shop, write_config, tmp_path):
    """Ad-hoc slots are 'now' to the microsecond: a quick second `tracker check` is a pass of its own,
    not a duplicate of the first."""
    shop.products = {"x1": {"name": "x1", "price": "9.99"}}
    config = load_config(write_config(_config(shop, {"X": ["x1"]}, f"sqlite:///{tmp_path / 't.db'}")))
    db = app.open_database(config)
    first = app.check_in_processes(config, db)
    second = app.check_in_processes(config, db)
    assert (first.duplicates, second.duplicates) == (0, 0)
    assert second.as_json()["rivals"] == {"X": {"ok": 1}}
    with db.session() as s:
        assert s.scalar(select(func.sum(Observation.seen_count))) == 2
    db.close()
