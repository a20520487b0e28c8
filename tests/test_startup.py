"""What a `tracker check` loads: only what the pass needs. Every `tracker` run is a new process, and on a
2-core machine importing a big library costs tens of milliseconds of each run (bench/http_breakdown.py)."""

import json
import subprocess
import sys

# Loaded only where used: the PostgreSQL dialect (fillfactor is set by a DDL event, not a dialect argument
# of the models), tenacity (on a fetch's first retry), alembic (when a database is behind), rich (the
# progress bar on a terminal, the summary table), APScheduler (schedules), the report's Jinja2 and charts.
NOT_FOR_A_PLAIN_CHECK = ("sqlalchemy.dialects.postgresql", "tenacity", "alembic", "rich", "apscheduler",
                         "jinja2", "matplotlib", "PIL", "playwright", "dramatiq", "redis")

_RUN = """
import json, sys
sys.argv = ["tracker", "check", "-c", sys.argv[1], "--json"]
from tracker.cli import main
try:
    main()
finally:
    print(json.dumps(sorted({m.split(".")[0] if not m.startswith("sqlalchemy.dialects.") else ".".join(m.split(".")[:3])
                             for m in sys.modules})), file=sys.stderr)
"""


def test_a_check_over_sqlite_loads_none_of_what_it_does_not_use(shop, write_config, tmp_path):
    shop.products["kettle"] = {"name": "Steel Kettle", "price": "39.90"}
    cfg = write_config(f"""
database: sqlite:///{tmp_path / 'lean.db'}
http: {{per_domain_delay_s: 0}}
rivals:
  - name: shop
    products:
      - url: {shop.url}/p/kettle
""")
    out = subprocess.run([sys.executable, "-c", _RUN, str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rivals"] == {"shop": {"ok": 1}}
    loaded = set(json.loads(out.stderr.strip().splitlines()[-1]))
    assert "sqlalchemy.dialects.sqlite" in loaded and "aiohttp" in loaded  # (the listing is of this run)
    assert loaded.isdisjoint(NOT_FOR_A_PLAIN_CHECK), sorted(loaded & set(NOT_FOR_A_PLAIN_CHECK))
