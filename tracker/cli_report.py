"""`tracker export`: price and rank history as CSV or XLSX for a date range (the CLI stays thin)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer

from tracker.cli_common import DEFAULT_CONFIG, ConfigOpt, out


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    config: ConfigOpt = DEFAULT_CONFIG,
    start: Annotated[Optional[str], typer.Option("--from", help="first day, YYYY-MM-DD (default: 29 days "
                                                                  "before --to)")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="last day, YYYY-MM-DD (default: today)")] = None,
    what: Annotated[str, typer.Option(help="prices | ranks | all")] = "all",
    fmt: Annotated[str, typer.Option("--format", help="csv | xlsx")] = "csv",
    out_file: Annotated[Optional[Path], typer.Option("--out", help="file to write (CSV with 'all': "
                                                                      "<name>-prices.csv and <name>-rankings.csv)")] = None,
) -> None:
    """Write price and rank history (one row per span of identical checks) as CSV or XLSX."""
    from tracker.errors import TrackerError
    from tracker.export import date_range, export as write

    if what not in ("prices", "ranks", "all"):
        raise TrackerError(f"--what must be prices, ranks or all, not {what!r}")
    if fmt not in ("csv", "xlsx"):
        raise TrackerError(f"--format must be csv or xlsx, not {fmt!r}")
    try:
        first = date.fromisoformat(start) if start else None
        last = date.fromisoformat(end) if end else None
    except ValueError as exc:
        raise TrackerError(f"dates are YYYY-MM-DD: {exc}") from None
    from tracker.app import open_database
    from tracker.config import load_config

    cfg = load_config(config)
    db = open_database(cfg)
    try:
        since, until = date_range(first, last, cfg.tz)
    except ValueError as exc:
        raise TrackerError(str(exc)) from None
    target = out_file or Path(f"rivalwatch-history.{fmt}")
    with db.session() as session:
        written = write(session, target, start=since, end=until, what=what, fmt=fmt,  # type: ignore[arg-type]
                        tz=cfg.tz)
    for path in written:
        out.print(f"written {path}")
