"""`tracker serp`, `tracker discover`, `tracker match`: parse arguments, call the library, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tracker.cli_common import DEFAULT_CONFIG, ConfigOpt, err, out
from tracker.errors import TrackerError
from tracker.loop import run as run_loop


def _config(path: Path | None, *, required: bool = True):  # type: ignore[no-untyped-def]
    from tracker.config import Config, load_config

    if path is None or (not required and not path.exists()):
        return Config()
    return load_config(path)


def serp(source: Annotated[str, typer.Argument(help="a saved result page (or SerpApi .json), or a search term")],
         engine: Annotated[str, typer.Option(help="google | bing | duckduckgo | serpapi | a name under engines:")]
         = "google",
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
         locale: Annotated[str, typer.Option(help="live query: locale, e.g. en-US")] = "en-US",
         device: Annotated[str, typer.Option(help="live query: desktop | mobile")] = "desktop",
         depth: Annotated[int, typer.Option(min=10, max=100, help="live query: results to read")] = 10,
         fetch: Annotated[Optional[str], typer.Option(help="live query: http | browser")] = None,
         url: Annotated[Optional[str], typer.Option(help="saved page: the URL it was fetched from")] = None,
         config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Parse a saved search-result page, or run one live query, and print the ranked organic results."""
    from rich.table import Table

    from scrapers.errors import FetchError
    from scrapers.serp import SerpBlocked, domain_of
    from tracker.kinds.serp import Unextractable, parse_saved, search_now

    cfg = _config(config, required=config != DEFAULT_CONFIG)
    domains = {r.name: r.domain for r in cfg.rivals if r.domain}
    if cfg.own_domain:
        domains = {"own site": cfg.own_domain, **domains}
    domains = {label: domain_of(d) for label, d in domains.items()}
    path = Path(source)
    try:
        if path.is_file():
            raw = path.read_bytes()
            if path.suffix == ".gz":
                import gzip

                raw = gzip.decompress(raw)
            result = parse_saved(raw, engine, base_url=url, config=cfg, domains=list(domains.values()))
        else:
            result = run_loop(search_now(cfg, source, engine_name=engine, locale=locale, device=device,
                                         depth=depth, fetch=fetch, domains=list(domains.values())))
    except SerpBlocked as exc:
        err.print(f"[yellow]blocked: {exc}[/yellow] (not a ranking: nothing is 'not found')")
        raise typer.Exit(2)
    except (FetchError, Unextractable, ValueError, KeyError) as exc:
        raise TrackerError(f"search failed: {getattr(exc, 'reason', None) or exc}") from None
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{engine}: {len(result['results'])} organic results")
    for col in ("#", "title", "url"):
        table.add_column(col)
    for r in result["results"]:
        table.add_row(str(r["position"]), r["title"], r["url"])
    out.print(table)
    out.print("features: " + (", ".join(result["features"]) or "none"))
    by_domain = {d: label for label, d in domains.items()}
    for dom, pos in (result.get("positions") or {}).items():
        where = f"#{pos['position']} {pos['url']}" if pos else f"not in the first {len(result['results'])}"
        out.print(f"{by_domain.get(dom, dom)} ({dom}): {where}")


def discover(rival: Annotated[str, typer.Argument(help="the rival's name in the config")],
             include: Annotated[Optional[list[str]], typer.Option("--include", help="glob or re:regex; repeatable")]
             = None,
             exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="glob or re:regex; repeatable")]
             = None,
             max_new: Annotated[Optional[int], typer.Option("--max", min=1, help="propose at most this many "
                                                             "(default: the rival's discovery.max_new)")] = None,
             track: Annotated[bool, typer.Option("--track", help="add them as product targets")] = False,
             as_json: Annotated[bool, typer.Option("--json")] = False,
             config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Find a rival's product pages (sitemaps, listings) that are not tracked yet; --track adds them."""
    from tracker.app import open_database
    from tracker.catalog import discover_products

    from tracker.catalog import rival_config

    cfg = _config(config)
    defaults = rival_config(cfg, rival).discovery  # the config's patterns unless given here
    db = open_database(cfg)
    report = run_loop(discover_products(cfg, db, rival, include=include or defaults.include,
                                        exclude=exclude or defaults.exclude,
                                        max_new=max_new or defaults.max_new, track=track))
    if as_json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
        return
    for url in report.proposed:
        print(url)
    err.print(f"{len(report.proposed)} new product URL(s) for {report.rival} "
              f"({report.from_sitemaps} from {report.sitemaps_read} sitemap(s), {report.from_listings} from listings, "
              f"{report.already_tracked} already tracked)" + (f"; {len(report.tracked)} now tracked" if track else ""))
    for problem in report.problems:
        err.print(f"[yellow]{problem}[/yellow]")
    if report.dropped:
        err.print(f"{len(report.dropped)} URL(s) dropped (off-domain, unreadable...)")


def match(review_: Annotated[bool, typer.Option("--review", help="confirm or reject the uncertain ones")] = False,
          as_json: Annotated[bool, typer.Option("--json")] = False,
          config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Propose which rival products are which of your own products (own: true), with confidence."""
    from rich.table import Table

    from tracker.app import open_database
    from tracker.catalog import Proposal, propose_matches, review

    cfg = _config(config)
    db = open_database(cfg)

    def ask(p: Proposal) -> bool:
        out.print(f"\n[bold]{p.rival}[/bold]: {p.title}\n  {p.url or ''}\n[bold]own[/bold]: {p.own_title}\n"
                  f"  {p.own_url or ''}\n  confidence {p.confidence:.2f} ({p.method}): {p.reason}")
        return typer.confirm("Same product?", default=False)

    if review_:
        proposals, yes, no = review(db, ask)
        out.print(f"\n{yes} confirmed, {no} rejected; decisions are stored and never guessed again")
        return
    with db.session() as session:
        proposals = propose_matches(session)
    if as_json:
        print(json.dumps([p.as_json() for p in proposals], indent=2, ensure_ascii=False))
        return
    table = Table(title="Proposed matches")
    for col in ("rival", "rival product", "own product", "confidence", "method", "status"):
        table.add_column(col)
    for p in proposals:
        table.add_row(p.rival, p.title, p.own_title, f"{p.confidence:.2f}", p.method, p.status)
    out.print(table)
    uncertain = sum(1 for p in proposals if p.status == "uncertain")
    if uncertain:
        out.print(f"{uncertain} uncertain: run `tracker match --review` to confirm or reject them")


def register(app: typer.Typer) -> None:
    app.command("serp")(serp)
    app.command("discover")(discover)
    app.command("match")(match)
