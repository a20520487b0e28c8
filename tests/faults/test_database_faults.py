"""The database unreachable at start or going away mid-run: a clear one-line message (password masked),
retries with backoff, no traceback; a check that was interrupted is either written whole or not at all,
and a scheduler that cannot renew its lease steps down and comes back when the database does."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from tracker.db import Database
from tracker.models import Observation, Run

ROOT = Path(__file__).resolve().parents[2]
FAST_RETRIES = {"TRACKER_DB_CONNECT_RETRIES": "2", "TRACKER_DB_RETRY_DELAY_S": "0.3"}


def tracker(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "tracker.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **FAST_RETRIES,
                                                **(env or {})})


@pytest.mark.parametrize("command", ["check", "run", "report", "db"])
def test_postgres_unreachable_at_start_is_retried_then_one_clear_line(command, raw_server, tmp_path):
    """A port that accepts and hangs up at once: every connection attempt is counted by the server."""
    server = raw_server("reset")
    (tmp_path / "tracker.yaml").write_text(
        f"database: postgresql://postgres:${{PGPASS}}@127.0.0.1:{server.port}/tracker\n")
    args = {"check": ["check"], "run": ["run"], "report": ["report"], "db": ["db", "upgrade"]}[command]
    started = time.monotonic()
    proc = tracker([*args, "-c", "tracker.yaml"], tmp_path, env={"PGPASS": "s3cr3t-Pa55"})
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "s3cr3t-Pa55" not in proc.stderr + proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the database at postgresql+psycopg://postgres:***@127.0.0.1:"
                           f"{server.port}/tracker: ") and line.endswith("is it running?"), line
    assert server.accepted == 3  # the first try and 2 retries
    assert took >= 0.3 + 0.6  # with backoff between them


def test_sqlite_file_that_cannot_be_opened_is_one_clear_line(tmp_path):
    (tmp_path / "not-a-dir").write_text("a file where a folder should be")
    (tmp_path / "tracker.yaml").write_text(f"database: sqlite:///{tmp_path / 'not-a-dir' / 'sub' / 't.db'}\n")
    proc = tracker(["check", "-c", "tracker.yaml"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr


# -- mid-run -----------------------------------------------------------------------------------------------


class SlowShop:
    """One product page that waits until `release` is set: the check is in flight while we cut the DB."""

    def __init__(self, serve_app):  # type: ignore[no-untyped-def]
        self.hit = threading.Event()
        self.release = threading.Event()
        app = web.Application()
        app.router.add_get("/p/kettle", self.page)
        self.server = serve_app(app)

    async def page(self, request: web.Request) -> web.Response:
        import asyncio

        self.hit.set()
        while not self.release.is_set():
            await asyncio.sleep(0.02)
        return web.Response(content_type="text/html", text=(
            '<html><head><title>Kettle</title><script type="application/ld+json">{"@type": "Product", '
            '"name": "Kettle", "offers": {"price": "30.00", "priceCurrency": "EUR"}}</script></head>'
            '<body><h1>Kettle</h1><span class="price">30,00 €</span></body></html>'))


def proxied(pg_url: str, port: int) -> str:
    return pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{port}/")


@pytest.mark.postgres
@pytest.mark.parametrize("comes_back", [True, False], ids=["back-within-retries", "stays-down"])
def test_database_lost_mid_check(comes_back, pg_url, serve_app, make_proxy, tmp_path):
    shop = SlowShop(serve_app)
    proxy = make_proxy(("127.0.0.1", 5432))
    try:
        (tmp_path / "tracker.yaml").write_text(
            f"database: {proxied(pg_url, proxy.port)}\nhttp: {{per_domain_delay_s: 0, retries: 0}}\n"
            f"rivals:\n  - name: Shop\n    fetch: http\n    products:\n"
            f"      - {{name: Kettle, url: '{shop.server.url}/p/kettle'}}\n")
        proc = subprocess.Popen([sys.executable, "-m", "tracker.cli", "check", "-c", "tracker.yaml", "--json"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "TRACKER_DB_CONNECT_RETRIES": "3",
                                     "TRACKER_DB_RETRY_DELAY_S": "0.5"})
        assert shop.hit.wait(30), proc.communicate(timeout=5)
        proxy.cut()               # the database goes away while the page is being fetched
        shop.release.set()
        if comes_back:
            time.sleep(1.0)       # within the retries (0.5 + 1 + 2 s)
            proxy.restore()
        out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        db = Database.open(pg_url)
        with db.session() as s:
            obs = s.scalars(select(Observation)).all()
            run = s.scalars(select(Run)).one()
        db.close()
        if comes_back:
            assert proc.returncode == 0, err
            assert [(o.status, str(o.price), o.seen_count) for o in obs] == [("ok", "30.00", 1)]
            assert run.finished_at is not None
        else:
            assert proc.returncode == 1
            (line,) = err.strip().splitlines()
            assert line.startswith("error: ") and "database" in line and "***" not in line, line
            assert obs == []          # nothing half-written: the check is simply not recorded
            assert run.finished_at is None
    finally:
        proxy.close()


@pytest.mark.postgres
def test_scheduler_steps_down_while_the_database_is_gone_and_comes_back(pg_url, make_proxy, tmp_path):
    proxy = make_proxy(("127.0.0.1", 5432))
    script = ("import sys\nfrom tracker.config import load_config\nfrom tracker.scheduler import run_forever\n"
              "run_forever(load_config('tracker.yaml'), lease_ttl_s=2)\n")
    (tmp_path / "tracker.yaml").write_text(
        f"database: {proxied(pg_url, proxy.port)}\nschedules: {{prices: '0 7 * * *'}}\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **FAST_RETRIES})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    errs: list[str] = []
    threading.Thread(target=lambda: errs.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    try:
        assert wait_for(lambda: sum("active" in x for x in lines) == 1, 30), errs
        proxy.cut()
        assert wait_for(lambda: any("cannot renew the scheduler lease" in e for e in errs), 15), errs
        assert proc.poll() is None  # still alive, waiting for the database
        proxy.restore()
        assert wait_for(lambda: sum("tracker run: active" in x for x in lines) == 2, 20), (lines, errs[-5:])
        proc.terminate()
        assert proc.wait(15) == 0
        time.sleep(0.2)
        assert not any("Traceback" in e for e in errs), "".join(errs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False
