"""The `tracker` command: parse arguments, call the library (tracker.app), print. No logic lives here."""

from __future__ import annotations

import gc
import gzip
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from tracker.cli_common import DEFAULT_CONFIG, ConfigOpt, err, out
from tracker.errors import ConfigError, TrackerError
from tracker.loop import run as run_loop

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Rivalwatch: watch rivals' prices, promotions, stock and rankings.")
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _load(path: Path):  # type: ignore[no-untyped-def]
    from tracker.config import load_config

    return load_config(path)


def _open(config):  # type: ignore[no-untyped-def]
    from tracker.app import open_database

    return open_database(config)


@app.command()
def validate(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check the config file and say exactly what is wrong (file:line:col: field: problem)."""
    cfg = _load(config)
    products = sum(len(r.products) for r in cfg.rivals)
    listings = sum(len(r.listings) for r in cfg.rivals)
    print(f"{config}: OK — rivals: {len(cfg.rivals)}, products: {products}, listings: {listings}")


@app.command()
def check(config: ConfigOpt = DEFAULT_CONFIG,
          rival: Annotated[Optional[str], typer.Option(help="only this rival")] = None,
          processes: Annotated[Optional[int], typer.Option(
              min=1, help="processes to split the pass over, whole rivals each (default: one per core "
                          "for big passes, at least 250 targets each)")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False) -> None:
    """Run one pass now over all targets (or one rival's) and print a summary."""
    from tracker.config import broker_url

    cfg = _load(config)
    db = _open(cfg)
    with _progress(show=not as_json and sys.stderr.isatty()) as (on_start, on_advance):
        if broker_url(cfg):
            # With a broker configured the pass runs on the workers; the summary is the same.
            from tracker.app import send_alerts
            from tracker.queue import check_distributed

            summary = run_loop(check_distributed(cfg, db, rival=rival, on_start=on_start,
                                                 on_result=(lambda _r: on_advance(1)) if on_advance else None))
            if summary.changes:
                send_alerts(cfg, db)  # in one process check_in_processes does this itself
        else:
            from tracker.app import check_in_processes

            # What start-up made (modules, config) lives until exit: keep the garbage collector off it for
            # the pass (a full collection walked it all), and the forked shards share its memory pages.
            gc.freeze()
            summary = check_in_processes(cfg, db, processes=processes, rival=rival, on_start=on_start,
                                         on_advance=on_advance)
    if as_json:
        print(json.dumps(summary.as_json(), indent=2))
        return
    _print_summary(summary)


@contextmanager
def _progress(*, show: bool):  # type: ignore[no-untyped-def]
    """(on_start(total), on_advance(k)) of a progress bar on stderr, or (None, None) when none is shown."""
    if not show:
        yield None, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err.console, transient=True) as progress:
        task = progress.add_task("check", total=None)
        yield (lambda n: progress.update(task, total=n)), (lambda k: progress.advance(task, k))


def _print_summary(summary) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=f"Check pass (run {summary.run_id})")
    table.add_column("rival")
    for status in ("ok", "failed", "blocked", "unextractable"):
        table.add_column(status, justify="right")
    for rival, counts in sorted(summary.counts.items()):
        table.add_row(rival, *(str(counts.get(s, 0)) for s in ("ok", "failed", "blocked", "unextractable")))
    out.print(table)
    out.print(f"{summary.changes} changes found" + (f", {summary.duplicates} already recorded"
                                                     if summary.duplicates else ""))


@app.command()
def report(config: ConfigOpt = DEFAULT_CONFIG,
           send: Annotated[bool, typer.Option("--send", help="store in the outbox, mark reported, e-mail")] = False,
           out_file: Annotated[Optional[Path], typer.Option("--out", help="write the HTML here (+ .txt)")] = None,
           preview: Annotated[bool, typer.Option("--preview", help="write the HTML and open it")] = False) -> None:
    """Build the report of changes not yet reported; --send e-mails it, --out writes it."""
    from tracker.app import preview_report, queue_report, send_reports

    cfg = _load(config)
    db = _open(cfg)
    if send:
        queued = queue_report(cfg, db)
        rendered = queued.rendered if queued else None
    else:
        rendered = preview_report(cfg, db)
    if rendered is not None and (out_file or preview):
        target = out_file or Path("report-preview.html")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered.html, encoding="utf-8")
        target.with_suffix(".txt").write_text(rendered.text, encoding="utf-8")
        out.print(f"report written to {target}")
        if preview:
            import webbrowser

            webbrowser.open(target.resolve().as_uri())
    if send:
        if queued is None:
            out.print("no unreported changes: nothing to send")
        result = send_reports(cfg, db)
        out.print(f"outbox: {result.sent} sent, {result.written} written to folder, "
                  f"{result.pending} pending, {result.failed} failed")
        for problem in result.errors:
            err.print(f"[yellow]{problem}[/yellow]")
    elif not out_file and not preview and rendered is not None:
        print(rendered.text)


@app.command()
def outbox(config: ConfigOpt = DEFAULT_CONFIG,
           all_: Annotated[bool, typer.Option("--all", help="include sent messages")] = False,
           deliver: Annotated[bool, typer.Option("--deliver", help="try to send what is due now")] = False) -> None:
    """List pending and failed messages in the outbox."""
    from rich.table import Table

    from tracker.app import send_reports
    from tracker.mail import list_outbox

    cfg = _load(config)
    db = _open(cfg)
    if deliver:
        result = send_reports(cfg, db)
        out.print(f"{result.sent} sent, {result.written} written, {result.pending} pending, {result.failed} failed")
    with db.session() as session:
        rows = list_outbox(session, include_sent=all_)
    table = Table(title="Outbox")
    for col in ("id", "kind", "status", "attempts", "created", "next attempt", "subject", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id), r.kind, r.status, str(r.attempts), str(r.created_at)[:19],
                      str(r.next_attempt_at or "")[:19], r.subject, r.last_error or "")
    out.print(table)


@app.command()
def history(query: Annotated[str, typer.Argument(help="product name (part of it) or URL")],
            config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Print the price history of a product."""
    from rich.table import Table

    from tracker.history import price_history

    cfg = _load(config)
    db = _open(cfg)
    with db.session() as session:
        found = price_history(session, query)
    if not found:
        raise TrackerError(f"no tracked product matches {query!r}")
    for target, spans in found:
        table = Table(title=f"{target['name'] or target['url']} ({target['rival']})")
        for col in ("from", "to", "checks", "status", "price", "regular", "promotions", "availability"):
            table.add_column(col)
        for s in spans:
            table.add_row(s["first_seen"], s["last_seen"], str(s["checks"]), s["status"], s["price"],
                          s["regular_price"], s["promotions"], s["availability"] or s["reason"] or "")
        out.print(table)


@app.command()
def extract(source: Annotated[str, typer.Argument(help="a saved page (.html, .html.gz) or an http(s) URL")],
            url: Annotated[Optional[str], typer.Option(help="the page's URL, when SOURCE is a file")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False,
            browser: Annotated[bool, typer.Option(help="render with Chromium (live URLs)")] = False,
            price: Annotated[Optional[str], typer.Option(help="CSS selector for the price")] = None,
            regular_price: Annotated[Optional[str], typer.Option(help="CSS selector for the regular price")] = None,
            promotion: Annotated[Optional[str], typer.Option(help="CSS selector for promotion badges")] = None,
            availability: Annotated[Optional[str], typer.Option(help="CSS selector for stock text")] = None) -> None:
    """Run product extraction on one page and print what was found (to debug selectors)."""
    from scrapers.blocked import detect_block
    from scrapers.product import extract_product
    from scrapers.types import Selectors
    from tracker.fetching import fetch_one

    selectors = Selectors(price=price, regular_price=regular_price, promotion=promotion,
                          availability=availability)
    if source.startswith(("http://", "https://")):
        page = run_loop(fetch_one(source, browser=browser))
        html, page_url = page.text, page.final_url
    else:
        path = Path(source)
        if not path.is_file():
            raise TrackerError(f"{source}: no such file (give a saved page or an http(s) URL)")
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        from scrapers.fetch import decode_body

        html, page_url = decode_body(raw, None), url or path.resolve().as_uri()
    block = detect_block(html, url=page_url)
    if block is not None:
        err.print(f"[yellow]blocked page: {block.kind}: {block.reason}[/yellow]")
    product = extract_product(html, page_url, selectors if selectors.any() else None).to_json()
    keys = ("name", "price", "regular_price", "currency", "availability", "sku", "promotions")
    result = {k: product[k] for k in keys} | {k: v for k, v in product.items() if k not in keys and v}
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        for key, value in result.items():
            out.print(f"[bold]{key:>14}[/bold]  {value if value not in (None, []) else '–'}")


@app.command()
def run(config: ConfigOpt = DEFAULT_CONFIG,
        dispatch_only: Annotated[bool, typer.Option("--dispatch-only", help="send checks to workers")] = False
        ) -> None:
    """Start the scheduler in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    from tracker.scheduler import run_forever

    cfg = _load(config)
    run_forever(cfg, dispatch_only=dispatch_only)


@app.command()
def demo(out_dir: Annotated[Path, typer.Option("--out", help="where to put the demo's database and report")]
         = Path("demo-output")) -> None:
    """Serve bundled demo rival shops on 127.0.0.1, check them on two days, write the report."""
    from tracker.demo import run_demo

    result = run_demo(out_dir, echo=out.print)
    out.print(f"\n[bold green]Report:[/bold green] {result.report_html}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Apply database migrations (also done automatically at every start)."""
    cfg = _load(config)
    db = _open(cfg)
    out.print(f"database is at the latest schema ({db.dialect})")


def _register_extra_commands() -> None:
    """Command groups that live in their own modules (workers, catalogue, rankings)."""
    import importlib

    for name in ("tracker.cli_workers", "tracker.cli_catalog", "tracker.cli_report"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_extra_commands()


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        sys.exit(2)
    except TrackerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # The interpreter's last garbage collection at exit walks every object the imports made (SQLAlchemy,
        # pydantic, aiohttp...): ~0.2 s of every run. Nothing is left to collect that matters once the
        # command is over (files and connections are closed by their owners, and cycles are never
        # finalized at exit anyway), so move everything out of the collector's sight.
        gc.freeze()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
